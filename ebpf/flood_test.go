package ebpf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// memlock returns the memory the kernel charges for map m, from fdinfo.
func memlock(t *testing.T, m *ebpf.Map) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no memlock in fdinfo")
	return ""
}

// A flood of distinct trains (one middle fragment each, so none ever
// completes) keeps the train map at its configured size: the LRU map is
// preallocated and evicts, and the evictions are accounted for.
func TestTrainFloodStaysAtCap(t *testing.T) {
	const size = 4096
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	h := newHarness(t, Options{TrainMapSize: size, TrainTimeout: time.Hour})
	before := memlock(t, h.o.trains)
	frame := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 0, off: 1480, mf: true}.build(make([]byte, 64)))
	for i := 0; i < n; i++ {
		// 16 bits of IP ID and 16 bits of source address: 2^32 keys.
		binary.BigEndian.PutUint16(frame[14+4:], uint16(i))
		binary.BigEndian.PutUint16(frame[14+14:], uint16(i>>16))
		h.run(frame)
	}
	if after := memlock(t, h.o.trains); after != before {
		t.Errorf("train map memory grew from %s to %s", before, after)
	}
	h.o.sweep(monoNow())
	s, err := h.o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	c := h.counters(0)
	started := c[CounterTrainsStarted].Packets
	fails := c[CounterLRUInsertFail].Packets
	if started+fails != uint64(n) || c[CounterFragMiddle].Packets != uint64(n) {
		t.Errorf("started %d + insert failures %d, middle fragments %d; want %d", started, fails, c[CounterFragMiddle].Packets, n)
	}
	if s.TrainsLive == 0 || s.TrainsLive > size {
		t.Errorf("live trains %d, cap %d", s.TrainsLive, size)
	}
	if s.TrainsEvicted != started-s.TrainsLive || s.TrainsEvicted < uint64(n-size) {
		t.Errorf("evicted %d, started %d, live %d", s.TrainsEvicted, started, s.TrainsLive)
	}
	t.Logf("%d trains: map memory %s bytes, live %d, evicted %d, insert failures %d", n, before, s.TrainsLive, s.TrainsEvicted, fails)
}
