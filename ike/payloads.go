package ike

// decodeBody decodes the body of a payload of type t. np is the Next Payload
// field of its generic header (needed for SK and SKF, whose Next Payload
// names the first inner payload). Unknown types return errUnknown, which the
// caller turns into a Raw body or, for critical payloads, an error.
func decodeBody(t, np PayloadType, body []byte) (Body, error) {
	switch t {
	case PayloadEncrypted:
		return &Encrypted{NextPayload: np, Data: body}, nil
	case PayloadEncryptedFragment:
		return decodeEncryptedFragment(np, body)
	}
	return nil, errUnknown
}
