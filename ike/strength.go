package ike

import "strconv"

// Strength grades negotiated cryptography for an operator. The baseline
// (Acceptable) is what current guidance (RFC 8247) treats as the minimum
// for IKEv2: AES-128 with SHA-256 and the 2048-bit MODP group.
type Strength uint8

const (
	// Unknown: the codec has no rating for the transform (unregistered or
	// exotic IDs, or a transform that cannot be rated without context).
	Unknown Strength = iota
	// Weak: broken or deprecated (DES, 3DES, NULL encryption, MD5,
	// SHA-1 for integrity or PRF, MODP groups below 2048 bits).
	Weak
	// Acceptable: the baseline minimum.
	Acceptable
	// Strong: above the baseline (AEAD ciphers, SHA-384/512, elliptic
	// curves, 256-bit keys).
	Strong
)

func (s Strength) String() string {
	switch s {
	case Weak:
		return "weak"
	case Acceptable:
		return "acceptable"
	case Strong:
		return "strong"
	}
	return "unknown"
}

// rank orders strengths for "weakest wins": Weak, then Unknown (an
// unrated transform must not let a suite pass as good), then the rest.
func (s Strength) rank() int {
	switch s {
	case Weak:
		return 0
	case Unknown:
		return 1
	case Acceptable:
		return 2
	}
	return 3
}

// Verdict is a strength with the reasons behind it, each naming a transform.
type Verdict struct {
	Strength Strength
	Reasons  []string
}

// rating is one table entry: a strength and why.
type rating struct {
	s   Strength
	why string
}

// Ratings by transform ID, as data. ENCR entries that depend on the key
// length are resolved in encrRating.
var (
	encrRatings = map[EncrID]rating{
		EncrDESIV64:             {Weak, "56-bit DES key"},
		EncrDES:                 {Weak, "56-bit DES key"},
		EncrDESIV32:             {Weak, "56-bit DES key"},
		Encr3DES:                {Weak, "64-bit block cipher (Sweet32), deprecated by RFC 8247"},
		EncrRC5:                 {Weak, "deprecated by RFC 8247"},
		EncrIDEA:                {Weak, "64-bit block cipher, deprecated by RFC 8247"},
		EncrCAST:                {Weak, "64-bit block cipher"},
		EncrBlowfish:            {Weak, "64-bit block cipher, deprecated by RFC 8247"},
		Encr3IDEA:               {Weak, "64-bit block cipher, deprecated by RFC 8247"},
		EncrNULL:                {Weak, "no encryption"},
		EncrNullAuthAESGMAC:     {Weak, "no encryption (integrity only)"},
		EncrAESGCM8:             {Acceptable, "AEAD with a truncated 64-bit tag"},
		EncrAESGCM12:            {Acceptable, "AEAD with a truncated 96-bit tag"},
		EncrAESGCM16:            {Strong, "AEAD"},
		EncrAESGCM16IIV:         {Strong, "AEAD"},
		EncrAESCCM8:             {Acceptable, "AEAD with a truncated 64-bit tag"},
		EncrAESCCM8IIV:          {Acceptable, "AEAD with a truncated 64-bit tag"},
		EncrAESCCM12:            {Acceptable, "AEAD with a truncated 96-bit tag"},
		EncrAESCCM16:            {Strong, "AEAD"},
		EncrChaCha20Poly1305:    {Strong, "AEAD"},
		EncrChaCha20Poly1305IIV: {Strong, "AEAD"},
		EncrCamelliaCBC:         {Acceptable, "128-bit block cipher"},
		EncrCamelliaCTR:         {Acceptable, "128-bit block cipher"},
		EncrCamelliaCCM8:        {Acceptable, "AEAD with a truncated 64-bit tag"},
		EncrCamelliaCCM12:       {Acceptable, "AEAD with a truncated 96-bit tag"},
		EncrCamelliaCCM16:       {Acceptable, "AEAD"},
	}
	prfRatings = map[PRFID]rating{
		PRFHMACMD5:      {Weak, "MD5"},
		PRFHMACSHA1:     {Weak, "SHA-1"},
		PRFHMACTiger:    {Weak, "deprecated by RFC 8247"},
		PRFAES128XCBC:   {Acceptable, "AES-128 based"},
		PRFAES128CMAC:   {Acceptable, "AES-128 based"},
		PRFHMACSHA2_256: {Acceptable, "SHA-256"},
		PRFHMACSHA2_384: {Strong, "SHA-384"},
		PRFHMACSHA2_512: {Strong, "SHA-512"},
	}
	integRatings = map[IntegID]rating{
		IntegNone:            {Weak, "no integrity protection with a non-AEAD cipher"},
		IntegHMACMD5_96:      {Weak, "MD5"},
		IntegHMACMD5_128:     {Weak, "MD5"},
		IntegKPDKMD5:         {Weak, "MD5"},
		IntegDESMAC:          {Weak, "DES based"},
		IntegHMACSHA1_96:     {Weak, "SHA-1"},
		IntegHMACSHA1_160:    {Weak, "SHA-1"},
		IntegAESXCBC96:       {Acceptable, "AES-128 based"},
		IntegAESCMAC96:       {Acceptable, "AES-128 based"},
		IntegAES128GMAC:      {Acceptable, "AES-GMAC"},
		IntegAES192GMAC:      {Acceptable, "AES-GMAC"},
		IntegAES256GMAC:      {Acceptable, "AES-GMAC"},
		IntegHMACSHA2_256128: {Acceptable, "SHA-256"},
		IntegHMACSHA2_384192: {Strong, "SHA-384"},
		IntegHMACSHA2_512256: {Strong, "SHA-512"},
	}
	dhRatings = map[DHGroup]rating{
		GroupMODP768:    {Weak, "768-bit MODP"},
		GroupMODP1024:   {Weak, "1024-bit MODP"},
		GroupMODP1536:   {Weak, "1536-bit MODP"},
		GroupMODP1024S:  {Weak, "1024-bit MODP with small subgroup, deprecated by RFC 8247"},
		GroupMODP2048S:  {Weak, "MODP with small subgroup, deprecated by RFC 8247"},
		GroupMODP2048S2: {Weak, "MODP with small subgroup, deprecated by RFC 8247"},
		GroupECP192:     {Weak, "192-bit curve"},
		GroupMODP2048:   {Acceptable, "2048-bit MODP"},
		GroupECP224:     {Acceptable, "224-bit curve"},
		GroupBrainpool:  {Acceptable, "224-bit curve"},
		GroupMODP3072:   {Strong, "3072-bit MODP"},
		GroupMODP4096:   {Strong, "4096-bit MODP"},
		GroupMODP6144:   {Strong, "6144-bit MODP"},
		GroupMODP8192:   {Strong, "8192-bit MODP"},
		GroupECP256:     {Strong, "256-bit NIST curve"},
		GroupECP384:     {Strong, "384-bit NIST curve"},
		GroupECP521:     {Strong, "521-bit NIST curve"},
		28:              {Strong, "256-bit Brainpool curve"},
		29:              {Strong, "384-bit Brainpool curve"},
		30:              {Strong, "512-bit Brainpool curve"},
		GroupCurve25519: {Strong, "Curve25519"},
		GroupCurve448:   {Strong, "Curve448"},
		GroupMLKEM512:   {Acceptable, "ML-KEM, NIST category 1"},
		GroupMLKEM768:   {Strong, "ML-KEM, NIST category 3"},
		GroupMLKEM1024:  {Strong, "ML-KEM, NIST category 5"},
	}
)

