package ike

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Bounds on the substructures of one SA payload. The wire format allows
// 255 transforms per proposal; the other limits are far above anything a
// real implementation sends and keep a hostile payload from making the
// decoder allocate much more than its own size.
const (
	MaxProposals  = 64
	MaxTransforms = 255 // per proposal; Num Transforms is one byte
	MaxAttributes = 16  // per transform
)

// Last Substruc values (RFC 7296 §3.3.1, §3.3.2).
const (
	LastSubstruc      uint8 = 0
	MoreProposals     uint8 = 2
	MoreTransforms    uint8 = 3
	proposalHeaderLen       = 8
	transformHeadLen        = 8
	attributeHeadLen        = 4
)

// SA is the body of a Security Association payload (RFC 7296 §3.3): an
// offer of one or more proposals, or in a response the one chosen.
type SA struct {
	Proposals []Proposal
}

// Proposal is one Proposal substructure.
type Proposal struct {
	// LastSubstruc is the sender's marker: 0 for the last proposal, 2 when
	// more follow. It is kept as received (lengths, not markers, drive the
	// decoding); SetMarkers computes it.
	LastSubstruc uint8
	Reserved     uint8
	Number       uint8 // Proposal Num
	Protocol     ProtocolID
	SPI          []byte // SPI Size is len(SPI)
	Transforms   []Transform
}

// Transform is one Transform substructure.
type Transform struct {
	LastSubstruc uint8 // 0 for the last transform, 3 when more follow
	Reserved1    uint8
	Type         TransformType
	Reserved2    uint8
	ID           uint16 // Transform ID; its meaning depends on Type
	Attributes   []Attribute
}

// Attribute is a Data Attribute of a transform (RFC 7296 §3.3.5).
type Attribute struct {
	Type AttributeType // 15 bits
	// TV is the Attribute Format bit: the value is the 2-byte field itself
	// (Type/Value) rather than Length and Value (TLV).
	TV    bool
	Value []byte // 2 bytes for TV
}

func decodeSA(body []byte) (*SA, error) {
	sa := &SA{}
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: SA with no proposals", ErrMalformed)
	}
	sa.Proposals = make([]Proposal, 0, countSubstructs(body, proposalHeaderLen, MaxProposals))
	for off := 0; off < len(body); {
		n := len(sa.Proposals) + 1
		if n > MaxProposals {
			return nil, fmt.Errorf("%w: SA with more than %d proposals", ErrTooMany, MaxProposals)
		}
		rest := body[off:]
		if len(rest) < proposalHeaderLen {
			return nil, fmt.Errorf("proposal %d: %w: %d bytes left for an 8-byte header", n, ErrShort, len(rest))
		}
		plen := int(binary.BigEndian.Uint16(rest[2:4]))
		spiSize := int(rest[6])
		if plen < proposalHeaderLen+spiSize || plen > len(rest) {
			return nil, fmt.Errorf("proposal %d: %w: Proposal Length %d with SPI Size %d, %d bytes left",
				n, ErrLength, plen, spiSize, len(rest))
		}
		p := Proposal{
			LastSubstruc: rest[0],
			Reserved:     rest[1],
			Number:       rest[4],
			Protocol:     ProtocolID(rest[5]),
			SPI:          rest[proposalHeaderLen : proposalHeaderLen+spiSize],
		}
		count := int(rest[7])
		var err error
		p.Transforms, err = decodeTransforms(rest[proposalHeaderLen+spiSize:plen], count)
		if err != nil {
			return nil, fmt.Errorf("proposal %d: %w", n, err)
		}
		sa.Proposals = append(sa.Proposals, p)
		off += plen
	}
	return sa, nil
}

func decodeTransforms(b []byte, count int) ([]Transform, error) {
	if count == 0 {
		if len(b) != 0 {
			return nil, fmt.Errorf("%w: Num Transforms 0 but %d bytes of transforms", ErrLength, len(b))
		}
		return nil, nil
	}
	// count is at most 255 and each transform takes at least 8 bytes.
	if count*transformHeadLen > len(b) {
		return nil, fmt.Errorf("%w: Num Transforms %d does not fit %d bytes", ErrLength, count, len(b))
	}
	ts := make([]Transform, 0, count)
	off := 0
	for i := 1; i <= count; i++ {
		rest := b[off:]
		if len(rest) < transformHeadLen {
			return nil, fmt.Errorf("transform %d of %d: %w: %d bytes left for an 8-byte header", i, count, ErrShort, len(rest))
		}
		tlen := int(binary.BigEndian.Uint16(rest[2:4]))
		if tlen < transformHeadLen || tlen > len(rest) {
			return nil, fmt.Errorf("transform %d of %d: %w: Transform Length %d, %d bytes left", i, count, ErrLength, tlen, len(rest))
		}
		t := Transform{
			LastSubstruc: rest[0],
			Reserved1:    rest[1],
			Type:         TransformType(rest[4]),
			Reserved2:    rest[5],
			ID:           binary.BigEndian.Uint16(rest[6:8]),
		}
		var err error
		t.Attributes, err = decodeAttributes(rest[transformHeadLen:tlen])
		if err != nil {
			return nil, fmt.Errorf("transform %d of %d (%s): %w", i, count, t.Type, err)
		}
		ts = append(ts, t)
		off += tlen
	}
	if off != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the %d transforms Num Transforms announces", ErrLength, len(b)-off, count)
	}
	return ts, nil
}

