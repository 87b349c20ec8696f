package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ikefrag/ikefrag/ike/sk"
)

// socketFields are the members of a key message.
var socketFields = map[string]bool{"spi_i": true, "spi_r": true, "encr": true, "key_bits": true, "integ": true,
	"sk_ei": true, "sk_er": true, "sk_ai": true, "sk_ar": true, "delete": true, "responder": true}

// lineResult is what one key message did.
type lineResult int

const (
	lineNone lineResult = iota // blank line
	lineAdded
	lineDeleted
	lineUnsupported
)

// errForbidden marks a message refused by the sender's authorisation (a
// responder address it may not speak for), as opposed to a malformed one.
var errForbidden = errors.New("forbidden")

// applyLine applies one JSON object of the key protocol (package
// documentation) to store. allow, when set, authorises the SA's
// responder address ("responder" is then required); source names the
// producer in the store.
func applyLine(store *Store, line []byte, source string, allow func(responder netip.Addr) error) (res lineResult, err error) {
	if len(trimSpace(line)) == 0 {
		return lineNone, nil
	}
	var raw map[string]json.RawMessage
	defer func() {
		for _, v := range raw {
			clear(v)
		}
	}()
	if err := json.Unmarshal(line, &raw); err != nil {
		// The decoder's messages quote input characters, which may be key
		// material: report only where the problem is.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return 0, fmt.Errorf("not a JSON object: syntax error at byte %d", se.Offset)
		}
		return 0, errors.New("not a JSON object")
	}
	for k := range raw {
		if !socketFields[k] {
			return 0, fmt.Errorf("unknown member %q", k)
		}
	}
	spiI, err := jsonSPI(raw, "spi_i")
	if err != nil {
		return 0, err
	}
	spiR, err := jsonSPI(raw, "spi_r")
	if err != nil {
		return 0, err
	}
	if v, ok := raw["responder"]; ok || allow != nil {
		var s string
		if !ok || json.Unmarshal(v, &s) != nil {
			return 0, errors.New(`"responder" must be the responder's IP address`)
		}
		a, perr := netip.ParseAddr(s)
		if perr != nil {
			return 0, fmt.Errorf(`"responder" %q is not an IP address`, s)
		}
		if allow != nil {
			if err := allow(a.Unmap()); err != nil {
				return 0, fmt.Errorf("%w: %v", errForbidden, err)
			}
		}
	}
	var del bool
	if v, ok := raw["delete"]; ok {
		if err := json.Unmarshal(v, &del); err != nil {
			return 0, errors.New(`"delete" must be true or false`)
		}
	}
	if del {
		store.Delete(spiI, spiR)
		return lineDeleted, nil
	}
	var suite sk.Suite
	if suite.Encr, err = jsonEncr(raw["encr"]); err != nil {
		return 0, err
	}
	if v, ok := raw["key_bits"]; ok {
		if err := json.Unmarshal(v, &suite.KeyBits); err != nil {
			return 0, errors.New(`"key_bits" must be a number`)
		}
	}
	switch suite.Encr {
	case sk.Encr3DES:
		if suite.KeyBits == 0 {
			suite.KeyBits = 192
		}
	case sk.EncrChaCha20Poly1305:
		if suite.KeyBits == 0 {
			suite.KeyBits = 256
		}
	}
	integ := ""
	if v, ok := raw["integ"]; ok {
		if err := json.Unmarshal(v, &integ); err != nil {
			return 0, errors.New(`"integ" must be a string`)
		}
	}
	var known bool
	if suite.Integ, known = sk.ParseAuth(integ); !known {
		return 0, fmt.Errorf("unknown integrity transform %q", integ)
	}
	if !suite.Supported() {
		store.PutUnsupported(spiI, spiR, suite.String(), source)
		return lineUnsupported, nil
	}
	k := sk.Keys{Suite: suite}
	defer k.Zero()
	for _, f := range []struct {
		name string
		dst  *sk.Key
	}{{"sk_ei", &k.SK_ei}, {"sk_er", &k.SK_er}, {"sk_ai", &k.SK_ai}, {"sk_ar", &k.SK_ar}} {
		if *f.dst, err = jsonKey(raw[f.name]); err != nil {
			return 0, fmt.Errorf("%q: %v", f.name, err)
		}
	}
	if err := store.Put(spiI, spiR, &k, source); err != nil {
		return 0, err
	}
	return lineAdded, nil
}
