package ike

import (
	"encoding/binary"
	"fmt"
)

// EAP is the body of an EAP payload (RFC 7296 §3.16): one EAP message
// (RFC 3748 §4). The method data is kept raw.
type EAP struct {
	Code       EAPCode
	Identifier uint8
	// Type is the EAP method type. Success and Failure (and codes outside
	// the registry) have no Type field; it is 0 then.
	Type EAPType
	Data []byte // Type-Data, or for codes without a Type, everything after Length
}

// eapHasType tells whether messages with this code carry a Type byte: the
// request and response codes do (RFC 3748 §4.1), as do Initiate and Finish
// (RFC 6696 §5.3); Success and Failure do not, and unregistered codes are
// kept raw.
func eapHasType(c EAPCode) bool {
	switch c {
	case EAPRequest, EAPResponse, EAPInitiate, EAPFinish:
		return true
	}
	return false
}

func decodeEAP(body []byte) (*EAP, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: EAP body of %d bytes, need 4", ErrShort, len(body))
	}
	e := &EAP{Code: EAPCode(body[0]), Identifier: body[1]}
	if l := int(binary.BigEndian.Uint16(body[2:4])); l != len(body) {
		return nil, fmt.Errorf("EAP %s: %w: EAP Length %d, payload carries %d bytes", e.Code, ErrLength, l, len(body))
	}
	switch {
	case eapHasType(e.Code):
		if len(body) < 5 {
			return nil, fmt.Errorf("EAP %s: %w: no Type field", e.Code, ErrShort)
		}
		e.Type = EAPType(body[4])
		e.Data = body[5:]
	case e.Code == EAPSuccess || e.Code == EAPFailure:
		if len(body) != 4 {
			return nil, fmt.Errorf("EAP %s: %w: %d bytes, must be 4", e.Code, ErrLength, len(body))
		}
	default:
		e.Data = body[4:]
	}
	return e, nil
}

// AppendBody implements Body.
func (e *EAP) AppendBody(b []byte) []byte {
	n := 4 + len(e.Data)
	hasType := eapHasType(e.Code)
	if hasType {
		n++
	}
	b = append(b, byte(e.Code), e.Identifier)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	if hasType {
		b = append(b, byte(e.Type))
	}
	return append(b, e.Data...)
}