func decodeAttributes(b []byte) ([]Attribute, error) {
	if len(b) == 0 {
		return nil, nil
	}
	as := make([]Attribute, 0, countAttributes(b))
	for off := 0; off < len(b); {
		n := len(as) + 1
		if n > MaxAttributes {
			return nil, fmt.Errorf("%w: more than %d attributes", ErrTooMany, MaxAttributes)
		}
		rest := b[off:]
		if len(rest) < attributeHeadLen {
			return nil, fmt.Errorf("attribute %d: %w: %d bytes left for a 4-byte header", n, ErrShort, len(rest))
		}
		word := binary.BigEndian.Uint16(rest[0:2])
		a := Attribute{Type: AttributeType(word & 0x7fff), TV: word&0x8000 != 0}
		if a.TV {
			a.Value = rest[2:4]
			off += attributeHeadLen
		} else {
			alen := int(binary.BigEndian.Uint16(rest[2:4]))
			if alen > len(rest)-attributeHeadLen {
				return nil, fmt.Errorf("attribute %d (%s): %w: Attribute Length %d, %d bytes left",
					n, a.Type, ErrLength, alen, len(rest)-attributeHeadLen)
			}
			a.Value = rest[attributeHeadLen : attributeHeadLen+alen]
			off += attributeHeadLen + alen
		}
		as = append(as, a)
	}
	return as, nil
}

// countSubstructs counts the length-prefixed substructures (Length at
// bytes 2..3, at least min bytes each) that fit b, up to max, to size a
// slice before decoding it.
func countSubstructs(b []byte, min, max int) int {
	n := 0
	for off := 0; n < max && len(b)-off >= min; n++ {
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if l < min {
			return n + 1
		}
		off += l
	}
	return n
}

// countAttributes counts the attributes that fit b, up to MaxAttributes.
func countAttributes(b []byte) int {
	n := 0
	for off := 0; n < MaxAttributes && len(b)-off >= attributeHeadLen; n++ {
		if b[off]&0x80 != 0 {
			off += attributeHeadLen
		} else {
			off += attributeHeadLen + int(binary.BigEndian.Uint16(b[off+2:off+4]))
		}
	}
	return n
}

// AppendBody implements Body.
func (sa *SA) AppendBody(b []byte) []byte {
	for i := range sa.Proposals {
		b = sa.Proposals[i].appendTo(b)
	}
	return b
}

func (p *Proposal) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, p.LastSubstruc, p.Reserved, 0, 0, p.Number, byte(p.Protocol), byte(len(p.SPI)), byte(len(p.Transforms)))
	b = append(b, p.SPI...)
	for i := range p.Transforms {
		b = p.Transforms[i].appendTo(b)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

func (t *Transform) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, t.LastSubstruc, t.Reserved1, 0, 0, byte(t.Type), t.Reserved2)
	b = binary.BigEndian.AppendUint16(b, t.ID)
	for _, a := range t.Attributes {
		b = a.appendTo(b)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

func (a Attribute) appendTo(b []byte) []byte {
	word := uint16(a.Type) & 0x7fff
	if a.TV {
		word |= 0x8000
		b = binary.BigEndian.AppendUint16(b, word)
		var v [2]byte
		copy(v[:], a.Value)
		return append(b, v[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, word)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Value)))
	return append(b, a.Value...)
}

// SetMarkers sets every Last Substruc field to what RFC 7296 prescribes (0
// for the last proposal or transform, 2 or 3 when more follow), for SA
// payloads built rather than decoded.
func (sa *SA) SetMarkers() {
	for i := range sa.Proposals {
		p := &sa.Proposals[i]
		p.LastSubstruc = MoreProposals
		if i == len(sa.Proposals)-1 {
			p.LastSubstruc = LastSubstruc
		}
		for j := range p.Transforms {
			p.Transforms[j].LastSubstruc = MoreTransforms
			if j == len(p.Transforms)-1 {
				p.Transforms[j].LastSubstruc = LastSubstruc
			}
		}
	}
}

