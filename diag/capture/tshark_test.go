package capture

import (
	"bufio"
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAgainstTShark decodes every shared capture and compares each frame's
// IP and UDP fields with TShark's dissection (IP reassembly off). It is an
// independent decoder, so agreement on every frame is strong evidence.
func TestAgainstTShark(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tshark once per capture")
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	dir := sharedDir(t)
	var files []string
	for _, pat := range []string{"corpus/ike-pcaps/*.pcap*", "corpus/ike-pcaps/*.cap", "lab/pcaps/*.pcap"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Skip("no captures")
	}
	fields := []string{
		"frame.number", "ip.src", "ip.dst", "ip.id", "ip.flags.mf", "ip.flags.df", "ip.frag_offset",
		"ip.len", "ip.proto", "ipv6.src", "ipv6.dst", "ipv6.plen", "udp.srcport", "udp.dstport", "sll.ifindex",
	}
	args := []string{"-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
		"-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			out, err := exec.Command(tshark, append([]string{"-r", file}, args...)...).Output()
			if err != nil {
				t.Fatalf("tshark: %v", err)
			}
			want := map[int][]string{}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				col := strings.Split(sc.Text(), "\t")
				if len(col) != len(fields) {
					t.Fatalf("tshark line %q", sc.Text())
				}
				n, _ := strconv.Atoi(col[0])
				want[n] = col
			}
			pk, err := OpenPackets(file)
			if err != nil {
				t.Fatal(err)
			}
			defer pk.Close()
			seen := 0
			for {
				p, err := pk.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				seen++
				w := want[p.Frame]
				if w == nil {
					t.Fatalf("frame %d: not in tshark output", p.Frame)
				}
				check := func(name, got, want string) {
					if got != want {
						t.Errorf("frame %d: %s = %q, tshark says %q", p.Frame, name, got, want)
					}
				}
				if p.Version == 4 {
					check("src", p.Src.String(), w[1])
					check("dst", p.Dst.String(), w[2])
					check("id", "0x"+strconv.FormatUint(uint64(p.IPID)|0x10000, 16)[1:], w[3])
					check("mf", b01(p.MF), w[4])
					check("df", b01(p.DF), w[5])
					check("offset", strconv.Itoa(p.FragOffset/8), w[6])
					check("len", strconv.Itoa(p.IPLen), w[7])
					check("proto", strconv.Itoa(int(p.Proto)), w[8])
				} else {
					check("src", p.Src.String(), w[9])
					check("dst", p.Dst.String(), w[10])
					check("len", strconv.Itoa(p.IPLen-40), w[11])
				}
				if p.Proto == 17 && p.FragOffset == 0 {
					check("sport", strconv.Itoa(int(p.SrcPort)), w[12])
					check("dport", strconv.Itoa(int(p.DstPort)), w[13])
				}
				if w[14] != "" {
					check("ifindex", strconv.Itoa(p.Ifindex), w[14])
				}
			}
			// Frames tshark has no IP layer for are the skipped ones.
			noIP := 0
			for _, w := range want {
				if w[1] == "" && w[9] == "" {
					noIP++
				}
			}
			st := pk.Stats()
			if seen+noIP != len(want) || st.SkippedTotal() != noIP {
				t.Errorf("decoded %d, skipped %d; tshark: %d frames, %d without IP", seen, st.SkippedTotal(), len(want), noIP)
			}
		})
	}
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
