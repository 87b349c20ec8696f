package ike

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// decodeBody decodes the body of a payload of type t. np is the Next Payload
// field of its generic header (needed for SK and SKF, whose Next Payload
// names the first inner payload). Unknown types return errUnknown, which the
// caller turns into a Raw body or, for critical payloads, an error.
//
// Every decoder keeps sub-slices of body rather than copies, and every
// AppendBody writes back exactly the bytes it was decoded from.
func decodeBody(t, np PayloadType, body []byte) (Body, error) {
	switch t {
	case PayloadSA:
		return decodeSA(body)
	case PayloadKE:
		return decodeKE(body)
	case PayloadIDi, PayloadIDr:
		return decodeID(body)
	case PayloadCERT:
		return decodeCert(body)
	case PayloadCERTREQ:
		return decodeCertReq(body)
	case PayloadAUTH:
		return decodeAuth(body)
	case PayloadNonce:
		return &Nonce{Data: body}, nil
	case PayloadNotify:
		return decodeNotify(body)
	case PayloadDelete:
		return decodeDelete(body)
	case PayloadVendorID:
		return &VendorID{Data: body}, nil
	case PayloadTSi, PayloadTSr:
		return decodeTS(body)
	case PayloadEncrypted:
		return &Encrypted{NextPayload: np, Data: body}, nil
	case PayloadCP:
		return decodeCP(body)
	case PayloadEAP:
		return decodeEAP(body)
	case PayloadEncryptedFragment:
		return decodeEncryptedFragment(np, body)
	case PayloadGSPM, PayloadIDg, PayloadGSA, PayloadKD, PayloadPS:
		// Registered types the product has no use for: known, so a
		// critical bit on them is no reason to reject the message.
		return Raw(body), nil
	}
	return nil, errUnknown
}

// KE is the body of a Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	Group    DHGroup // Diffie-Hellman Group Num (Key Exchange Method)
	Reserved uint16
	Data     []byte // Key Exchange Data
}

func decodeKE(body []byte) (*KE, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: KE body of %d bytes, need 4", ErrShort, len(body))
	}
	return &KE{
		Group:    DHGroup(binary.BigEndian.Uint16(body[0:2])),
		Reserved: binary.BigEndian.Uint16(body[2:4]),
		Data:     body[4:],
	}, nil
}

// AppendBody implements Body.
func (k *KE) AppendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(k.Group))
	b = binary.BigEndian.AppendUint16(b, k.Reserved)
	return append(b, k.Data...)
}

// Nonce is the body of a Nonce payload (Ni, Nr; RFC 7296 §3.9).
type Nonce struct{ Data []byte }

// AppendBody implements Body.
func (n *Nonce) AppendBody(b []byte) []byte { return append(b, n.Data...) }

// VendorID is the body of a Vendor ID payload (RFC 7296 §3.12).
type VendorID struct{ Data []byte }

// AppendBody implements Body.
func (v *VendorID) AppendBody(b []byte) []byte { return append(b, v.Data...) }

// Name returns a well-known vendor's name for the VID, the text of a
// printable VID (Cisco sends "FLEXVPN-SUPPORTED"), or "".
func (v *VendorID) Name() string {
	h := hex.EncodeToString(v.Data)
	for _, k := range knownVendorIDs {
		if p, ok := strings.CutSuffix(k.hex, "*"); ok {
			if strings.HasPrefix(h, p) {
				return k.name
			}
		} else if h == k.hex {
			return k.name
		}
	}
	if len(v.Data) > 0 && printable(v.Data) {
		return string(v.Data)
	}
	return ""
}

// Notify is the body of a Notify payload (RFC 7296 §3.10).
type Notify struct {
	Protocol ProtocolID
	SPI      []byte // SPI Size is len(SPI)
	Type     NotifyType
	Data     []byte // Notification Data
}

func decodeNotify(body []byte) (*Notify, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: Notify body of %d bytes, need 4", ErrShort, len(body))
	}
	spiSize := int(body[1])
	n := &Notify{Protocol: ProtocolID(body[0]), Type: NotifyType(binary.BigEndian.Uint16(body[2:4]))}
	if spiSize > len(body)-4 {
		return nil, fmt.Errorf("Notify %s: %w: SPI Size %d, %d bytes left", n.Type, ErrLength, spiSize, len(body)-4)
	}
	n.SPI = body[4 : 4+spiSize]
	n.Data = body[4+spiSize:]
	return n, nil
}