// Chosen returns the proposal of an SA payload that carries a choice (the
// SA of an IKE_SA_INIT or CREATE_CHILD_SA response): exactly one proposal
// with at most one transform of each type. It errors for an offer.
func (sa *SA) Chosen() (*Proposal, error) {
	if len(sa.Proposals) != 1 {
		return nil, fmt.Errorf("%w: %d proposals, a choice has one", ErrMalformed, len(sa.Proposals))
	}
	p := &sa.Proposals[0]
	var seen [256]bool
	for _, t := range p.Transforms {
		if seen[t.Type] {
			return nil, fmt.Errorf("%w: more than one %s transform, a choice has one", ErrMalformed, t.Type)
		}
		seen[t.Type] = true
	}
	return p, nil
}

// Find returns the first transform of type t, or nil.
func (p *Proposal) Find(t TransformType) *Transform {
	for i := range p.Transforms {
		if p.Transforms[i].Type == t {
			return &p.Transforms[i]
		}
	}
	return nil
}

// Suite is a proposal read as one set of algorithms: the first transform of
// each type. For a chosen proposal that is the negotiated suite.
type Suite struct {
	Protocol  ProtocolID
	Encr      EncrID
	KeyLength int // bits; 0 when the ENCR transform has no Key Length
	PRF       PRFID
	Integ     IntegID
	DH        DHGroup
	// HasEncr, HasPRF, HasInteg and HasDH tell a missing transform from a
	// transform with ID 0 (NONE).
	HasEncr, HasPRF, HasInteg, HasDH bool
}

// Suite returns the first transform of each type.
func (p *Proposal) Suite() Suite {
	s := Suite{Protocol: p.Protocol}
	if t := p.Find(TransformENCR); t != nil {
		s.Encr, s.HasEncr = EncrID(t.ID), true
		s.KeyLength, _ = t.KeyLength()
	}
	if t := p.Find(TransformPRF); t != nil {
		s.PRF, s.HasPRF = PRFID(t.ID), true
	}
	if t := p.Find(TransformINTEG); t != nil {
		s.Integ, s.HasInteg = IntegID(t.ID), true
	}
	if t := p.Find(TransformDH); t != nil {
		s.DH, s.HasDH = DHGroup(t.ID), true
	}
	return s
}

// String renders the suite like "ENCR_AES_CBC-256/PRF_HMAC_SHA1/AUTH_HMAC_SHA1_96/MODP_1024".
func (s Suite) String() string {
	var parts []string
	if s.HasEncr {
		e := s.Encr.String()
		if s.KeyLength != 0 {
			e += "-" + strconv.Itoa(s.KeyLength)
		}
		parts = append(parts, e)
	}
	if s.HasPRF {
		parts = append(parts, s.PRF.String())
	}
	if s.HasInteg {
		parts = append(parts, s.Integ.String())
	}
	if s.HasDH {
		parts = append(parts, s.DH.String())
	}
	return strings.Join(parts, "/")
}

// KeyLength returns the Key Length attribute in bits, if present.
func (t *Transform) KeyLength() (int, bool) {
	for _, a := range t.Attributes {
		if a.Type != AttrKeyLength {
			continue
		}
		if len(a.Value) != 2 {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(a.Value)), true
	}
	return 0, false
}

// IDName names the Transform ID in the registry of the transform's type.
func (t *Transform) IDName() string {
	switch {
	case t.Type == TransformENCR:
		return EncrID(t.ID).String()
	case t.Type == TransformPRF:
		return PRFID(t.ID).String()
	case t.Type == TransformINTEG:
		return IntegID(t.ID).String()
	case t.Type == TransformDH, t.Type.IsAdditionalKE():
		return DHGroup(t.ID).String()
	case t.Type == TransformESN:
		return ESNID(t.ID).String()
	}
	return "ID(" + strconv.Itoa(int(t.ID)) + ")"
}

// String names the transform for people: the ID name with the key
// length for ciphers ("ENCR_AES_CBC-256", "AUTH_HMAC_SHA1_96"), and the
// group number operators know for key exchange ("DH group 2 (MODP_1024)").
func (t *Transform) String() string {
	switch {
	case t.Type == TransformENCR || t.Type == TransformPRF || t.Type == TransformINTEG:
		s := t.IDName()
		if t.Type == TransformINTEG && t.ID == 0 {
			s = "INTEG NONE"
		}
		if kl, ok := t.KeyLength(); ok {
			s += "-" + strconv.Itoa(kl)
		}
		return s
	case t.Type == TransformDH:
		return "DH group " + strconv.Itoa(int(t.ID)) + " (" + t.IDName() + ")"
	}
	return t.Type.String() + " " + t.IDName()
}
