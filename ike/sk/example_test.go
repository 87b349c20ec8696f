package sk_test

import (
	"fmt"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// The keyed path of the proxy: a server's IKE_AUTH response arrives (here
// as one 5 KB SK message), is verified and decrypted, and is cut again
// for a client whose path carries 576-byte IPv4 datagrams on the NAT-T
// port. A retransmission gets the same datagrams from the cache.
func Example() {
	suite := sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}
	sa, err := sk.NewSA(testKeys(suite, 1)) // in the daemon: keys.Source.Lookup(SPIi, SPIr)
	if err != nil {
		panic(err)
	}
	fromServer, _ := sa.Seal(benchMessage(), nil)

	r := sk.NewReassembler(sk.ReassemblerConfig{})
	res := r.Add(sa, fromServer)
	if res.Status != sk.StatusComplete {
		panic(res.Err)
	}
	f := sk.NewFragmenter(sk.FragmenterConfig{})
	client := sk.Target{MTU: 576, Marker: true}
	out, err := f.Fragment(sa, res.Message, client)
	if err != nil {
		panic(err)
	}
	largest := 0
	for _, d := range out.Datagrams {
		largest = max(largest, len(d)+client.Overhead()-ike.NonESPMarkerLen)
	}
	again, _ := f.Fragment(sa, res.Message, client)
	fmt.Printf("%d-byte message -> %d fragments, largest IP datagram %d bytes, retransmission identical: %v\n",
		len(fromServer), out.Total, largest, again == out)
	// Output: 5072-byte message -> 11 fragments, largest IP datagram 564 bytes, retransmission identical: true
}
