package deptest

import (
	"os/exec"
	"testing"
)

const mod = "github.com/ikefrag/ikefrag"

// The BPF loader: cilium/ebpf and the packages that load our programs.
var bpfLoader = []string{"github.com/cilium/ebpf/...", mod + "/ebpf/...", mod + "/netcfg/..."}

// rules are the architecture's import rules (README.md, "Layout").
var rules = []Rule{
	{
		Pkgs: mod + "/ike/...",
		Why:  "the IKE codec knows no I/O: it parses and builds bytes, and the daemon, the proxy, the CLI and the fuzzers hand them in",
		// Sockets, files, processes and the kernel. log/slog is allowed:
		// ike/sk logs through the caller's handler. Dependencies may
		// import these (crypto/x509 imports net and os).
		ForbidOwn: []string{"net", "net/http/...", "net/rpc/...", "net/smtp", "os", "os/...", "syscall",
			"io/fs", "io/ioutil", "path/filepath", "log", "log/syslog", "unsafe", "runtime/cgo", "plugin"},
		// Outside the standard library only the AEAD ciphers (and the
		// CPU feature probe they use) and the codec itself.
		NonStd: []string{mod + "/ike/...", "golang.org/x/crypto/...", "golang.org/x/sys/cpu"},
	},
	{
		Pkgs:   mod + "/diag/...",
		Why:    "diag judges observations, wherever they come from (a capture or the live observer): it knows neither the BPF loader nor the proxy",
		Forbid: append([]string{mod + "/proxy/...", "github.com/vishvananda/..."}, bpfLoader...),
	},
	{
		Pkgs:   mod + "/cmd/ikefragctl/...",
		Why:    "the CLI talks to the daemon over the control socket and reads captures: it links no BPF loader and no proxy (wire types live in cmd/internal/control)",
		Forbid: append([]string{mod + "/proxy/..."}, bpfLoader...),
	},
	{
		Pkgs:   mod + "/proxy",
		Why:    "the proxy relays and re-fragments on its own; the daemon hands it the diagnosis engine's path-MTU estimates as a function",
		Forbid: []string{mod + "/diag/..."},
	},
}

// Every rule holds for the packages as they are.
func TestArchitecture(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	for _, r := range rules {
		t.Run(r.Pkgs, func(t *testing.T) {
			pkgs, err := List(gocmd, r.Pkgs)
			if err != nil {
				t.Fatal(err)
			}
			stillPending := map[string]bool{}
			for _, v := range r.Check(pkgs) {
				if v.Pending != "" {
					t.Logf("pending: %v; to go: %s", v, v.Pending)
					for pat := range r.Pending {
						if Match(pat, v.Dep) {
							stillPending[pat] = true
						}
					}
					continue
				}
				t.Errorf("%v\n\t%s", v, r.Why)
			}
			for pat := range r.Pending {
				if !stillPending[pat] {
					t.Errorf("%s no longer depends on %s: remove it from the rule's Pending", r.Pkgs, pat)
				}
			}
		})
	}
}
