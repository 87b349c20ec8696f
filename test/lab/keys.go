package lab

import (
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/keys"
)

// IKEKeys is one line of save-keys' ikev2_decryption_table: the keys of one
// IKE SA, with algorithm names as Wireshark spells them.
type IKEKeys struct {
	// SPIi and SPIr are 16 lower-case hex digits, as in SA.
	SPIi, SPIr string
	SKei, SKer []byte
	// Encryption like "AES-CBC-256 [RFC3602]".
	Encryption string
	SKai, SKar []byte
	// Integrity like "HMAC_SHA2_256_128 [RFC4868]"; AEAD ciphers have no
	// integrity keys.
	Integrity string
}

// ReadIKEKeys parses an ikev2_decryption_table. A missing file is an error;
// an empty one gives no keys.
func ReadIKEKeys(path string) ([]IKEKeys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 8
	var keys []IKEKeys
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		k := IKEKeys{SPIi: strings.ToLower(rec[0]), SPIr: strings.ToLower(rec[1]),
			Encryption: rec[4], Integrity: rec[7]}
		for i, dst := range []*[]byte{&k.SKei, &k.SKer, nil, &k.SKai, &k.SKar} {
			if dst == nil {
				continue
			}
			if *dst, err = hex.DecodeString(rec[2+i]); err != nil {
				return nil, fmt.Errorf("%s: field %d: %w", path, 3+i, err)
			}
		}
		if len(k.SPIi) != 16 || len(k.SPIr) != 16 {
			return nil, fmt.Errorf("%s: malformed SPIs %q %q", path, rec[0], rec[1])
		}
		keys = append(keys, k)
	}
}

// FindKeys returns the keys of the IKE SA with the given SPIs.
func FindKeys(keys []IKEKeys, spii, spir string) (IKEKeys, bool) {
	for _, k := range keys {
		if k.SPIi == spii && k.SPIr == spir {
			return k, true
		}
	}
	return IKEKeys{}, false
}

// PrivateCopy copies a key table into a 0600 file of the test's own: the
// key sources refuse files others could read, such as the shared lab's.
func PrivateCopy(t testing.TB, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), keys.SaveKeysTable)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// KeyStore loads a save-keys table (through a private copy) into a key
// store, as ikefragd does with keys.strongswan_table.
func KeyStore(t testing.TB, table string) *keys.Store {
	t.Helper()
	store := keys.NewStore(keys.StoreConfig{})
	if _, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: PrivateCopy(t, table)}); err != nil {
		t.Fatal(err)
	}
	return store
}
