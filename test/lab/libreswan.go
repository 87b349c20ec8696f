package lab

// A libreswan (pluto) IKEv2 initiator on cli, for interoperability:
// RFC 9329 (IKE and ESP over TCP, enable-tcp) above all, which strongSwan
// does not implement. It authenticates with a pre-shared key; the server
// charon takes the same key (Charon.PSK).
//
// pluto runs from Debian's libreswan package, with every path of its own
// (configuration, secrets, NSS database, run directory with pid file and
// control socket, log) in the instance directory, so labs run side by
// side. libreswan has no user-space ESP: it installs CHILD SAs in the
// kernel (XFRM), and over TCP it needs the kernel's espintcp (TCP_ULP
// "espintcp", CONFIG_INET_ESPINTCP, which needs CONFIG_INET_ESP) from the
// moment the stream opens. EspInTCP reports whether this kernel has it.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PlutoBin is libreswan's IKE daemon as Debian installs it.
const PlutoBin = "/usr/libexec/ipsec/pluto"

// LabPSK is the pre-shared key of libreswan labs (test material only).
const LabPSK = "ikefrag-lab-psk-not-a-secret"

// RequireLibreswan skips the test unless pluto, ipsec and certutil are
// installed (Debian: libreswan, libnss3-tools).
func RequireLibreswan(t interface {
	Helper()
	Skipf(string, ...any)
}) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"ipsec", "certutil"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if _, err := os.Stat(PlutoBin); err != nil {
		missing = append(missing, PlutoBin)
	}
	if len(missing) > 0 {
		t.Skipf("lab: missing %s (Debian: libreswan libnss3-tools)", strings.Join(missing, ", "))
	}
}

// EspInTCP reports whether the running kernel accepts the espintcp upper
// layer protocol on a TCP socket (RFC 9329 in the kernel), which libreswan
// needs for enable-tcp; the error says what failed.
func EspInTCP() (bool, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false, err
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return false, err
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, 31 /* TCP_ULP */, "espintcp")
	}); err != nil {
		return false, err
	}
	if serr != nil {
		return false, fmt.Errorf("setsockopt(TCP_ULP, \"espintcp\"): %w", serr)
	}
	return true, nil
}

// Libreswan configures a pluto initiator on cli.
type Libreswan struct {
	// RemoteAddr is where it sends IKE (a proxy on gw); default srv's
	// address.
	RemoteAddr netip.Addr
	// EnableTCP is libreswan's enable-tcp: "no" (default), "yes" (TCP
	// only) or "fallback" (UDP first). TCPRemotePort is tcp-remoteport
	// (default 4500).
	EnableTCP     string
	TCPRemotePort int
	// Proposals and ESPProposals in libreswan's syntax; defaults match
	// Charon's ("aes256-sha2_256-modp3072", "aes256-sha2_256").
	Proposals, ESPProposals string
	// RetransmitTimeout is how long an exchange is retried in all
	// (retransmit-timeout); default 20 s.
	RetransmitTimeout time.Duration
}

// Pluto is a running libreswan daemon.
type Pluto struct {
	Config Libreswan
	Node   *Node
	// Dir holds ipsec.conf, ipsec.secrets, nss/, run/ and pluto.log.
	Dir string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// plutoConn is the connection's name.
const plutoConn = "lab"

func (c *Libreswan) defaults(l *Lab) {
	if !c.RemoteAddr.IsValid() {
		c.RemoteAddr = l.Srv.Addr4
	}
	if c.EnableTCP == "" {
		c.EnableTCP = "no"
	}
	if c.TCPRemotePort == 0 {
		c.TCPRemotePort = 4500
	}
	if c.Proposals == "" {
		c.Proposals = "aes256-sha2_256-modp3072"
	}
	if c.ESPProposals == "" {
		c.ESPProposals = "aes256-sha2_256"
	}
	if c.RetransmitTimeout == 0 {
		c.RetransmitTimeout = 20 * time.Second
	}
}

// ipsecConf renders the configuration.
func (p *Pluto) ipsecConf(l *Lab) string {
	c := p.Config
	var b strings.Builder
	f := func(s string, a ...any) { fmt.Fprintf(&b, s+"\n", a...) }
	f("config setup")
	f("\tlogfile=%s", p.Log())
	f("\tlogappend=no")
	f("\tplutodebug=base")
	f("")
	f("conn %s", plutoConn)
	f("\tikev2=insist")
	f("\tauthby=secret")
	f("\tleft=%s", l.Cli.Addr4)
	f("\tleftid=@%s", ID(Client))
	f("\tleftsubnet=%s", l.Cli.InnerNet4)
	f("\tright=%s", c.RemoteAddr)
	f("\trightid=@%s", ID(Server))
	f("\trightsubnet=%s", l.Srv.InnerNet4)
	f("\tike=%s", c.Proposals)
	f("\tesp=%s", c.ESPProposals)
	f("\tfragmentation=yes")
	f("\tenable-tcp=%s", c.EnableTCP)
	f("\ttcp-remoteport=%d", c.TCPRemotePort)
	f("\tretransmit-interval=500")
	f("\tretransmit-timeout=%ds", int(c.RetransmitTimeout.Seconds()))
	f("\tauto=add")
	return b.String()
}

// StartLibreswan writes the configuration, creates the NSS database,
// starts pluto in cli and loads the connection; pluto is stopped in
// t.Cleanup, its log printed first when the test failed.
func (l *Lab) StartLibreswan(cfg Libreswan) *Pluto {
	l.t.Helper()
	cfg.defaults(l)
	l.mu.Lock()
	l.seq++
	dir := filepath.Join(l.Dir, fmt.Sprintf("pluto%d", l.seq))
	l.mu.Unlock()
	p := &Pluto{Config: cfg, Node: l.Cli, Dir: dir}
	err := p.start(l)
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("lab: last lines of pluto log (%s):\n%s", p.Log(), tail(p.Log(), 60))
		}
		p.Stop()
	})
	if err != nil {
		l.t.Fatalf("lab: starting pluto: %v", err)
	}
	return p
}

