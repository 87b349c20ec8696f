package kfeat

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// release returns the running kernel's major and minor version.
func release(t *testing.T) (int, int) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	s := unix.ByteSliceToString(u.Release[:])
	if n, _ := fmt.Sscanf(s, "%d.%d", &major, &minor); n < 2 {
		t.Fatalf("cannot parse kernel release %q", s)
	}
	return major, minor
}

// Each probe must agree with the kernel version it is documented for: a
// probe that is wrong in either direction would pick the wrong program
// variant silently.
func TestProbesMatchKernelVersion(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF) to load probe programs")
	}
	major, minor := release(t)
	at := func(maj, min int) bool { return major > maj || (major == maj && minor >= min) }
	for _, c := range []struct {
		name     string
		probe    func() error
		maj, min int
	}{
		{"tcx", TCX, 6, 6},
		{"fetch atomics", FetchAtomics, 5, 12},
		{"check_mtu", CheckMTU, 5, 12},
		{"drop reasons", DropReasons, 5, 17},
	} {
		err := c.probe()
		if err != nil && !IsMissing(err) {
			t.Errorf("%s: probe failed: %v", c.name, err)
			continue
		}
		if want := at(c.maj, c.min); want != (err == nil) {
			t.Errorf("%s on %d.%d: probe says %v, the kernel version says available=%v", c.name, major, minor, err, want)
		}
	}
	if err := Memlock(); err != nil {
		t.Errorf("memlock: %v", err)
	}
	t.Logf("%d.%d: %s", major, minor, Probe())
}
