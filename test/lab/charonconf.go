package lab

// A lab daemon's strongswan.conf and swanctl.conf.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

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
