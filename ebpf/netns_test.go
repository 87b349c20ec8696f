package ebpf

import (
	"fmt"
	"os"
	"testing"

	"github.com/ikefrag/ikefrag/test/netns"
)

// lab is a set of network namespaces made by one test and removed by its
// cleanup, whatever the outcome (test/netns); traffic stays inside them.
type lab struct {
	*netns.Lab
	t *testing.T
}

func newLab(t *testing.T, names ...string) *lab {
	t.Helper()
	requireBPF(t)
	netns.RequireTools(t, "ip", "nft")
	return &lab{Lab: netns.New(t, fmt.Sprintf("ikf%d-", os.Getpid()%100000), names...), t: t}
}

func (l *lab) in(name string, args ...string) string { return l.In(name, args...) }
func (l *lab) do(name string, fn func())             { l.Do(name, fn) }
func (l *lab) veth(na, a, nb, b string)              { l.Veth(na, a, nb, b) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
