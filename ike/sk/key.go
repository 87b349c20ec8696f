package sk

import (
	"fmt"
	"log/slog"
)

// redacted is what every formatting path prints instead of key bytes.
const redacted = "[REDACTED]"

// Key is secret key material (SK_ei, SK_er, SK_ai or SK_ar). It prints as
// "[REDACTED]" through fmt, encoding/json and log/slog, so a key that ends
// up in a log line or an error by mistake does not leak.
type Key []byte

func (k Key) String() string   { return redacted }
func (k Key) GoString() string { return redacted }

// Format implements fmt.Formatter so that %x, %v and friends are redacted too.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON implements json.Marshaler.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (used by some encoders).
func (k Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (k Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// Zero overwrites the key bytes.
func (k Key) Zero() { clear(k) }

// Keys are an IKE SA's protection keys (RFC 7296 §2.14) and its suite. For
// AEAD suites SK_ei and SK_er end with the salt and SK_ai, SK_ar are empty.
type Keys struct {
	Suite Suite
	SK_ei Key
	SK_er Key
	SK_ai Key
	SK_ar Key
}

// Zero overwrites all four keys.
func (k *Keys) Zero() {
	k.SK_ei.Zero()
	k.SK_er.Zero()
	k.SK_ai.Zero()
	k.SK_ar.Zero()
}

func (k Keys) String() string   { return "Keys{" + k.Suite.String() + " " + redacted + "}" }
func (k Keys) GoString() string { return k.String() }

// Format implements fmt.Formatter; without it %v of a Keys would format the
// fields one by one, which is safe today but fragile.
func (k Keys) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// MarshalJSON implements json.Marshaler: only the suite is shown.
func (k Keys) MarshalJSON() ([]byte, error) {
	return []byte(`{"suite":"` + k.Suite.String() + `","keys":"` + redacted + `"}`), nil
}

// LogValue implements slog.LogValuer.
func (k Keys) LogValue() slog.Value {
	return slog.GroupValue(slog.String("suite", k.Suite.String()), slog.String("keys", redacted))
}

// Validate checks the suite and that every key has the length it needs.
func (k *Keys) Validate() error {
	p, err := k.Suite.params()
	if err != nil {
		return err
	}
	check := func(name string, key Key, want int) error {
		if len(key) != want {
			return fmt.Errorf("%s: %s is %d bytes, want %d", k.Suite, name, len(key), want)
		}
		return nil
	}
	for _, c := range []struct {
		name string
		key  Key
		want int
	}{{"SK_ei", k.SK_ei, p.encKey}, {"SK_er", k.SK_er, p.encKey}, {"SK_ai", k.SK_ai, p.authKey}, {"SK_ar", k.SK_ar, p.authKey}} {
		if err := check(c.name, c.key, c.want); err != nil {
			return err
		}
	}
	return nil
}
