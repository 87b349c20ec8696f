package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Role is the part a charon plays: the client (initiator, in cli) or the
// server (responder, in srv).
type Role string

const (
	// Client initiates from cli.
	Client Role = "cli"
	// Server responds in srv.
	Server Role = "srv"
)

// Peer is the other role.
func (r Role) Peer() Role {
	if r == Client {
		return Server
	}
	return Client
}

// Charon configures one strongSwan daemon. Zero values mean the defaults in
// the comments.
type Charon struct {
	Role Role
	// Proposals is the IKE proposal; default "aes256-sha256-modp3072".
	// Other tested ones: "aes256gcm16-prfsha256-ecp256",
	// "3des-sha1-modp2048".
	Proposals string
	// ESPProposals is the CHILD_SA proposal; default "aes256-sha256".
	ESPProposals string
	// Fragmentation is swanctl's fragmentation setting: yes (default), no,
	// accept or force.
	Fragmentation string
	// FragmentSize is charon.fragment_size; 0 keeps strongSwan's default
	// (1280).
	FragmentSize int
	// SaveKeys loads the save-keys plugin (built on first use by
	// strongswan-save-keys.sh), which writes KeysFile and ESPKeysFile.
	SaveKeys bool
	// KeyFeed loads the ikefrag-keys plugin (keys/strongswan-plugin, built
	// on first use and cached) with charon.plugins.ikefrag-keys.socket set
	// to this path: charon sends every IKE SA's keys to ikefragd's key
	// socket there. Without KeyFeedPluginDir the plugin is preloaded
	// (LD_PRELOAD) and named in charon's static load list.
	KeyFeed string
	// KeyFeedPluginDir loads the plugin the way a packaged install does:
	// from charon's plugin directory (a private copy bind-mounted over
	// /usr/lib/ipsec/plugins for this charon only) with load_modular and
	// charon.plugins.<name>.load = yes for each plugin.
	KeyFeedPluginDir bool
	// KeyFeedUser is charon.plugins.ikefrag-keys.user (default: root).
	KeyFeedUser string
	// KeyFeedQueue is charon.plugins.ikefrag-keys.queue (default 4096).
	KeyFeedQueue int
	// Retransmission; defaults 3 tries, 2.0 s timeout, base 1.5, so a lost
	// exchange fails after about 16 s instead of strongSwan's 165 s.
	RetransmitTries   int
	RetransmitTimeout float64
	RetransmitBase    float64
	// Port and PortNATT are the local IKE ports (default 500 and 4500);
	// RemotePort is the port the client sends to (default 500).
	Port, PortNATT, RemotePort int
	// RemoteAddr (client only) is where the client sends IKE, e.g. a proxy
	// on gw; default srv's address.
	RemoteAddr netip.Addr
	// IPv6 makes the client use srv's IPv6 address (Topology.IPv6 needed).
	IPv6 bool
	// Extra is added verbatim inside the charon section of strongswan.conf.
	Extra string
	// RemoteID overrides the identity expected of the peer (default: the
	// peer's certificate identity). A wrong one makes authentication fail.
	RemoteID string
	// PSK, when set, authenticates both ends with this pre-shared key
	// instead of certificates (identities stay ID(role)): what the
	// libreswan client (libreswan.go) uses.
	PSK string
}

// Daemon is a running charon.
type Daemon struct {
	// Config is the configuration with defaults filled in.
	Config Charon
	Node   *Node
	// Dir holds strongswan.conf, swanctl/, keys/, charon.log and the vici
	// socket.
	Dir string

	lab      *Lab
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// connName is the name of the IKE connection and of its CHILD_SA.
const connName = "lab"

// Plugins charon loads. kernel-libipsec provides ESP in user space;
// openssl covers 3DES, ECDSA and the ECP groups.
const charonPlugins = "random nonce openssl pem pkcs1 pkcs8 x509 constraints pubkey sha1 sha2 hmac aes gcm kdf curve25519 kernel-libipsec kernel-netlink socket-default vici"

const swanctlPlugins = "random nonce openssl pem pkcs1 pkcs8 x509 pubkey sha1 sha2"

func (c *Charon) defaults() {
	if c.Proposals == "" {
		c.Proposals = "aes256-sha256-modp3072"
	}
	if c.ESPProposals == "" {
		c.ESPProposals = "aes256-sha256"
	}
	if c.Fragmentation == "" {
		c.Fragmentation = "yes"
	}
	if c.RetransmitTries == 0 {
		c.RetransmitTries = 3
	}
	if c.RetransmitTimeout == 0 {
		c.RetransmitTimeout = 2.0
	}
	if c.RetransmitBase == 0 {
		c.RetransmitBase = 1.5
	}
}

// StartCharon writes the configuration, starts charon in the role's
// namespace and loads credentials and the connection. The daemon is stopped
// in t.Cleanup; when the test failed, the end of its log is printed first.
func (l *Lab) StartCharon(cfg Charon) *Daemon {
	l.t.Helper()
	d, err := l.startCharon(cfg)
	l.stopAtCleanup(d)
	if err != nil {
		l.t.Fatalf("lab: starting %s charon: %v", cfg.Role, err)
	}
	return d
}

func (l *Lab) stopAtCleanup(d *Daemon) {
	if d == nil {
		return
	}
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("lab: last lines of %s charon log (%s):\n%s", d.Config.Role, d.Log(), tail(d.Log(), 60))
		}
		if err := d.Stop(); err != nil {
			l.t.Logf("lab: stopping %s charon: %v", d.Config.Role, err)
		}
	})
}

