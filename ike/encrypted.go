package ike

import (
	"encoding/binary"
	"fmt"
)

// Encrypted is the body of an Encrypted (SK) payload (RFC 7296 §3.14). The
// IV, ciphertext and ICV are kept opaque: their sizes depend on the
// negotiated transforms.
type Encrypted struct {
	// NextPayload is the type of the first inner payload.
	NextPayload PayloadType
	Data        []byte // IV ‖ ciphertext ‖ ICV
}

// AppendBody implements Body.
func (e *Encrypted) AppendBody(b []byte) []byte { return append(b, e.Data...) }

// EncryptedFragment is the body of an Encrypted Fragment (SKF) payload
// (RFC 7383 §2.5).
type EncryptedFragment struct {
	// NextPayload is the first inner payload type in fragment 1, and 0 in
	// the others.
	NextPayload PayloadType
	Number      uint16 // Fragment Number, from 1
	Total       uint16 // Total Fragments
	Data        []byte // IV ‖ ciphertext ‖ ICV
}

// SKFHeaderLen is the length of the SKF payload header: the generic header
// plus Fragment Number and Total Fragments.
const SKFHeaderLen = 8

// AppendBody implements Body.
func (f *EncryptedFragment) AppendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, f.Number)
	b = binary.BigEndian.AppendUint16(b, f.Total)
	return append(b, f.Data...)
}

func decodeEncryptedFragment(np PayloadType, body []byte) (*EncryptedFragment, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: SKF body of %d bytes", ErrShort, len(body))
	}
	f := &EncryptedFragment{
		NextPayload: np,
		Number:      binary.BigEndian.Uint16(body[0:2]),
		Total:       binary.BigEndian.Uint16(body[2:4]),
		Data:        body[4:],
	}
	// RFC 7383 §2.5: numbers count from 1 and never exceed the total.
	if f.Number == 0 || f.Total == 0 || f.Number > f.Total {
		return nil, fmt.Errorf("%w: SKF fragment %d of %d", ErrMalformed, f.Number, f.Total)
	}
	return f, nil
}
