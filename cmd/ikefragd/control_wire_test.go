package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/proxy"
)

// fill sets every field reachable from v to a value that is not its zero,
// distinct per field, so that a field one side drops or renames shows.
func fill(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Type() {
	case reflect.TypeFor[netip.Addr]():
		v.Set(reflect.ValueOf(netip.AddrFrom4([4]byte{192, 0, 2, byte(*n)})))
		return
	case reflect.TypeFor[netip.AddrPort]():
		v.Set(reflect.ValueOf(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(*n)}), uint16(1000+*n))))
		return
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, *n, 0, time.UTC)))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), n)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(t, s.Index(0), n)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k, n)
		fill(t, e, n)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	default:
		t.Fatalf("fill: no value for %s", v.Type())
	}
}

// wireEqual encodes a filled from, decodes it strictly into to, and checks
// that to encodes to the same JSON.
func wireEqual(t *testing.T, from, to any) {
	t.Helper()
	n := 0
	fill(t, reflect.ValueOf(from).Elem(), &n)
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(to); err != nil {
		t.Fatalf("%T does not decode as %T: %v\n%s", from, to, err, b)
	}
	back, err := json.Marshal(to)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, back) {
		t.Errorf("%T and %T encode differently:\n%s\n%s", from, to, b, back)
	}
}

// The proxy-peers method sends proxy.PeerInfo; ikefragctl reads
// control.ProxyPeer. Every field goes through both ways, with its name and
// its value.
func TestProxyPeerWire(t *testing.T) {
	wireEqual(t, &proxy.PeerInfo{}, &control.ProxyPeer{})
	wireEqual(t, &control.ProxyPeer{}, &proxy.PeerInfo{})
}

// stats names every counter class it sends, in the observer's order, so
// that ikefragctl needs no list of its own.
func TestStatsClasses(t *testing.T) {
	classes := counterClasses()
	if len(classes) == 0 || len(slices.Compact(slices.Sorted(slices.Values(classes)))) != len(classes) {
		t.Fatalf("classes %v: none, or one twice", classes)
	}
	var keys []string
	for k := range dirMap(new(ebpf.DirCounters)) {
		keys = append(keys, k)
	}
	if !slices.Equal(slices.Sorted(slices.Values(keys)), slices.Sorted(slices.Values(classes))) {
		t.Errorf("stats keys %v, classes %v", keys, classes)
	}
}

// stats sends control.EngineStats for diag.Stats: every engine counter
// arrives under its own name with its own value (a counter added to the
// engine and not to the wire fails here), and the wire has no counter the
// engine lacks but SessionsExpired (the pipeline's).
func TestEngineStatsWire(t *testing.T) {
	var st diag.Stats
	n := 0
	fill(t, reflect.ValueOf(&st).Elem(), &n)
	got := reflect.ValueOf(engineStats(st))
	from := reflect.ValueOf(st)
	for i := range from.NumField() {
		name := from.Type().Field(i).Name
		f := got.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("control.EngineStats has no %s (diag.Stats.%s)", name, name)
			continue
		}
		if f.Interface() != from.Field(i).Interface() {
			t.Errorf("EngineStats.%s = %v, diag.Stats.%s = %v", name, f.Interface(), name, from.Field(i).Interface())
		}
	}
	for i := range got.NumField() {
		name := got.Type().Field(i).Name
		if _, ok := from.Type().FieldByName(name); !ok && name != "SessionsExpired" {
			t.Errorf("control.EngineStats.%s mirrors nothing in diag.Stats", name)
		}
	}
}

// stats sends the proxy's TCP listener counters (proxy.TCPStats) as
// control.ProxyTCP: the two types encode alike, and the daemon's copy
// leaves no field behind.
func TestProxyTCPWire(t *testing.T) {
	wireEqual(t, &proxy.TCPStats{}, &control.ProxyTCP{})
	wireEqual(t, &control.ProxyTCP{}, &proxy.TCPStats{})
	var st proxy.TCPStats
	n := 0
	fill(t, reflect.ValueOf(&st).Elem(), &n)
	want, err := json.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(proxyTCP(&st))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("proxyTCP copies proxy.TCPStats as\n%s\nwant\n%s", got, want)
	}
	if proxyTCP(nil) != nil {
		t.Error("proxyTCP(nil) is not nil: a proxy without a TCP listener would show one")
	}
}