func (p *Pluto) start(l *Lab) error {
	for _, sub := range []string{"nss", "run", "ipsec.d"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, sub), 0o700); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(p.Dir, "ipsec.conf"), []byte(p.ipsecConf(l)), 0o600); err != nil {
		return err
	}
	secrets := fmt.Sprintf("@%s @%s : PSK %q\n", ID(Client), ID(Server), LabPSK)
	if err := writeFile(p.secrets(), []byte(secrets), 0o600); err != nil {
		return err
	}
	if _, err := run(context.Background(), "certutil", "-N", "-d", "sql:"+filepath.Join(p.Dir, "nss"), "--empty-password"); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(p.Dir, "pluto.out"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("ip", "netns", "exec", p.Node.Name, PlutoBin, "--nofork",
		"--config", filepath.Join(p.Dir, "ipsec.conf"), "--secretsfile", p.secrets(),
		"--rundir", filepath.Join(p.Dir, "run"), "--nssdir", filepath.Join(p.Dir, "nss"),
		"--ipsecdir", filepath.Join(p.Dir, "ipsec.d"), "--logfile", p.Log())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err := os.Stat(p.ctl()); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case <-p.done:
			return fmt.Errorf("pluto exited (%v): %s %s", p.waitErr, tail(filepath.Join(p.Dir, "pluto.out"), 20), tail(p.Log(), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no pluto control socket after 15 s: %s", tail(p.Log(), 20))
		}
	}
	_, err = p.Node.Run(context.Background(), "ipsec", "addconn", "--ctlsocket", p.ctl(),
		"--config", filepath.Join(p.Dir, "ipsec.conf"), plutoConn)
	return err
}

func (p *Pluto) ctl() string     { return filepath.Join(p.Dir, "run", "pluto.ctl") }
func (p *Pluto) secrets() string { return filepath.Join(p.Dir, "ipsec.secrets") }

// Log is pluto's log file.
func (p *Pluto) Log() string { return filepath.Join(p.Dir, "pluto.log") }

// Whack runs `ipsec whack` against this pluto.
func (p *Pluto) Whack(ctx context.Context, args ...string) (string, error) {
	return p.Node.Run(ctx, "ipsec", append([]string{"whack", "--ctlsocket", p.ctl()}, args...)...)
}

// Initiate brings the connection up and waits for the outcome (whack
// returns when the IKE SA and CHILD SA are established or the attempt
// failed); ok reports success, out is whack's account of it.
func (p *Pluto) Initiate(ctx context.Context) (ok bool, out string, err error) {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Config.RetransmitTimeout+30*time.Second)
		defer cancel()
	}
	out, err = p.Whack(ctx, "--name", plutoConn, "--initiate")
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return false, out, err
	}
	ike, child, serr := p.Established(context.Background())
	if serr != nil {
		return false, out, serr
	}
	return ike && child, out, nil
}

// Established reports whether pluto has an established IKE SA and CHILD
// SA (`whack --showstates`).
func (p *Pluto) Established(ctx context.Context) (ike, child bool, err error) {
	out, err := p.Whack(ctx, "--showstates")
	if err != nil {
		return false, false, err
	}
	return strings.Contains(out, "ESTABLISHED_IKE_SA"), strings.Contains(out, "ESTABLISHED_CHILD_SA"), nil
}

// Stop terminates pluto (SIGTERM, SIGKILL after 5 s) and waits for it.
func (p *Pluto) Stop() {
	p.stopOnce.Do(func() {
		if p.cmd == nil {
			return
		}
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}
