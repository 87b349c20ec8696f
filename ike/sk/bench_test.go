package sk_test

import (
	"runtime"
	"syscall"
	"testing"

	"github.com/ikefrag/ikefrag/ike/sk"
)

var benchSuites = []struct {
	name string
	s    sk.Suite
}{
	{"AES-CBC-256+HMAC-SHA2-256-128", sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}},
	{"AES-GCM-16-256", sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 256}},
}

// threadCPU reports the CPU time the benchmark loop's OS thread used per
// iteration as "cpu-ns/op": on a shared, loaded machine wall-clock ns/op
// includes time spent waiting for a core, this does not.
func threadCPU(b *testing.B) func() {
	runtime.LockOSThread()
	start := cpuNow()
	return func() {
		used := cpuNow() - start
		runtime.UnlockOSThread()
		b.ReportMetric(float64(used)/float64(b.N), "cpu-ns/op")
	}
}

func cpuNow() int64 {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchMessage is a 5 KB IKE_AUTH response, the size of the lab's.
func benchMessage() *sk.Decrypted {
	return &sk.Decrypted{Header: testHeader(false, true, 1), Inner: 36, Payloads: testPayloads(5000, 1)}
}

// Re-fragmenting a decrypted 5 KB IKE_AUTH into 576-byte IPv4 NAT-T
// datagrams: fresh IVs from crypto/rand, sealing, framing (what the
// Fragmenter does on a cache miss).
func BenchmarkRefragment576(b *testing.B) {
	for _, bs := range benchSuites {
		b.Run(bs.name, func(b *testing.B) {
			sa := mustSA(b, testKeys(bs.s, 1))
			d := benchMessage()
			tg := sk.Target{MTU: 576, Marker: true}
			b.ReportAllocs()
			b.SetBytes(int64(len(d.Payloads)))
			done := threadCPU(b)
			for b.Loop() {
				out, err := sa.Split(d, tg, 0, nil)
				if err != nil || out.Total != 11 {
					b.Fatal(err)
				}
			}
			done()
		})
	}
}

// The whole proxy path for one message that arrived as one SK datagram:
// verify and decrypt it, then re-fragment at 576.
func BenchmarkOpenAndRefragment576(b *testing.B) {
	for _, bs := range benchSuites {
		b.Run(bs.name, func(b *testing.B) {
			sa := mustSA(b, testKeys(bs.s, 1))
			msg, err := sa.Seal(benchMessage(), nil)
			if err != nil {
				b.Fatal(err)
			}
			tg := sk.Target{MTU: 576, Marker: true}
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			done := threadCPU(b)
			defer done()
			for b.Loop() {
				o, err := sa.Open(msg)
				if err != nil {
					b.Fatal(err)
				}
				d, _ := o.Decrypted()
				if _, err := sa.Split(d, tg, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A retransmission answered from the Fragmenter's cache (digest of the
// message plus a map lookup).
func BenchmarkFragmenterCacheHit(b *testing.B) {
	sa := mustSA(b, testKeys(benchSuites[1].s, 1))
	f := sk.NewFragmenter(sk.FragmenterConfig{})
	d := benchMessage()
	tg := sk.Target{MTU: 576, Marker: true}
	if _, err := f.Fragment(sa, d, tg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	done := threadCPU(b)
	defer done()
	for b.Loop() {
		if _, err := f.Fragment(sa, d, tg); err != nil {
			b.Fatal(err)
		}
	}
}
