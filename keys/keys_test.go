package keys_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/test/shared"
)

func resultsDir(t *testing.T) string {
	res := filepath.Join(shared.Dir(t), "lab", "results")
	if _, err := os.Stat(res); err != nil {
		t.Skipf("lab key tables not present in %s: %v", res, err)
	}
	return res
}

func TestParseLabKeyFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(resultsDir(t), "*-keys.txt"))
	if len(files) < 7 {
		t.Fatalf("%d key files", len(files))
	}
	want := sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		l, err := keys.ParseSaveKeysLine(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !l.Supported || l.Keys.Suite != want || len(l.Keys.SK_ei) != 32 || len(l.Keys.SK_ai) != 32 {
			t.Fatalf("%s: %+v", f, l)
		}
		if got := hex.EncodeToString(l.SPIi[:]) + "," + hex.EncodeToString(l.SPIr[:]); !strings.HasPrefix(string(b), got) {
			t.Fatalf("%s: SPIs %s", f, got)
		}
	}
}

func TestSuiteFromWireshark(t *testing.T) {
	for _, c := range []struct {
		enc, integ string
		want       sk.Suite
		supported  bool
	}{
		{"3DES [RFC2451]", "HMAC_SHA1_96 [RFC2404]", sk.Suite{Encr: sk.Encr3DES, KeyBits: 192, Integ: sk.AuthHMACSHA1_96}, true},
		{"AES-CBC-128 [RFC3602]", "HMAC_SHA2_384_192 [RFC4868]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACSHA2_384_192}, true},
		{"AES-CBC-192 [RFC3602]", "HMAC_SHA2_512_256 [RFC4868]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 192, Integ: sk.AuthHMACSHA2_512_256}, true},
		{"AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}, true},
		{"AES-GCM-128 with 8 octet ICV [RFC5282]", "NONE [RFC4306]", sk.Suite{Encr: sk.EncrAESGCM8, KeyBits: 128}, true},
		{"AES-GCM-192 with 12 octet ICV [RFC5282]", "NONE [RFC4306]", sk.Suite{Encr: sk.EncrAESGCM12, KeyBits: 192}, true},
		{"AES-GCM-256 with 16 octet ICV [RFC5282]", "NONE [RFC4306]", sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 256}, true},
		{"NULL [RFC2410]", "HMAC_SHA1_96 [RFC2404]", sk.Suite{Encr: sk.EncrNull, Integ: sk.AuthHMACSHA1_96}, false},
		{"AES-CTR-256 [RFC5930]", "HMAC_SHA1_96 [RFC2404]", sk.Suite{Encr: sk.EncrAESCTR, KeyBits: 256, Integ: sk.AuthHMACSHA1_96}, false},
		{"AES-CCM-128 with 16 octet ICV [RFC5282]", "NONE [RFC4306]", sk.Suite{Encr: sk.EncrAESCCM16, KeyBits: 128}, false},
		{"AES-CCM-256 with 8 octet ICV [RFC5282]", "NONE [RFC4306]", sk.Suite{Encr: sk.EncrAESCCM8, KeyBits: 256}, false},
		{"AES-CBC-128 [RFC3602]", "HMAC_MD5_96 [RFC2403]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACMD5_96}, false},
		{"AES-CBC-128 [RFC3602]", "HMAC_MD5_128 [RFC4595]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACMD5_128}, false},
		{"AES-CBC-128 [RFC3602]", "HMAC_SHA1_160 [RFC4595]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACSHA1_160}, false},
		{"AES-CBC-128 [RFC3602]", "HMAC_SHA2_256_96 [draft-ietf-ipsec-ciph-sha-256-00]", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACSHA2_256_96}, false},
	} {
		s, ok, err := keys.SuiteFromWireshark(c.enc, c.integ)
		if err != nil || s != c.want || ok != c.supported {
			t.Errorf("%q %q: %v %v %v", c.enc, c.integ, s, ok, err)
		}
	}
	for _, bad := range [][2]string{{"AES-CBC-512 [RFC3602]", "NONE [RFC4306]"}, {"Blowfish", "NONE"}, {"AES-GCM-128 with 4 octet ICV [RFC5282]", "NONE"}, {"3DES [RFC2451]", "SHA3"}} {
		if _, _, err := keys.SuiteFromWireshark(bad[0], bad[1]); err == nil {
			t.Errorf("%q %q accepted", bad[0], bad[1])
		}
	}
}

var (
	spiA = ike.SPI{0xa, 1, 2, 3, 4, 5, 6, 7}
	spiB = ike.SPI{0xb, 1, 2, 3, 4, 5, 6, 7}
	spiC = ike.SPI{0xc, 1, 2, 3, 4, 5, 6, 7}
	spiD = ike.SPI{0xd, 1, 2, 3, 4, 5, 6, 7}
)

func gcmLine(spiI, spiR ike.SPI, fill byte) string {
	k := strings.Repeat(fmt.Sprintf("%02x", fill), 36)
	return fmt.Sprintf("%s,%s,%s,%s,\"AES-GCM-256 with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\"\n", spiI, spiR, k, k)
}

func cbcLine(spiI, spiR ike.SPI, fill byte) string {
	k := strings.Repeat(fmt.Sprintf("%02x", fill), 32)
	return fmt.Sprintf("%s,%s,%s,%s,\"AES-CBC-256 [RFC3602]\",%s,%s,\"HMAC_SHA2_256_128 [RFC4868]\"\n", spiI, spiR, k, k, k, k)
}

// sealWith protects a small message with keys made of fill bytes.
func sealWith(t *testing.T, s sk.Suite, fill byte) []byte {
	k := &sk.Keys{Suite: s, SK_ei: sk.Key(bytes.Repeat([]byte{fill}, s.EncKeyLen())), SK_er: sk.Key(bytes.Repeat([]byte{fill}, s.EncKeyLen()))}
	if n := s.AuthKeyLen(); n > 0 {
		k.SK_ai, k.SK_ar = bytes.Repeat([]byte{fill}, n), bytes.Repeat([]byte{fill}, n)
	}
	sa, err := sk.NewSA(k)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sa.Seal(&sk.Decrypted{Header: ike.Header{SPIi: spiA, MajorVersion: 2, Exchange: 35, Flags: ike.FlagInitiator},
		Inner: 35, Payloads: []byte{0, 0, 0, 4}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

var gcm256 = sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 256}

func privateDir(t *testing.T) string {
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func appendFile(t *testing.T, path, s string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestSaveKeysFollow(t *testing.T) {
	dir := privateDir(t)
	table := filepath.Join(dir, keys.SaveKeysTable)
	appendFile(t, table, "# comment\n"+gcmLine(spiA, spiB, 1)+"garbage line\n")
	store := keys.NewStore(keys.StoreConfig{})
	f, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := store.Lookup(spiA, spiB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Open(sealWith(t, gcm256, 1)); err != nil {
		t.Fatalf("loaded keys do not open: %v", err)
	}
	// a line written in two pieces is used once complete
	line := gcmLine(spiB, spiA, 2)
	appendFile(t, table, line[:50])
	f.Sync()
	if _, err := store.Lookup(spiB, spiA); !errors.Is(err, keys.ErrUnknownSA) {
		t.Fatalf("half line used: %v", err)
	}
	// the rest arrives; a lookup miss reads it without waiting for a poll
	appendFile(t, table, line[50:])
	if _, err := store.Lookup(spiB, spiA); err != nil {
		t.Fatalf("lookup miss did not refresh: %v", err)
	}
	// the last line for a pair wins, and the replaced SA is wiped
	appendFile(t, table, cbcLine(spiA, spiB, 3))
	f.Sync()
	sa2, _ := store.Lookup(spiA, spiB)
	if _, err := sa2.Open(sealWith(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}, 3)); err != nil {
		t.Fatalf("last line did not win: %v", err)
	}
	if !sa.Closed() {
		t.Fatal("replaced SA not closed")
	}
	// unsupported suites are known, not usable
	appendFile(t, table, strings.Replace(gcmLine(spiB, spiB, 4), "AES-GCM-256 with 16", "AES-CCM-256 with 16", 1))
	f.Sync()
	if _, err := store.Lookup(spiB, spiB); !errors.Is(err, sk.ErrUnsupportedSuite) {
		t.Fatalf("unsupported: %v", err)
	}
	st := f.Stats()
	if st.Lines != 5 || st.Loaded != 3 || st.Malformed != 1 || st.Unsupported != 1 {
		t.Fatalf("%+v", st)
	}
	// truncated and rewritten: read again from the start
	if err := os.WriteFile(table, []byte(gcmLine(spiA, spiA, 5)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	if _, err := store.Lookup(spiA, spiA); err != nil || f.Stats().Rereads != 1 {
		t.Fatalf("truncation: %v %+v", err, f.Stats())
	}
	// rotated: renamed away, a new file in its place
	os.Rename(table, table+".1")
	appendFile(t, table, gcmLine(spiB, spiB, 6)+gcmLine(spiA, spiA, 6))
	f.Sync()
	sa3, err := store.Lookup(spiB, spiB)
	if err != nil || f.Stats().Rereads != 2 {
		t.Fatalf("rotation: %v %+v", err, f.Stats())
	}
	if _, err := sa3.Open(sealWith(t, gcm256, 6)); err != nil {
		t.Fatal(err)
	}
	// over-long lines are skipped, the next line still works
	appendFile(t, table, strings.Repeat("x", 10000)+"\n"+gcmLine(spiB, spiA, 7))
	f.Sync()
	sa4, _ := store.Lookup(spiB, spiA)
	if _, err := sa4.Open(sealWith(t, gcm256, 7)); err != nil || f.Stats().Malformed != 2 {
		t.Fatalf("after an over-long line: %v %+v", err, f.Stats())
	}
}

// Run picks up appended lines through change notification (the poll
// interval is an hour here).
func TestSaveKeysRunNotify(t *testing.T) {
	dir := privateDir(t)
	table := filepath.Join(dir, keys.SaveKeysTable)
	store := keys.NewStore(keys.StoreConfig{})
	f, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: table, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err) // a missing table is fine
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	appendFile(t, table, gcmLine(spiA, spiB, 1))
	deadline := time.Now().Add(5 * time.Second)
	for f.Stats().Loaded == 0 {
		if time.Now().After(deadline) {
			t.Fatal("appended line not read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestKeyPathsRefused(t *testing.T) {
	dir := privateDir(t)
	table := filepath.Join(dir, keys.SaveKeysTable)
	appendFile(t, table, gcmLine(spiA, spiB, 1))
	store := keys.NewStore(keys.StoreConfig{})

	os.Chmod(table, 0o644)
	_, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: table})
	if !errors.Is(err, keys.ErrInsecure) || !strings.Contains(err.Error(), "chmod 600 "+table) {
		t.Fatalf("0644 file: %v", err)
	}
	os.Chmod(table, 0o600)
	os.Chmod(dir, 0o755)
	_, err = keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: dir})
	if !errors.Is(err, keys.ErrInsecure) || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("0755 directory: %v", err)
	}
	os.Chmod(dir, 0o700)
	if os.Geteuid() == 0 {
		os.Chown(table, 65534, 65534)
		_, err = keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: table})
		if !errors.Is(err, keys.ErrInsecure) || !strings.Contains(err.Error(), "chown") || !strings.Contains(err.Error(), table) {
			t.Fatalf("foreign owner: %v", err)
		}
		os.Chown(table, 0, 0)
	}
	f, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: table})
	if err != nil {
		t.Fatal(err)
	}
	// a file that becomes readable later is refused at the next read
	os.Chmod(table, 0o640)
	appendFile(t, table, gcmLine(spiB, spiA, 2))
	if err := f.Sync(); !errors.Is(err, keys.ErrInsecure) || f.Stats().Refused != 1 {
		t.Fatalf("%v %+v", err, f.Stats())
	}
	if _, err := store.Lookup(spiB, spiA); !errors.Is(err, keys.ErrUnknownSA) {
		t.Fatal("keys read from a readable file")
	}
	// symlinks are refused
	os.Chmod(table, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(table, link)
	if _, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: link}); !errors.Is(err, keys.ErrInsecure) {
		t.Fatalf("symlink: %v", err)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testKeys(fill byte) *sk.Keys {
	return &sk.Keys{Suite: gcm256, SK_ei: bytes.Repeat([]byte{fill}, 36), SK_er: bytes.Repeat([]byte{fill}, 36)}
}

func TestStoreExpiryAndDelete(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	s := keys.NewStore(keys.StoreConfig{IdleTimeout: time.Minute, MaxAge: time.Hour, MaxEntries: 2, Now: clk.Now})
	k := testKeys(1)
	if err := s.Put(spiA, spiB, k, "test"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.SK_ei, make([]byte, 36)) {
		t.Fatal("Put did not wipe the caller's keys")
	}
	sa, _ := s.Lookup(spiA, spiB)
	clk.add(59 * time.Second)
	s.Lookup(spiA, spiB) // use keeps it alive
	clk.add(59 * time.Second)
	if s.Expire() != 0 {
		t.Fatal("used SA expired")
	}
	clk.add(61 * time.Second)
	if s.Expire() != 1 || !sa.Closed() {
		t.Fatal("idle SA not expired and wiped")
	}
	if _, err := sa.Open(sealWith(t, gcm256, 1)); !errors.Is(err, sk.ErrClosed) {
		t.Fatalf("expired SA still opens: %v", err)
	}
	s.Put(spiA, spiB, testKeys(1), "test")
	sa, _ = s.Lookup(spiA, spiB)
	if !s.Delete(spiA, spiB) || !sa.Closed() || s.Delete(spiA, spiB) {
		t.Fatal("Delete")
	}
	// MaxEntries: least recently used goes
	s.Put(spiA, spiA, testKeys(1), "test")
	s.Put(spiA, spiB, testKeys(1), "test")
	s.Lookup(spiA, spiA)
	s.Put(spiB, spiB, testKeys(1), "test")
	if _, err := s.Lookup(spiA, spiB); !errors.Is(err, keys.ErrUnknownSA) {
		t.Fatal("LRU entry kept")
	}
	if _, err := s.Lookup(spiA, spiA); err != nil {
		t.Fatal(err)
	}
	// MaxAge applies however busy
	for i := 0; i < 70; i++ {
		clk.add(time.Minute - time.Second)
		s.Lookup(spiA, spiA)
	}
	if _, err := s.Lookup(spiA, spiA); err != nil {
		t.Fatal(err)
	}
	s.Expire()
	if _, err := s.Lookup(spiA, spiA); !errors.Is(err, keys.ErrUnknownSA) {
		t.Fatal("MaxAge not applied")
	}
	st := s.Stats()
	if st.Expired < 2 || st.Evicted != 1 || st.Deleted != 1 {
		t.Fatalf("%+v", st)
	}
	for _, in := range s.List() {
		if strings.Contains(fmt.Sprintf("%+v", in), "0101") {
			t.Fatal("List shows keys")
		}
	}
}

func dialSocket(t *testing.T, path string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, r *bufio.Reader, line string) map[string]any {
	t.Helper()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("no reply to %.40q: %v", line, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(resp), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestKeySocket(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "keys.sock")
	store := keys.NewStore(keys.StoreConfig{})
	var derived sync.Map // SPIi → time the writer said
	s, err := keys.ListenSocket(store, keys.SocketConfig{Path: path, OnKeys: func(spiI, _ ike.SPI, at time.Time) {
		derived.Store(spiI, at)
	}})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()

	c, r := dialSocket(t, path)
	k := strings.Repeat("07", 36)
	ok := send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s","sk_ai":"","sk_ar":"","delete":false}`, spiA, spiB, k, k))
	if ok["ok"] != true {
		t.Fatalf("%v", ok)
	}
	sa, err := store.Lookup(spiA, spiB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Open(sealWith(t, gcm256, 7)); err != nil {
		t.Fatal(err)
	}
	cbcKey := strings.Repeat("09", 32)
	for _, bad := range []string{
		`not json`,
		`{"spi_i":"x"}`,
		fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s","extra":1}`, spiA, spiB, k, k),
		fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"zz","sk_er":"%s"}`, spiA, spiB, k),
		fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s"}`, spiA, spiB, k[:64], k),
		fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"BLOWFISH","sk_ei":"%s","sk_er":"%s"}`, spiA, spiB, k, k),
	} {
		resp := send(t, c, r, bad)
		if resp["ok"] != false || resp["error"] == "" {
			t.Fatalf("%q accepted: %v", bad, resp)
		}
		if strings.Contains(fmt.Sprint(resp["error"]), "0707") {
			t.Fatalf("key in error: %v", resp)
		}
	}
	// a CBC suite by IANA names and numbers
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"0x%s","spi_r":"%s","encr":12,"key_bits":256,"integ":"AUTH_HMAC_SHA2_256_128","sk_ei":"%s","sk_er":"%s","sk_ai":"%s","sk_ar":"%s"}`, spiB, spiA, cbcKey, cbcKey, cbcKey, cbcKey))
	if ok["ok"] != true {
		t.Fatalf("%v", ok)
	}
	sa2, err := store.Lookup(spiB, spiA)
	if err != nil || sa2.Suite() != (sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}) {
		t.Fatal(err)
	}
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_CCM_16","key_bits":128}`, spiB, spiB))
	if _, err := store.Lookup(spiB, spiB); ok["ok"] != true || !errors.Is(err, sk.ErrUnsupportedSuite) {
		t.Fatalf("unsupported: %v %v", ok, err)
	}
	// what the strongSwan plugin sends: both transforms as IANA numbers,
	// then the rekey link of the new SA to the old one
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":12,"key_bits":256,"integ":12,"frag":true,"t":1764900000123456789,"sk_ei":"%s","sk_er":"%s","sk_ai":"%s","sk_ar":"%s"}`, spiC, spiD, cbcKey, cbcKey, cbcKey, cbcKey))
	if sa3, err := store.Lookup(spiC, spiD); ok["ok"] != true || err != nil || sa3.Suite().Integ != sk.AuthHMACSHA2_256_128 {
		t.Fatalf("numeric integ: %v %v", ok, err)
	}
	if _, _, linked := store.Rekeyed(spiC, spiD); linked {
		t.Fatal("link before any rekey message")
	}
	if neg, known := store.Fragmentation(spiC, spiD); !neg || !known {
		t.Fatalf("frag: %v %v", neg, known)
	}
	if at, _ := derived.Load(spiC); at != time.Unix(0, 1764900000123456789) {
		t.Fatalf("derivation time %v", at)
	}
	if at, _ := derived.Load(spiA); !at.(time.Time).IsZero() {
		t.Fatalf("derivation time without t: %v", at)
	}
	if _, known := store.Fragmentation(spiB, spiA); known {
		t.Fatal("frag known for an SA whose source said nothing")
	}
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","old_spi_i":"%s","old_spi_r":"%s"}`, spiC, spiD, spiB, spiA))
	if oi, or, linked := store.Rekeyed(spiC, spiD); ok["ok"] != true || !linked || oi != spiB || or != spiA {
		t.Fatalf("rekey link: %v %v %v %v", ok, linked, oi, or)
	}
	// a link missing half of the old pair is an error
	if resp := send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","old_spi_i":"%s"}`, spiC, spiD, spiB)); resp["ok"] != false {
		t.Fatalf("half link accepted: %v", resp)
	}
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","delete":true}`, spiC, spiD))
	if _, _, linked := store.Rekeyed(spiC, spiD); ok["ok"] != true || linked || store.Has(spiC, spiD) {
		t.Fatal("deleted SA still linked or held")
	}
	ok = send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","delete":true}`, spiA, spiB))
	if _, err := store.Lookup(spiA, spiB); ok["ok"] != true || !errors.Is(err, keys.ErrUnknownSA) || !sa.Closed() {
		t.Fatalf("delete: %v %v", ok, err)
	}
	// over-long line: answered, connection closed
	c2, r2 := dialSocket(t, path)
	resp := send(t, c2, r2, `{"spi_i":"`+strings.Repeat("a", 20000)+`"}`)
	if resp["ok"] != false {
		t.Fatal("over-long line accepted")
	}
	st := s.Stats()
	if st.Added != 3 || st.Deleted != 2 || st.Unsupported != 1 || st.Malformed != 8 || st.Conns != 2 || st.Rekeys != 1 {
		t.Fatalf("%+v", st)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("socket left behind")
	}
	// a directory others can read is refused, naming the fix
	os.Chmod(dir, 0o755)
	if _, err := keys.ListenSocket(store, keys.SocketConfig{Path: path}); !errors.Is(err, keys.ErrInsecure) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("0755 directory: %v", err)
	}
	os.Chmod(dir, 0o700)
	// a stale socket of ours is replaced; a regular file is not
	os.WriteFile(path, nil, 0o600)
	if _, err := keys.ListenSocket(store, keys.SocketConfig{Path: path}); !errors.Is(err, keys.ErrInsecure) {
		t.Fatalf("regular file at the socket path: %v", err)
	}
}