// StartPair starts the server and the client charon (at the same time: each
// takes a moment to load plugins and an RSA key).
func (l *Lab) StartPair(cli, srv Charon) (client, server *Daemon) {
	l.t.Helper()
	cli.Role, srv.Role = Client, Server
	var cerr, serr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); server, serr = l.startCharon(srv) }()
	go func() { defer wg.Done(); client, cerr = l.startCharon(cli) }()
	wg.Wait()
	l.stopAtCleanup(server)
	l.stopAtCleanup(client)
	if serr != nil {
		l.t.Fatalf("lab: starting srv charon: %v", serr)
	}
	if cerr != nil {
		l.t.Fatalf("lab: starting cli charon: %v", cerr)
	}
	return client, server
}

func (l *Lab) startCharon(cfg Charon) (*Daemon, error) {
	cfg.defaults()
	var node *Node
	switch cfg.Role {
	case Client:
		node = l.Cli
	case Server:
		node = l.Srv
	default:
		return nil, fmt.Errorf("role %q: want lab.Client or lab.Server", cfg.Role)
	}
	if cfg.IPv6 && !l.topo.IPv6 {
		return nil, errors.New("Charon.IPv6 needs Topology.IPv6")
	}
	pki, err := l.loadPKI()
	if err != nil {
		return nil, err
	}
	var preloads []string
	if cfg.SaveKeys {
		p, err := saveKeysPlugin()
		if err != nil {
			return nil, err
		}
		preloads = append(preloads, p)
	}
	keysSO := ""
	if cfg.KeyFeed != "" {
		if keysSO, err = keyFeedPlugin(); err != nil {
			return nil, err
		}
		if !cfg.KeyFeedPluginDir {
			preloads = append(preloads, keysSO)
		}
	}
	preload := strings.Join(preloads, " ")

	l.mu.Lock()
	l.seq++
	dir := filepath.Join(l.Dir, fmt.Sprintf("%s%d", cfg.Role, l.seq))
	l.mu.Unlock()
	d := &Daemon{Config: cfg, Node: node, Dir: dir, lab: l}
	if err := d.writeConfig(pki); err != nil {
		return nil, err
	}
	pluginDir := ""
	if cfg.KeyFeed != "" && cfg.KeyFeedPluginDir {
		if pluginDir, err = d.pluginDir(keysSO); err != nil {
			return d, err
		}
	}
	if err := d.start(preload, pluginDir); err != nil {
		return d, err
	}
	if out, err := d.Swanctl(context.Background(), "--load-all", "--file", filepath.Join(dir, "swanctl", "swanctl.conf")); err != nil {
		return d, fmt.Errorf("loading configuration: %w", err)
	} else {
		_ = os.WriteFile(filepath.Join(dir, "load.log"), []byte(out), 0o600)
	}
	return d, nil
}

func (l *Lab) loadPKI() (*PKI, error) {
	l.mu.Lock()
	p := l.pki
	l.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := loadPKI(l.topo.PKI)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.pki = p
	l.mu.Unlock()
	return p, nil
}

func (d *Daemon) vici() string { return filepath.Join(d.Dir, "charon.vici") }

// KeysFile is save-keys' IKEv2 table (Wireshark's ikev2_decryption_table
// format); it gains a line per IKE SA once IKE_SA_INIT completed.
func (d *Daemon) KeysFile() string { return filepath.Join(d.Dir, "keys", "ikev2_decryption_table") }

