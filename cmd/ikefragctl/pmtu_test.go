package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pmtuLab builds h1 —(mtus[0])— r1 —(mtus[1])— r2 —(mtus[2])— h2 in
// namespaces of its own (addresses in 10.201.x.0/24 and fd01:x::/64 exist
// only there) and removes them when the test ends. IPv6 needs links of at
// least 1280 bytes, so v6 is only configured when every link allows it.
func pmtuLab(t *testing.T, mtus []string) (h1 string, h2v4, h2v6 string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 not installed")
	}
	p := fmt.Sprintf("pm%04x", rand.IntN(0xffff))
	ns := []string{p + "h1", p + "r1", p + "r2", p + "h2"}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for _, n := range ns {
			_ = exec.Command("ip", "netns", "del", n).Run()
		}
	})
	for _, n := range ns {
		run("ip", "netns", "add", n)
		run("ip", "-n", n, "link", "set", "lo", "up")
	}
	v6 := true
	for _, m := range mtus {
		v6 = v6 && m >= "1280" && len(m) == 4
	}
	for i := 0; i < 3; i++ {
		a, b := fmt.Sprintf("%sa%d", p, i), fmt.Sprintf("%sb%d", p, i)
		run("ip", "link", "add", a, "netns", ns[i], "type", "veth", "peer", "name", b, "netns", ns[i+1])
		for j, pair := range [][2]string{{ns[i], a}, {ns[i+1], b}} {
			run("ip", "-n", pair[0], "link", "set", pair[1], "mtu", mtus[i], "up")
			run("ip", "-n", pair[0], "addr", "add", fmt.Sprintf("10.201.%d.%d/24", i, j+1), "dev", pair[1])
			if v6 {
				run("ip", "-n", pair[0], "addr", "add", fmt.Sprintf("fd01:%d::%d/64", i, j+1), "dev", pair[1], "nodad")
			}
		}
	}
	for _, r := range ns[1:3] {
		run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	}
	// h1 → everything via r1; h2 → via r2; r1 → 10.201.2/24 via r2; r2 → 10.201.0/24 via r1.
	run("ip", "-n", ns[0], "route", "add", "default", "via", "10.201.0.2")
	run("ip", "-n", ns[3], "route", "add", "default", "via", "10.201.2.1")
	run("ip", "-n", ns[1], "route", "add", "10.201.2.0/24", "via", "10.201.1.2")
	run("ip", "-n", ns[2], "route", "add", "10.201.0.0/24", "via", "10.201.1.1")
	if !v6 {
		return ns[0], "10.201.2.2", ""
	}
	run("ip", "-n", ns[0], "-6", "route", "add", "default", "via", "fd01:0::2")
	run("ip", "-n", ns[3], "-6", "route", "add", "default", "via", "fd01:2::1")
	run("ip", "-n", ns[1], "-6", "route", "add", "fd01:2::/64", "via", "fd01:1::2")
	run("ip", "-n", ns[2], "-6", "route", "add", "fd01:0::/64", "via", "fd01:1::1")
	return ns[0], "10.201.2.2", "fd01:2::2"
}

func TestPMTUProbeFindsNarrowestLink(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ikefragctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	t.Run("IPv4 1500-1280-1000", func(t *testing.T) {
		h1, v4, _ := pmtuLab(t, []string{"1500", "1280", "1000"})
		checkPMTU(t, bin, h1, v4, 1000)
	})
	t.Run("IPv6 1500-1450-1400", func(t *testing.T) {
		h1, _, v6 := pmtuLab(t, []string{"1500", "1450", "1400"})
		checkPMTU(t, bin, h1, v6, 1400)
	})
}

func checkPMTU(t *testing.T, bin, h1, dst string, want int) {
	t.Helper()
	{
		out, err := exec.Command("ip", "netns", "exec", h1, bin, "pmtu", "--json", "--timeout", "300ms", dst).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("pmtu %s: %v\n%s%s", dst, err, out, stderr)
		}
		var rep pmtuReport
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if rep.PathMTU != want || rep.IfMTU != 1500 {
			t.Errorf("%s: path MTU %d (interface %d), want %d; steps %v", dst, rep.PathMTU, rep.IfMTU, want, rep.Steps)
		}
		// The routers' ICMP errors name the middle link first, then the last.
		if rep.TooBig != want {
			t.Errorf("%s: smallest ICMP too-big MTU %d, want %d", dst, rep.TooBig, want)
		}
		hdr := 20
		if strings.Contains(dst, ":") {
			hdr = 40
		}
		if rep.MaxIKE4500 != want-hdr-8-4 {
			t.Errorf("%s: max IKE on 4500 %d", dst, rep.MaxIKE4500)
		}
	}
}
