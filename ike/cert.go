package ike

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// FormatID renders Identification Data of the given ID Type for people:
// addresses in their usual notation, FQDN and RFC 822 names as text, a DER
// Distinguished Name in RFC 4514 form. Data that does not fit its type is
// shown in hex with a note rather than failing: it is peer-controlled.
func FormatID(t IDType, data []byte) string {
	switch t {
	case IDIPv4Addr, IDIPv6Addr:
		want := 4
		if t == IDIPv6Addr {
			want = 16
		}
		if len(data) == want {
			a, _ := netip.AddrFromSlice(data)
			return a.String()
		}
	case IDFQDN, IDRFC822Addr:
		return safeString(data)
	case IDDERASN1DN:
		if dn, err := formatDN(data); err == nil {
			return dn
		}
	case IDKeyID:
		if len(data) > 0 && printable(data) {
			return string(data)
		}
		return hex.EncodeToString(data)
	case IDNull:
		if len(data) == 0 {
			return "(null)"
		}
	}
	return fmt.Sprintf("%s(%d bytes: %x)", t, len(data), data)
}

// formatDN renders a DER-encoded X.501 Name.
func formatDN(der []byte) (string, error) {
	var rdn pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &rdn)
	if err != nil {
		return "", err
	}
	if len(rest) != 0 {
		return "", fmt.Errorf("%d bytes after the Name", len(rest))
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return n.String(), nil
}

// Cert is the body of a Certificate payload (RFC 7296 §3.6).
type Cert struct {
	Encoding CertEncoding
	Data     []byte // Certificate Data, e.g. a DER X.509 certificate
}

func decodeCert(body []byte) (*Cert, error) {
	if len(body) < 1 {
		return nil, fmt.Errorf("%w: CERT body is empty, need the Cert Encoding", ErrShort)
	}
	return &Cert{Encoding: CertEncoding(body[0]), Data: body[1:]}, nil
}

// AppendBody implements Body.
func (c *Cert) AppendBody(b []byte) []byte { return append(append(b, byte(c.Encoding)), c.Data...) }

// X509 parses the certificate of an "X.509 Certificate - Signature" CERT.
func (c *Cert) X509() (*x509.Certificate, error) {
	if c.Encoding != CertX509Signature {
		return nil, fmt.Errorf("CERT encoding is %s, not X.509", c.Encoding)
	}
	return x509.ParseCertificate(c.Data)
}

// Subject returns the subject of an X.509 CERT; see CertSubject.
func (c *Cert) Subject() (string, error) {
	if c.Encoding != CertX509Signature {
		return "", fmt.Errorf("CERT encoding is %s, not X.509", c.Encoding)
	}
	return CertSubject(c.Data)
}

// CertSubject returns the subject Distinguished Name of a DER X.509
// certificate. crypto/x509 refuses certificates with any field it dislikes
// (negative serials, odd extensions, unknown key types), and an operator
// still wants to know whose certificate it was, so on failure the subject
// is dug out of the TBSCertificate structure directly.
func CertSubject(der []byte) (string, error) {
	if c, err := x509.ParseCertificate(der); err == nil {
		return c.Subject.String(), nil
	}
	raw, err := rawSubject(der)
	if err != nil {
		return "", err
	}
	return formatDN(raw)
}

// rawSubject walks Certificate → TBSCertificate → subject (RFC 5280 §4.1)
// without interpreting anything else.
func rawSubject(der []byte) ([]byte, error) {
	var cert asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	var tbs asn1.RawValue
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return nil, fmt.Errorf("tbsCertificate: %w", err)
	}
	rest := tbs.Bytes
	// version [0] EXPLICIT (optional), serialNumber, signature, issuer,
	// validity, subject.
	var fields [6]asn1.RawValue
	n := 0
	for n < len(fields) && len(rest) > 0 {
		var err error
		rest, err = asn1.Unmarshal(rest, &fields[n])
		if err != nil {
			return nil, fmt.Errorf("tbsCertificate field %d: %w", n+1, err)
		}
		if n == 0 && !(fields[0].Class == asn1.ClassContextSpecific && fields[0].Tag == 0) {
			// No version field (v1 certificate): this was the serial.
			fields[1] = fields[0]
			n = 1
		}
		n++
	}
	if n < len(fields) {
		return nil, errors.New("tbsCertificate: too few fields for a subject")
	}
	return fields[5].FullBytes, nil
}

// CertReq is the body of a Certificate Request payload (RFC 7296 §3.7).
type CertReq struct {
	Encoding CertEncoding
	// Data is the Certification Authority field: for X.509, a list of
	// 20-byte SHA-1 hashes of trusted CAs' public keys.
	Data []byte
}

func decodeCertReq(body []byte) (*CertReq, error) {
	if len(body) < 1 {
		return nil, fmt.Errorf("%w: CERTREQ body is empty, need the Cert Encoding", ErrShort)
	}
	return &CertReq{Encoding: CertEncoding(body[0]), Data: body[1:]}, nil
}

// AppendBody implements Body.
func (c *CertReq) AppendBody(b []byte) []byte { return append(append(b, byte(c.Encoding)), c.Data...) }

// CAHashes splits an X.509 CERTREQ's data into its 20-byte CA key hashes.
// It returns nil for other encodings or data that is not a multiple of 20.
func (c *CertReq) CAHashes() [][]byte {
	const n = 20
	if c.Encoding != CertX509Signature || len(c.Data)%n != 0 {
		return nil
	}
	out := make([][]byte, 0, len(c.Data)/n)
	for i := 0; i < len(c.Data); i += n {
		out = append(out, c.Data[i:i+n])
	}
	return out
}