// ESPKeysFile is save-keys' CHILD_SA table (Wireshark's esp_sa format).
func (d *Daemon) ESPKeysFile() string { return filepath.Join(d.Dir, "keys", "esp_sa") }

// Log is charon's log file (ike and net at level 2).
func (d *Daemon) Log() string { return filepath.Join(d.Dir, "charon.log") }

// IKEKeys reads KeysFile.
func (d *Daemon) IKEKeys() ([]IKEKeys, error) { return ReadIKEKeys(d.KeysFile()) }

// addrs returns local_addrs and remote_addrs for swanctl.conf.
func (d *Daemon) addrs() (local, remote string) {
	l, c := d.lab, d.Config
	if c.Role == Server {
		// Any client address: behind a proxy the requests come from gw.
		local = l.Srv.Addr4.String()
		if l.Srv.Addr6.IsValid() {
			local += ", " + l.Srv.Addr6.String()
		}
		return local, "%any"
	}
	dst := c.RemoteAddr
	if !dst.IsValid() {
		dst = l.Srv.Addr4
		if c.IPv6 {
			dst = l.Srv.Addr6
		}
	}
	src := l.Cli.Addr4
	if dst.Is6() {
		src = l.Cli.Addr6
	}
	return src.String(), dst.String()
}

func selectors(n *Node) string {
	s := n.InnerNet4.String()
	if n.InnerNet6.IsValid() {
		s += ", " + n.InnerNet6.String()
	}
	return s
}

// strongswanConf renders the per-instance strongswan.conf.
func (d *Daemon) strongswanConf(saveKeys bool) string {
	c := d.Config
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	plugins := charonPlugins
	if saveKeys {
		plugins += " save-keys"
	}
	if c.KeyFeed != "" {
		plugins += " ikefrag-keys"
	}
	p("# lab %s charon in %s", c.Role, d.Node.Name)
	p("charon {")
	// An explicit list: nothing loads that could fetch CRLs, talk to a TPM
	// or install kernel ESP states this kernel lacks.
	if c.KeyFeed != "" && c.KeyFeedPluginDir {
		// the packaged way: each plugin's own load setting (below)
		p("\tload_modular = yes")
	} else {
		p("\tload_modular = no")
		p("\tload = %s", plugins)
	}
	if c.Port != 0 {
		p("\tport = %d", c.Port)
	}
	if c.PortNATT != 0 {
		p("\tport_nat_t = %d", c.PortNATT)
	}
	if c.FragmentSize != 0 {
		p("\tfragment_size = %d", c.FragmentSize)
	}
	p("\tretransmit_tries = %d", c.RetransmitTries)
	p("\tretransmit_timeout = %s", strconv.FormatFloat(c.RetransmitTimeout, 'f', -1, 64))
	p("\tretransmit_base = %s", strconv.FormatFloat(c.RetransmitBase, 'f', -1, 64))
	p("\thalf_open_timeout = 30")
	p("\tinstall_routes = no")
	p("\tinstall_virtual_ip = no")
	p("\tfilelog {")
	p("\t\tlab {")
	p("\t\t\tpath = %s", d.Log())
	p("\t\t\ttime_format = %%T")
	p("\t\t\tike_name = yes")
	p("\t\t\tappend = no")
	p("\t\t\tflush_line = yes")
	p("\t\t\tdefault = 1")
	p("\t\t\tike = 2")
	p("\t\t\tnet = 2")
	p("\t\t}")
	p("\t}")
	p("\tsyslog {")
	p("\t\tdaemon {")
	p("\t\t\tdefault = -1")
	p("\t\t}")
	p("\t}")
	p("\tplugins {")
	p("\t\tvici {")
	p("\t\t\tsocket = unix://%s", d.vici())
	p("\t\t}")
	if saveKeys {
		p("\t\tsave-keys {")
		p("\t\t\tike = yes")
		p("\t\t\tesp = yes")
		p("\t\t\twireshark_keys = %s", filepath.Join(d.Dir, "keys"))
		p("\t\t}")
	}
	if c.KeyFeed != "" {
		p("\t\tikefrag-keys {")
		p("\t\t\tsocket = %s", c.KeyFeed)
		if c.KeyFeedUser != "" {
			p("\t\t\tuser = %s", c.KeyFeedUser)
		}
		if c.KeyFeedQueue != 0 {
			p("\t\t\tqueue = %d", c.KeyFeedQueue)
		}
		p("\t\t}")
	}
	if c.KeyFeed != "" && c.KeyFeedPluginDir {
		for _, name := range strings.Fields(plugins) {
			if name == "kernel-libipsec" || name == "ikefrag-keys" || name == "vici" {
				continue // written with their settings
			}
			p("\t\t%s {", name)
			p("\t\t\tload = yes")
			p("\t\t}")
		}
		p("\t\tvici {")
		p("\t\t\tload = yes")
		p("\t\t}")
		p("\t\tikefrag-keys {")
		p("\t\t\tload = yes")
		p("\t\t}")
	}
	p("\t\tkernel-libipsec {")
	if c.KeyFeed != "" && c.KeyFeedPluginDir {
		p("\t\t\tload = yes")
	}
	p("\t\t\tallow_peer_ts = no")
	p("\t\t}")
	p("\t}")
	if c.Extra != "" {
		p("%s", c.Extra)
	}
	p("}")
	p("swanctl {")
	p("\tsocket = unix://%s", d.vici())
	p("\tload = %s", swanctlPlugins)
	p("}")
	return b.String()
}