// AppendBody implements Body.
func (n *Notify) AppendBody(b []byte) []byte {
	b = append(b, byte(n.Protocol), byte(len(n.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(n.Type))
	b = append(b, n.SPI...)
	return append(b, n.Data...)
}

// AcceptedGroup returns the group an INVALID_KE_PAYLOAD notify asks for
// (RFC 7296 §1.3: the data is the accepted DH Group Num).
func (n *Notify) AcceptedGroup() (DHGroup, bool) {
	if n.Type != NotifyInvalidKEPayload || len(n.Data) != 2 {
		return 0, false
	}
	return DHGroup(binary.BigEndian.Uint16(n.Data)), true
}

// Gateway returns the gateway identity of a REDIRECT or REDIRECTED_FROM
// notify (RFC 5685 §8.1: GW Ident Type, GW Ident Len, identity).
func (n *Notify) Gateway() (string, bool) {
	if n.Type != NotifyRedirect && n.Type != NotifyRedirectedFrom || len(n.Data) < 2 {
		return "", false
	}
	typ, l := n.Data[0], int(n.Data[1])
	if l > len(n.Data)-2 {
		return "", false
	}
	id := n.Data[2 : 2+l]
	switch typ {
	case 1, 2: // IPv4, IPv6
		if a, ok := netip.AddrFromSlice(id); ok && (typ == 1) == (len(id) == 4) {
			return a.String(), true
		}
	case 3: // FQDN
		return safeString(id), true
	}
	return "", false
}

func (n *Notify) String() string { return "N(" + n.Type.String() + ")" }

// Delete is the body of a Delete payload (RFC 7296 §3.11). The SPIs are
// kept as one byte string of NumSPIs × SPISize bytes so that a payload of
// many tiny SPIs costs no more memory than its own size.
type Delete struct {
	Protocol ProtocolID
	SPISize  uint8
	NumSPIs  uint16
	SPIs     []byte
}

func decodeDelete(body []byte) (*Delete, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: Delete body of %d bytes, need 4", ErrShort, len(body))
	}
	d := &Delete{Protocol: ProtocolID(body[0]), SPISize: body[1], NumSPIs: binary.BigEndian.Uint16(body[2:4]), SPIs: body[4:]}
	if want := int(d.SPISize) * int(d.NumSPIs); want != len(d.SPIs) {
		return nil, fmt.Errorf("Delete: %w: %d SPIs of %d bytes need %d bytes, body has %d",
			ErrLength, d.NumSPIs, d.SPISize, want, len(d.SPIs))
	}
	return d, nil
}

// AppendBody implements Body.
func (d *Delete) AppendBody(b []byte) []byte {
	b = append(b, byte(d.Protocol), d.SPISize)
	b = binary.BigEndian.AppendUint16(b, d.NumSPIs)
	return append(b, d.SPIs...)
}

// SPI returns the i-th SPI, or nil when out of range.
func (d *Delete) SPI(i int) []byte {
	n := int(d.SPISize)
	if i < 0 || i >= int(d.NumSPIs) || (i+1)*n > len(d.SPIs) {
		return nil
	}
	return d.SPIs[i*n : (i+1)*n]
}

// Auth is the body of an Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method   AuthMethod
	Reserved [3]byte
	Data     []byte // Authentication Data
}

func decodeAuth(body []byte) (*Auth, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: AUTH body of %d bytes, need 4", ErrShort, len(body))
	}
	a := &Auth{Method: AuthMethod(body[0]), Data: body[4:]}
	copy(a.Reserved[:], body[1:4])
	return a, nil
}

// AppendBody implements Body.
func (a *Auth) AppendBody(b []byte) []byte {
	b = append(b, byte(a.Method))
	b = append(b, a.Reserved[:]...)
	return append(b, a.Data...)
}

// ID is the body of an Identification payload, IDi or IDr (RFC 7296 §3.5).
type ID struct {
	Type     IDType
	Reserved [3]byte
	Data     []byte // Identification Data
}

func decodeID(body []byte) (*ID, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: ID body of %d bytes, need 4", ErrShort, len(body))
	}
	id := &ID{Type: IDType(body[0]), Data: body[4:]}
	copy(id.Reserved[:], body[1:4])
	return id, nil
}

// AppendBody implements Body.
func (id *ID) AppendBody(b []byte) []byte {
	b = append(b, byte(id.Type))
	b = append(b, id.Reserved[:]...)
	return append(b, id.Data...)
}

// String renders the identity for people; see FormatID.
func (id *ID) String() string { return FormatID(id.Type, id.Data) }

// printable reports whether b is printable ASCII.
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// safeString returns b as text when it is printable ASCII, else quoted
// with escapes, so that peer-controlled bytes never reach a terminal or log
// as control characters.
func safeString(b []byte) string {
	if printable(b) {
		return string(b)
	}
	return strconv.Quote(string(b))
}
