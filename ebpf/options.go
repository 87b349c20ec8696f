package ebpf

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/netcfg"
)

// AttachMode selects how the tc programs are attached: tcx links where
// the kernel has them (6.6 and later; the kernel removes them when the
// process dies), or a clsact qdisc with cls_bpf filters named with
// FilterPrefix, which outlive the process and whose stale copies are
// removed at attach time.
type AttachMode = netcfg.TCMode

const (
	AttachAuto = netcfg.TCAuto   // tcx, else tc
	AttachTCX  = netcfg.TCX      // tcx only
	AttachTC   = netcfg.TCLegacy // clsact + cls_bpf
)

// FilterPrefix names the legacy tc filters this package installs, so
// that filters left behind by a crashed run can be recognised and removed.
const FilterPrefix = "ikefrag"

// CaptureMax is the largest UDP payload prefix one event can carry: the
// compiled-in size of the BPF scratch buffer (CAPTURE_MAX, generated).
const CaptureMax = int(tcLimitCAPTURE_MAX)

// Options configures the observer. The zero value of every field means its
// documented default.
type Options struct {
	// IKEPort and NATTPort are the UDP ports classified as IKE and as
	// NAT-T (IKE after a non-ESP marker, ESP-in-UDP, keepalives).
	// Defaults 500 and 4500.
	IKEPort  uint16
	NATTPort uint16
	// CaptureBytes is how many bytes of UDP payload (the non-ESP marker
	// included) each IKE datagram record carries. Default 1500, enough for
	// a whole IKE_SA_INIT on a 1500-byte path; at most CaptureMax.
	CaptureBytes int
	// LargeIKE is the IKE message length above which a message is counted
	// as large (CounterLargeIKE). Default 1280.
	LargeIKE int
	// TrainTimeout is how long a fragment train may stay incomplete before
	// it is reported as incomplete. Default: the kernel's
	// net.ipv4.ipfrag_time (30 s when unreadable).
	TrainTimeout time.Duration
	// TrainMapSize is the number of fragment trains tracked at once (LRU
	// map entries; memory is preallocated). Default 8192.
	TrainMapSize int
	// RingBufferSize is the size of the BPF ring buffer in bytes, a power of
	// two and a multiple of the page size. Default 1 MiB.
	RingBufferSize int
	// MaxInterfaces is the number of interfaces that can be attached at
	// once (counter slots). Default 16, at most 255.
	MaxInterfaces int
	// AttachMode is auto (default), tcx or tc.
	AttachMode AttachMode
	// NoDrops disables the kfree_skb drop reporter.
	NoDrops bool
	// AllNamespaces keeps drop records of network namespaces that no
	// observed interface is in (marked OtherNetns); by default they are
	// only counted (Snapshot.DropsOtherNetns).
	AllNamespaces bool
	// build, when set, replaces the probe's choice of program build (the
	// package's tests run the compat build on every kernel).
	build Build
	// RecordQueue is the capacity of the Records channel; records that do
	// not fit are counted and dropped rather than stalling the reader.
	// Default 4096.
	RecordQueue int
	// Logger receives the few operational messages (feature fallbacks).
	// Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.IKEPort == 0 {
		o.IKEPort = 500
	}
	if o.NATTPort == 0 {
		o.NATTPort = 4500
	}
	if o.CaptureBytes == 0 {
		o.CaptureBytes = 1500
	}
	if o.CaptureBytes < 0 || o.CaptureBytes > CaptureMax {
		return o, fmt.Errorf("capture bytes %d outside 1..%d", o.CaptureBytes, CaptureMax)
	}
	if o.LargeIKE == 0 {
		o.LargeIKE = 1280
	}
	if o.LargeIKE < 0 {
		return o, fmt.Errorf("large IKE threshold %d is negative", o.LargeIKE)
	}
	if o.TrainTimeout == 0 {
		o.TrainTimeout = kernelFragTimeout()
	}
	if o.TrainTimeout < 0 {
		return o, fmt.Errorf("train timeout %v is negative", o.TrainTimeout)
	}
	if o.TrainMapSize == 0 {
		o.TrainMapSize = 8192
	}
	if o.TrainMapSize < 1 || o.TrainMapSize > 1<<22 {
		return o, fmt.Errorf("train map size %d outside 1..%d", o.TrainMapSize, 1<<22)
	}
	if o.RingBufferSize == 0 {
		o.RingBufferSize = 1 << 20
	}
	page := os.Getpagesize()
	if o.RingBufferSize < page || o.RingBufferSize&(o.RingBufferSize-1) != 0 || o.RingBufferSize > 1<<30 {
		return o, fmt.Errorf("ring buffer size %d is not a power of two between the page size and 1 GiB", o.RingBufferSize)
	}
	if o.MaxInterfaces == 0 {
		o.MaxInterfaces = 16
	}
	if o.MaxInterfaces < 1 || o.MaxInterfaces > 255 {
		return o, fmt.Errorf("max interfaces %d outside 1..255", o.MaxInterfaces)
	}
	var err error
	if o.AttachMode, err = o.AttachMode.Resolve(); err != nil {
		return o, err
	}
	if o.RecordQueue == 0 {
		o.RecordQueue = 4096
	}
	if o.RecordQueue < 1 {
		return o, fmt.Errorf("record queue %d is not positive", o.RecordQueue)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// kernelFragTimeout reads net.ipv4.ipfrag_time, the time the kernel keeps
// an incomplete reassembly queue: a train older than that can no longer
// complete on this host.
func kernelFragTimeout() time.Duration {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ipfrag_time")
	if err == nil {
		if s, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && s > 0 {
			return time.Duration(s) * time.Second
		}
	}
	return 30 * time.Second
}