// Connections beyond MaxConns are closed at once and counted.
func TestKeySocketMaxConns(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "k.sock")
	s, err := keys.ListenSocket(keys.NewStore(keys.StoreConfig{}), keys.SocketConfig{Path: path, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	c1, r1 := dialSocket(t, path)
	if resp := send(t, c1, r1, `{"spi_i":"0000000000000001","spi_r":"0000000000000002","delete":true}`); resp["ok"] != true {
		t.Fatal(resp)
	}
	c2, _ := dialSocket(t, path)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("second connection served: %d %v", n, err)
	}
	if st := s.Stats(); st.Refused != 1 || st.Conns != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestKeySocketTiming: a writer's timing members ("t", "tq", "tw", "rq",
// as the ikefrag-keys plugin sends them with timing on) reach OnTiming
// with the socket's own stages, in order, once the reply is written; a
// line without them still installs its keys and reports zero times.
func TestKeySocketTiming(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "keys.sock")
	store := keys.NewStore(keys.StoreConfig{})
	got := make(chan keys.KeyTiming, 4)
	s, err := keys.ListenSocket(store, keys.SocketConfig{Path: path, OnTiming: func(kt keys.KeyTiming) { got <- kt }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Serve(ctx) }()
	c, r := dialSocket(t, path)
	k := strings.Repeat("07", 36)
	base := time.Now().Add(-time.Second).UnixNano()
	line := fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","t":%d,"encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s","tq":%d,"tw":%d,"rq":1500}`,
		spiA, spiB, base, k, k, base+1000, base+3000)
	if resp := send(t, c, r, line); resp["ok"] != true {
		t.Fatalf("%v", resp)
	}
	var kt keys.KeyTiming
	select {
	case kt = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no timing after the reply")
	}
	if kt.SPIi != spiA || kt.SPIr != spiB || kt.Derived.UnixNano() != base || kt.Queued.UnixNano() != base+1000 ||
		kt.Written.UnixNano() != base+3000 || kt.SenderWait != 1500*time.Nanosecond {
		t.Fatalf("writer's times not reported: %+v", kt)
	}
	if kt.Read.Before(kt.Written) || kt.Installed.Before(kt.Read) || kt.Replied.Before(kt.Installed) {
		t.Fatalf("stages out of order: %+v", kt)
	}
	if !store.Has(spiA, spiB) {
		t.Fatal("keys not installed")
	}
	// without the members: keys installed, writer's times zero
	if resp := send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s"}`,
		spiB, spiA, k, k)); resp["ok"] != true {
		t.Fatalf("%v", resp)
	}
	select {
	case kt = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no timing after the reply")
	}
	if !kt.Derived.IsZero() || !kt.Queued.IsZero() || !kt.Written.IsZero() || kt.SenderWait != 0 || kt.Replied.IsZero() {
		t.Fatalf("times for a line without them: %+v", kt)
	}
	// a delete installs nothing: no timing
	if resp := send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","delete":true,"tq":%d,"tw":%d}`, spiA, spiB, base, base)); resp["ok"] != true {
		t.Fatalf("%v", resp)
	}
	select {
	case kt = <-got:
		t.Fatalf("timing for a delete: %+v", kt)
	case <-time.After(100 * time.Millisecond):
	}
}
