package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
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
	deadline := time.Now().Add(charonStartWait)
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
			return fmt.Errorf("no vici socket after %v: %s", charonStartWait, tail(d.Log(), 20))
		}
	}
}

// charonStartWait bounds charon's start until its vici socket appears:
// about a second here, but charon loads its plugins and OpenSSL's
// providers from the host's root over 9p in a kernel-matrix guest, which
// under emulation on a busy machine took more than 15 s.
const charonStartWait = 60 * time.Second

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
