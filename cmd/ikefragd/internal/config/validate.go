package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/keys"
)

// maxIfaceName is the longest interface name Linux takes (IFNAMSIZ 16,
// less the terminating NUL).
const maxIfaceName = 15

// Validate checks every value and returns one problem per bad one. It
// looks at nothing on the host but the group database (control.group).
func (c *Config) Validate() Problems {
	var ps Problems
	add := func(key, format string, a ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, a...)})
	}
	seen := map[string]bool{}
	for i, name := range c.Interfaces {
		key := fmt.Sprintf("interfaces[%d]", i)
		switch {
		case name == "":
			add(key, "empty interface name")
		case len(name) > maxIfaceName:
			add(key, "%q is longer than an interface name can be (%d bytes)", name, maxIfaceName)
		case strings.ContainsAny(name, "/: \t\n"):
			add(key, "%q is not an interface name (no '/', ':' or white space)", name)
		case seen[name]:
			add(key, "%q is listed twice", name)
		default:
			if _, err := path.Match(name, ""); err != nil {
				add(key, "%q is not a valid pattern: %v", name, err)
			}
		}
		seen[name] = true
	}
	port := func(key string, p int) {
		if p < 1 || p > 65535 {
			add(key, "%d is not a UDP port (1-65535)", p)
		}
	}
	port("ports.ike", c.Ports.IKE)
	port("ports.natt", c.Ports.NATT)
	if c.Ports.IKE == c.Ports.NATT {
		add("ports.natt", "%d is also ports.ike; IKE and NAT-T need different ports", c.Ports.NATT)
	}

	o := &c.Observe
	switch ebpf.AttachMode(o.AttachMode) {
	case ebpf.AttachAuto, ebpf.AttachTCX, ebpf.AttachTC:
	default:
		add("observe.attach_mode", "%q is not auto, tcx or tc", o.AttachMode)
	}
	rng := func(key string, v, lo, hi int, what string) {
		if v < lo || v > hi {
			add(key, "%d is outside %d-%d (%s)", v, lo, hi, what)
		}
	}
	rng("observe.train_map_size", o.TrainMapSize, 1, 1<<22, "fragment trains tracked at once")
	if o.FragmentTimeout != 0 && (o.FragmentTimeout < 100*time.Millisecond || o.FragmentTimeout > 10*time.Minute) {
		add("observe.fragment_timeout", "%v is outside 100ms-10m (0s means the kernel's net.ipv4.ipfrag_time)", o.FragmentTimeout)
	}
	rng("observe.capture_bytes", o.CaptureBytes, 64, ebpf.CaptureMax, "bytes of UDP payload per IKE datagram")
	rng("observe.large_ike", o.LargeIKE, 1, 65535, "IKE message length counted as large")
	if rb := o.RingBufferSize; rb < os.Getpagesize() || rb > 1<<30 || rb&(rb-1) != 0 {
		add("observe.ring_buffer_size", "%d is not a power of two between the page size (%d) and 1073741824", rb, os.Getpagesize())
	}
	rng("observe.max_interfaces", o.MaxInterfaces, 1, 255, "interfaces attached at once")
	rng("observe.record_queue", o.RecordQueue, 1, 1<<20, "observations queued for the diagnosis engine")
	if n := len(c.Interfaces); n > o.MaxInterfaces {
		add("interfaces", "%d interfaces listed but observe.max_interfaces is %d", n, o.MaxInterfaces)
	}

	d := &c.Diag
	if d.Settle < time.Second || d.Settle > time.Hour {
		add("diag.settle", "%v is outside 1s-1h", d.Settle)
	}
	if d.Idle < time.Minute || d.Idle > 24*time.Hour {
		add("diag.idle", "%v is outside 1m-24h", d.Idle)
	} else if d.Idle <= d.Settle {
		add("diag.idle", "%v must be longer than diag.settle (%v): sessions must settle before they are forgotten", d.Idle, d.Settle)
	}
	rng("diag.max_sessions", d.MaxSessions, 1, 1_000_000, "sessions kept")
	rng("diag.max_memory", d.MaxMemory, 1<<20, 1<<40, "bytes the diagnosis keeps of sessions")
	rng("diag.verdict_log_rate", d.VerdictLogRate, 1, 100000, "verdict log lines per second")

	if c.Metrics.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil || ap.Port() == 0 {
			add("metrics.listen", "%q is not an IP address and port like 127.0.0.1:9717 (\"\" turns metrics off)", c.Metrics.Listen)
		}
	}
	absPath := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			add(key, "is empty; an absolute path is needed")
		case p != "" && !filepath.IsAbs(p):
			add(key, "%q is not an absolute path", p)
		}
	}
	absPath("control.socket", c.Control.Socket, true)
	if g := c.Control.Group; g != "" {
		if _, err := control.LookupGroup(g); err != nil {
			add("control.group", "%q: no such group", g)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json", "journal":
	default:
		add("log.format", "%q is not auto, text, json or journal", c.Log.Format)
	}
	// The proxy checks its own section, when it is to run or names
	// backends; its messages start with the key.
	if c.Proxy.Enabled || len(c.Proxy.Backends) > 0 {
		ps = append(ps, proxyProblems(c.Proxy.Validate())...)
	}
	absPath("keys.strongswan_table", c.Keys.StrongswanTable, false)
	absPath("keys.socket", c.Keys.Socket, false)
	for i, u := range c.Keys.SocketPeerUIDs {
		if u < 0 {
			add("keys.socket_peer_uids", "[%d] %d is not a uid", i, u)
		}
	}
	if l := c.Keys.Listen; l.Address != "" {
		host, _, err := net.SplitHostPort(l.Address)
		if err != nil {
			add("keys.listen.address", "%q: want host:port", l.Address)
		}
		for i, cl := range l.Clients {
			if _, err := keys.ParseRemoteClient(cl); err != nil {
				add("keys.listen.clients", "[%d] %q: %v", i, cl, err)
			}
		}
		if l.TLS {
			absPath("keys.listen.cert", l.Cert, true)
			absPath("keys.listen.key", l.Key, true)
			absPath("keys.listen.client_ca", l.ClientCA, false)
			if len(l.Clients) == 0 {
				add("keys.listen.clients", "empty: the key listener would accept nobody")
			}
		} else if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() || err != nil && host != "localhost" {
			add("keys.listen.tls", "off is allowed only on a loopback address, not %q: keys would cross the network in clear", l.Address)
		}
	}
	if c.Keys.Socket != "" && c.Keys.Socket == c.Control.Socket {
		add("keys.socket", "%q is also control.socket", c.Keys.Socket)
	}
	return ps
}

// proxyProblems splits the proxy's joined validation errors, taking the
// key each message starts with.
func proxyProblems(err error) Problems {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var ps Problems
	for _, e := range errs {
		msg := e.Error()
		key, rest, ok := strings.Cut(msg, " ")
		key = strings.TrimSuffix(key, ":")
		if !ok || !strings.HasPrefix(key, "proxy") {
			key, rest = "proxy", msg
		}
		ps = append(ps, Problem{Key: key, Msg: strings.TrimSpace(rest)})
	}
	return ps
}
