package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// socketFields are the members of a key message.
var socketFields = map[string]bool{"spi_i": true, "spi_r": true, "encr": true, "key_bits": true, "integ": true,
	"sk_ei": true, "sk_er": true, "sk_ai": true, "sk_ar": true, "delete": true, "server": true,
	"old_spi_i": true, "old_spi_r": true, "frag": true, "t": true, "tq": true, "tw": true, "rq": true}

// lineResult is what one key message did.
type lineResult int

const (
	lineNone lineResult = iota // blank line
	lineAdded
	lineDeleted
	lineUnsupported
)

// lineInfo is what a caller may want of an applied message besides its
// result.
type lineInfo struct {
	spiI, spiR ike.SPI
	rekey      bool      // it linked a rekeyed IKE SA (old_spi_i, old_spi_r)
	derived    time.Time // member "t": when the writer derived the keys
	queued     time.Time // member "tq": when the writer queued the message
	written    time.Time // member "tw": when the writer wrote it
	// member "rq": how long the writer's sending thread was runnable
	// without a CPU between starting to wait for the message and "tw"
	runqueue time.Duration
}

// errForbidden marks a message refused by the sender's authorisation (a
// VPN server it may not speak for), as opposed to a malformed one.
var errForbidden = errors.New("forbidden")

// applyLine applies one JSON object of the key protocol (package
// documentation) to store. allow, when set, authorises the SA's
// VPN server address ("server" is then required); source names the
// producer in the store.
func applyLine(store *Store, line []byte, source string, allow func(server netip.Addr) error) (res lineResult, info lineInfo, err error) {
	if len(trimSpace(line)) == 0 {
		return lineNone, info, nil
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
			return 0, info, fmt.Errorf("not a JSON object: syntax error at byte %d", se.Offset)
		}
		return 0, info, errors.New("not a JSON object")
	}
	for k := range raw {
		if !socketFields[k] {
			return 0, info, fmt.Errorf("unknown member %q", k)
		}
	}
	spiI, err := jsonSPI(raw, "spi_i")
	if err != nil {
		return 0, info, err
	}
	spiR, err := jsonSPI(raw, "spi_r")
	if err != nil {
		return 0, info, err
	}
	info.spiI, info.spiR = spiI, spiR
	if v, ok := raw["server"]; ok || allow != nil {
		var s string
		if !ok || json.Unmarshal(v, &s) != nil || s == "" && allow != nil {
			return 0, info, errors.New(`"server" must be the VPN server's IP address`)
		}
		// "" (not known to the writer) is taken only without allow: the
		// key listener needs it
		var a netip.Addr
		if s != "" {
			var perr error
			if a, perr = netip.ParseAddr(s); perr != nil {
				return 0, info, fmt.Errorf(`"server" %q is not an IP address`, s)
			}
		}
		if allow != nil {
			if err := allow(a.Unmap()); err != nil {
				return 0, info, fmt.Errorf("%w: %v", errForbidden, err)
			}
		}
	}
	var del bool
	if v, ok := raw["delete"]; ok {
		if err := json.Unmarshal(v, &del); err != nil {
			return 0, info, errors.New(`"delete" must be true or false`)
		}
	}
	if del {
		store.Delete(spiI, spiR)
		return lineDeleted, info, nil
	}
	_, hasOldI := raw["old_spi_i"]
	_, hasOldR := raw["old_spi_r"]
	if hasOldI || hasOldR {
		oldI, err := jsonSPI(raw, "old_spi_i")
		if err != nil {
			return 0, info, err
		}
		oldR, err := jsonSPI(raw, "old_spi_r")
		if err != nil {
			return 0, info, err
		}
		store.LinkRekey(oldI, oldR, spiI, spiR)
		info.rekey = true
		if _, hasKeys := raw["encr"]; !hasKeys {
			return lineNone, info, nil
		}
	}
	var suite sk.Suite
	if suite.Encr, err = jsonEncr(raw["encr"]); err != nil {
		return 0, info, err
	}
	if v, ok := raw["key_bits"]; ok {
		if err := json.Unmarshal(v, &suite.KeyBits); err != nil {
			return 0, info, errors.New(`"key_bits" must be a number`)
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
	if suite.Integ, err = jsonInteg(raw["integ"]); err != nil {
		return 0, info, err
	}
	if !suite.Supported() {
		store.PutUnsupported(spiI, spiR, suite.String(), source)
		return lineUnsupported, info, nil
	}
	k := sk.Keys{Suite: suite}
	defer k.Zero()
	for _, f := range []struct {
		name string
		dst  *sk.Key
	}{{"sk_ei", &k.SK_ei}, {"sk_er", &k.SK_er}, {"sk_ai", &k.SK_ai}, {"sk_ar", &k.SK_ar}} {
		if *f.dst, err = jsonKey(raw[f.name]); err != nil {
			return 0, info, fmt.Errorf("%q: %v", f.name, err)
		}
	}
	var frag, fragKnown bool
	if v, ok := raw["frag"]; ok {
		if err := json.Unmarshal(v, &frag); err != nil {
			return 0, info, errors.New(`"frag" must be true or false`)
		}
		fragKnown = true
	}
	if err := store.Put(spiI, spiR, &k, source); err != nil {
		return 0, info, err
	}
	if fragKnown {
		store.SetFragmentation(spiI, spiR, frag)
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"t", &info.derived}, {"tq", &info.queued}, {"tw", &info.written}} {
		if v, ok := raw[f.name]; ok {
			var ns int64
			if json.Unmarshal(v, &ns) == nil && ns > 0 {
				*f.dst = time.Unix(0, ns)
			}
		}
	}
	if v, ok := raw["rq"]; ok {
		var ns int64
		if json.Unmarshal(v, &ns) == nil && ns > 0 {
			info.runqueue = time.Duration(ns)
		}
	}
	return lineAdded, info, nil
}