// swanctlConf renders the connection.
func (d *Daemon) swanctlConf() string {
	c := d.Config
	local, remote := d.addrs()
	me, peer := d.lab.Node(string(c.Role)), d.lab.Node(string(c.Role.Peer()))
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	p("connections {")
	p("\t%s {", connName)
	p("\t\tversion = 2")
	p("\t\tlocal_addrs = %s", local)
	p("\t\tremote_addrs = %s", remote)
	if c.Port != 0 {
		p("\t\tlocal_port = %d", c.Port)
	}
	if c.RemotePort != 0 {
		p("\t\tremote_port = %d", c.RemotePort)
	}
	p("\t\tproposals = %s", c.Proposals)
	p("\t\tfragmentation = %s", c.Fragmentation)
	p("\t\tsend_cert = always")
	p("\t\tsend_certreq = yes")
	p("\t\tmobike = no")
	auth := "pubkey"
	if c.PSK != "" {
		auth = "psk"
	}
	p("\t\tlocal {")
	p("\t\t\tauth = %s", auth)
	if c.PSK == "" {
		p("\t\t\tcerts = %s.crt", c.Role)
	}
	p("\t\t\tid = %s", ID(c.Role))
	p("\t\t}")
	p("\t\tremote {")
	p("\t\t\tauth = %s", auth)
	remoteID := ID(c.Role.Peer())
	if c.RemoteID != "" {
		remoteID = c.RemoteID
	}
	p("\t\t\tid = %s", remoteID)
	p("\t\t}")
	p("\t\tchildren {")
	p("\t\t\t%s {", connName)
	p("\t\t\t\tlocal_ts = %s", selectors(me))
	p("\t\t\t\tremote_ts = %s", selectors(peer))
	p("\t\t\t\tesp_proposals = %s", c.ESPProposals)
	p("\t\t\t\tstart_action = none")
	p("\t\t\t}")
	p("\t\t}")
	p("\t}")
	p("}")
	if c.PSK != "" {
		p("secrets {")
		p("\tike-lab {")
		p("\t\tid-1 = %s", ID(c.Role))
		p("\t\tid-2 = %s", ID(c.Role.Peer()))
		p("\t\tsecret = %q", c.PSK)
		p("\t}")
		p("}")
	}
	return b.String()
}

func (d *Daemon) writeConfig(pki *PKI) error {
	for _, sub := range []string{"varrun", "keys", "swanctl/x509", "swanctl/x509ca", "swanctl/private"} {
		if err := os.MkdirAll(filepath.Join(d.Dir, sub), 0o700); err != nil {
			return err
		}
	}
	role := string(d.Config.Role)
	copies := map[string]string{
		pki.Cert(role):          "swanctl/x509/" + role + ".crt",
		pki.Cert(role + "-ca1"): "swanctl/x509/" + role + "-ca1.crt",
		pki.Cert(role + "-ca2"): "swanctl/x509/" + role + "-ca2.crt",
		pki.Cert("root"):        "swanctl/x509ca/root.crt",
		pki.Key(role):           "swanctl/private/" + role + ".key",
	}
	for src, dst := range copies {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(d.Dir, dst), b, 0o600); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(d.Dir, "strongswan.conf"), []byte(d.strongswanConf(d.Config.SaveKeys)), 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(d.Dir, "swanctl", "swanctl.conf"), []byte(d.swanctlConf()), 0o600)
}