// Strength rates one transform on its own. ESN and unregistered transform
// types are not cryptographic choices and rate Unknown.
func (t *Transform) Strength() Verdict {
	name := t.String()
	var r rating
	var ok bool
	switch {
	case t.Type == TransformENCR:
		r, ok = encrRating(t)
	case t.Type == TransformPRF:
		r, ok = prfRatings[PRFID(t.ID)]
	case t.Type == TransformINTEG:
		r, ok = integRatings[IntegID(t.ID)]
	case t.Type == TransformDH, t.Type.IsAdditionalKE():
		if DHGroup(t.ID) == GroupNone {
			return Verdict{Unknown, []string{name + ": no key exchange"}}
		}
		r, ok = dhRatings[DHGroup(t.ID)]
	default:
		return Verdict{Unknown, []string{name + ": not rated"}}
	}
	if !ok {
		return Verdict{Unknown, []string{name + ": no rating for this algorithm"}}
	}
	return Verdict{r.s, []string{name + ": " + r.s.String() + " (" + r.why + ")"}}
}

func encrRating(t *Transform) (rating, bool) {
	id := EncrID(t.ID)
	switch id {
	case EncrAESCBC, EncrAESCTR:
		kl, ok := t.KeyLength()
		switch {
		case !ok:
			// RFC 7296 §3.3.5: AES needs a Key Length attribute.
			return rating{Unknown, "no Key Length attribute"}, true
		case kl == 128 || kl == 192:
			return rating{Acceptable, strconv.Itoa(kl) + "-bit AES key"}, true
		case kl == 256:
			return rating{Strong, "256-bit AES key"}, true
		}
		return rating{Unknown, "invalid AES key length " + strconv.Itoa(kl)}, true
	}
	r, ok := encrRatings[id]
	return r, ok
}

// Strength rates a proposal as a suite: the verdict of its weakest
// transform, with every transform's reason. For a chosen proposal that is
// the negotiated suite; for an offer it is the weakest thing the sender
// would accept. An INTEG transform next to an AEAD cipher, ESN and
// additional key exchanges (which can only add strength) do not lower it.
func (p *Proposal) Strength() Verdict {
	v := Verdict{Strength: Strong}
	aead := false
	if t := p.Find(TransformENCR); t != nil {
		aead = EncrID(t.ID).IsAEAD()
	}
	worse := func(s Strength) {
		if s.rank() < v.Strength.rank() {
			v.Strength = s
		}
	}
	var has [256]bool
	for i := range p.Transforms {
		t := &p.Transforms[i]
		has[t.Type] = true
		tv := t.Strength()
		v.Reasons = append(v.Reasons, tv.Reasons...)
		switch {
		case t.Type == TransformESN:
		case t.Type.IsAdditionalKE():
		case t.Type == TransformINTEG && aead && IntegID(t.ID) == IntegNone:
		case t.Type == TransformDH && p.Protocol != ProtocolIKE && DHGroup(t.ID) == GroupNone:
			// A Child SA without PFS: not a weakness of the suite itself.
		default:
			worse(tv.Strength)
		}
	}
	switch {
	case !has[TransformENCR] && p.Protocol != ProtocolAH:
		v.Reasons = append(v.Reasons, "no ENCR transform")
		worse(Unknown)
	case has[TransformENCR] && !aead && !has[TransformINTEG]:
		v.Reasons = append(v.Reasons, "no INTEG transform for a non-AEAD cipher: no integrity protection")
		worse(Weak)
	}
	if p.Protocol == ProtocolIKE {
		if !has[TransformPRF] {
			v.Reasons = append(v.Reasons, "no PRF transform")
			worse(Unknown)
		}
		if !has[TransformDH] {
			v.Reasons = append(v.Reasons, "no KE transform")
			worse(Unknown)
		}
	}
	return v
}
