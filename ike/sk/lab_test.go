package sk_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/test/shared"
)

// labDir returns ../shared/lab beside the module root, or skips.
func labDir(t testing.TB) string {
	t.Helper()
	lab := filepath.Join(shared.Dir(t), "lab")
	if _, err := os.Stat(filepath.Join(lab, "pcaps")); err != nil {
		t.Skipf("lab captures not present in %s: %v", lab, err)
	}
	return lab
}

// labIKE is one IKE message from a lab capture.
type labIKE struct {
	frame    int
	outgoing bool // the copy mid forwarded (every packet appears twice)
	src, dst uint16
	marker   bool
	msg      []byte
}

// readLabIKE returns every IKE message of a lab capture, IPv4 fragments
// reassembled per (src, dst, ID, direction copy).
func readLabIKE(t testing.TB, path string) []labIKE {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	type fkey struct {
		src, dst [4]byte
		id       uint16
		out      bool
	}
	type piece struct {
		off  int
		data []byte
		last bool
	}
	trains := map[fkey][]piece{}
	var out []labIKE
	emit := func(frame int, outgoing bool, udp []byte) {
		if len(udp) < 8 {
			return
		}
		sp, dp := binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:])
		fr := ike.DefaultPorts.Classify(sp, dp, udp[8:])
		if fr.Kind != ike.KindIKE {
			return
		}
		out = append(out, labIKE{frame: frame, outgoing: outgoing, src: sp, dst: dp, marker: fr.Marker,
			msg: append([]byte(nil), fr.IKE...)})
	}
	for frame := 1; ; frame++ {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		sll, _ := p.Layer(layers.LayerTypeLinuxSLL2).(*layers.LinuxSLL2)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if sll == nil || ip == nil || ip.Protocol != layers.IPProtocolUDP {
			continue
		}
		outgoing := sll.PacketType == layers.LinuxSLL2PacketTypeOutgoing
		payload := ip.Payload
		more := ip.Flags&layers.IPv4MoreFragments != 0
		if !more && ip.FragOffset == 0 {
			emit(frame, outgoing, payload)
			continue
		}
		k := fkey{[4]byte(ip.SrcIP.To4()), [4]byte(ip.DstIP.To4()), ip.Id, outgoing}
		trains[k] = append(trains[k], piece{int(ip.FragOffset) * 8, append([]byte(nil), payload...), !more})
		ps := trains[k]
		sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
		var whole []byte
		complete := false
		for _, pc := range ps {
			if pc.off != len(whole) {
				break
			}
			whole = append(whole, pc.data...)
			if pc.last {
				complete = true
			}
		}
		if complete {
			delete(trains, k)
			emit(frame, outgoing, whole)
		}
	}
	return out
}

// labKeys parses results/<name>-keys.txt into a fresh SA.
func labKeys(t testing.TB, lab, name string) (ike.SPI, ike.SPI, *sk.SA) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lab, "results", name+"-keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := keys.ParseSaveKeysLine(b)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := sk.NewSA(&l.Keys)
	if err != nil {
		t.Fatal(err)
	}
	return l.SPIi, l.SPIr, sa
}

// exchange type numbers (RFC 7296 §3.1).
const (
	exIKEAuth = 35
)

// payload type numbers (RFC 7296 §3.2, RFC 7383).
var payloadAbbrev = map[ike.PayloadType]string{
	33: "SA", 34: "KE", 35: "IDi", 36: "IDr", 37: "CERT", 38: "CERTREQ", 39: "AUTH", 40: "Ni", 41: "N",
	42: "D", 43: "V", 44: "TSi", 45: "TSr", 46: "SK", 47: "CP", 48: "EAP", 53: "SKF",
}

func payloadSeq(ps []ike.Payload) []string {
	var out []string
	for _, p := range ps {
		n, ok := payloadAbbrev[p.Type]
		if !ok {
			n = p.Type.String()
		}
		out = append(out, n)
	}
	return out
}