// start launches charon. Its pid file path is compiled in (/run/charon.pid),
// so each instance gets a private /run: `ip netns exec` runs the command in
// a mount namespace of its own, where sh bind-mounts varrun over /run before
// exec'ing charon (the pid stays the same through ip, sh and env). The
// save-keys plugin is preloaded into charon only; in sh or mount it would
// fail on libstrongswan's missing symbols. umask 077 keeps the key files
// private.
func (d *Daemon) start(preload, pluginDir string) error {
	script := `umask 077 && mount --bind "$1" /run && exec "$2"`
	if preload != "" {
		script = `umask 077 && mount --bind "$1" /run && exec env LD_PRELOAD="$3" "$2"`
	}
	if pluginDir != "" {
		// charon's compiled-in plugin directory, for this charon only
		script = `umask 077 && mount --bind "$1" /run && mount --bind "$4" ` + charonPluginDir + ` && ` +
			strings.TrimPrefix(script, `umask 077 && mount --bind "$1" /run && `)
	}
	out, err := os.OpenFile(filepath.Join(d.Dir, "charon.out"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("ip", "netns", "exec", d.Node.Name, "sh", "-c", script, "sh",
		filepath.Join(d.Dir, "varrun"), CharonBin, preload, pluginDir)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(d.Dir, "strongswan.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	// If the test binary dies without its cleanups, charon goes with it;
	// the namespaces are swept by the next run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err := os.Stat(d.vici()); err == nil && st.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("charon exited (%v): %s %s", d.waitErr,
				tail(filepath.Join(d.Dir, "charon.out"), 20), tail(d.Log(), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no vici socket after 15 s: %s", tail(d.Log(), 20))
		}
	}
}

// charonPluginDir is where Debian's charon looks for plugins (PLUGINDIR).
const charonPluginDir = "/usr/lib/ipsec/plugins"

// pluginDir makes a private plugin directory: copies of the plugins the
// lab loads and the ikefrag-keys plugin, as a package would install it.
func (d *Daemon) pluginDir(keysSO string) (string, error) {
	dir := filepath.Join(d.Dir, "plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cp := func(src, dst string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	}
	for _, name := range strings.Fields(charonPlugins) {
		so := "libstrongswan-" + name + ".so"
		if err := cp(filepath.Join(charonPluginDir, so), filepath.Join(dir, so)); err != nil {
			return "", err
		}
	}
	if err := cp(keysSO, filepath.Join(dir, "libstrongswan-ikefrag-keys.so")); err != nil {
		return "", err
	}
	return dir, nil
}

// Pid is charon's process id.
func (d *Daemon) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Stop terminates charon (SIGTERM, SIGKILL after 5 s) and waits for it.
// It is safe to call more than once.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() {
		if d.cmd == nil {
			return
		}
		select {
		case <-d.done:
			return
		default:
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			d.stopErr = errors.New("charon ignored SIGTERM for 5 s, killed")
		}
	})
	return d.stopErr
}

// Swanctl runs swanctl against this instance (its vici socket and
// credentials directory) and returns the combined output.
func (d *Daemon) Swanctl(ctx context.Context, args ...string) (string, error) {
	env := []string{"STRONGSWAN_CONF=" + filepath.Join(d.Dir, "strongswan.conf"),
		"SWANCTL_DIR=" + filepath.Join(d.Dir, "swanctl")}
	return runIn(ctx, env, "", "swanctl", args...)
}

// Initiate asks the client to bring up the IKE SA and its CHILD_SA and waits
// for the outcome: ok reports success, out holds swanctl's log of the
// attempt, err is set only when the attempt could not be judged (swanctl
// missing, ctx expired).
func (d *Daemon) Initiate(ctx context.Context) (ok bool, out string, err error) {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	out, err = d.Swanctl(ctx, "--initiate", "--child", connName, "--timeout", "90")
	if err == nil {
		return true, out, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return false, out, nil
	}
	return false, out, err
}

// SA is an IKE SA as `swanctl --list-sas` shows it.
type SA struct {
	Name, State string
	// SPIi and SPIr are 16 lower-case hex digits.
	SPIi, SPIr string
	// Local and Remote are the IKE endpoints, e.g. 10.99.1.2:4500.
	Local, Remote netip.AddrPort
	// Proposal like "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072".
	Proposal string
	Children []ChildSA
}

// ChildSA is a CHILD_SA of an SA.
type ChildSA struct {
	Name, State string
	// Proposal like "AES_CBC-256/HMAC_SHA2_256_128".
	Proposal string
}

var (
	reIKESA   = regexp.MustCompile(`^(\S+): #\d+, (\S+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r\*?`)
	reIKEProp = regexp.MustCompile(`^  ([A-Z0-9_]+(?:-\d+)?(?:/[A-Z0-9_]+(?:-\d+)?)+)\s*$`)
	reChildSA = regexp.MustCompile(`^  (\S+): #\d+, reqid \d+, (\S+), [^,]+, ESP:(\S+)`)
	reIKEEnd  = regexp.MustCompile(`^  (local|remote) +'[^']*' @ (\S+)\[(\d+)\]`)
)

// SAs lists the daemon's IKE SAs.
func (d *Daemon) SAs(ctx context.Context) ([]SA, error) {
	out, err := d.Swanctl(ctx, "--list-sas")
	if err != nil {
		return nil, err
	}
	return parseSAs(out), nil
}

func parseSAs(out string) []SA {
	var sas []SA
	for _, line := range strings.Split(out, "\n") {
		if m := reIKESA.FindStringSubmatch(line); m != nil {
			sas = append(sas, SA{Name: m[1], State: m[2], SPIi: m[3], SPIr: m[4]})
			continue
		}
		if len(sas) == 0 {
			continue
		}
		sa := &sas[len(sas)-1]
		if m := reIKEEnd.FindStringSubmatch(line); m != nil {
			a, err1 := netip.ParseAddr(m[2])
			port, err2 := strconv.ParseUint(m[3], 10, 16)
			if err1 == nil && err2 == nil {
				if m[1] == "local" {
					sa.Local = netip.AddrPortFrom(a, uint16(port))
				} else {
					sa.Remote = netip.AddrPortFrom(a, uint16(port))
				}
			}
		} else if m := reChildSA.FindStringSubmatch(line); m != nil {
			sa.Children = append(sa.Children, ChildSA{Name: m[1], State: m[2], Proposal: m[3]})
		} else if m := reIKEProp.FindStringSubmatch(line); m != nil && sa.Proposal == "" {
			sa.Proposal = m[1]
		}
	}
	return sas
}

var (
	saveKeysMu   sync.Mutex
	saveKeysPath string
	keyFeedPath  string
)

// KeyFeedPlugin returns the path of the ikefrag-keys plugin built for the
// installed charon by keys/strongswan-plugin/build.sh (cached; the first
// build takes about a minute). $IKEFRAG_LAB_KEYS_SO names a prebuilt one.
func KeyFeedPlugin(t testing.TB) string {
	t.Helper()
	p, err := keyFeedPlugin()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return p
}

func keyFeedPlugin() (string, error) {
	saveKeysMu.Lock()
	defer saveKeysMu.Unlock()
	if keyFeedPath != "" {
		return keyFeedPath, nil
	}
	if p := os.Getenv("IKEFRAG_LAB_KEYS_SO"); p != "" {
		keyFeedPath = p
		return p, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate keys/strongswan-plugin/build.sh")
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "keys", "strongswan-plugin", "build.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := runStdout(ctx, nil, script)
	if err != nil {
		return "", fmt.Errorf("ikefrag-keys plugin: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("ikefrag-keys plugin: %w", err)
	}
	keyFeedPath = p
	return p, nil
}

// SaveKeysPlugin returns the path of the save-keys plugin built for the
// installed charon, building it on first use (about two minutes; see
// strongswan-save-keys.sh). $IKEFRAG_LAB_SAVE_KEYS_SO names a prebuilt one.
func SaveKeysPlugin(t testing.TB) string {
	t.Helper()
	p, err := saveKeysPlugin()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return p
}

func saveKeysPlugin() (string, error) {
	saveKeysMu.Lock()
	defer saveKeysMu.Unlock()
	if saveKeysPath != "" {
		return saveKeysPath, nil
	}
	if p := os.Getenv("IKEFRAG_LAB_SAVE_KEYS_SO"); p != "" {
		saveKeysPath = p
		return p, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate strongswan-save-keys.sh")
	}
	script := filepath.Join(filepath.Dir(self), "strongswan-save-keys.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := runStdout(ctx, nil, script)
	if err != nil {
		return "", fmt.Errorf("save-keys plugin: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("save-keys plugin: %w", err)
	}
	saveKeysPath = p
	return p, nil
}
