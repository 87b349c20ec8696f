package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Restarts keep tunnels: the backend knows a client by the proxy's
// upstream address and port, and ESP of an established CHILD SA only
// flows while that stays the same (an IKE rekey does not move it). The
// proxy keeps each established flow's client ↔ upstream port mapping in
// proxy.state_file and, at the next start, opens the same upstream ports
// for the same clients before it reads any datagram.

// stateVersion is the state file's format.
const stateVersion = 1

// maxStateBytes bounds the state file read at start (a flow is about 200
// bytes of JSON; max_clients is at most a few hundred thousand).
const maxStateBytes = 64 << 20

// stateFlow is one established flow in the state file.
type stateFlow struct {
	Client   netip.AddrPort `json:"client"`
	Local    netip.AddrPort `json:"local"`
	Upstream netip.AddrPort `json:"upstream"`
	Backend  netip.AddrPort `json:"backend"`
	NATT     bool           `json:"natt"`
	Created  time.Time      `json:"created"`
}

type stateFile struct {
	Version int         `json:"version"`
	Written time.Time   `json:"written"`
	Flows   []stateFlow `json:"flows"`
}

// saveState writes the established flows to the state file (write to a
// temporary file, then rename: a crash leaves the old file or the new).
func (p *Proxy) saveState(now time.Time) error {
	if p.s.StateFile == "" {
		return nil
	}
	st := stateFile{Version: stateVersion, Written: now.UTC()}
	for _, f := range p.flows.all() {
		if f.level.Load() != levelEstablished || f.closed.Load() || f.ln.tcp != nil {
			// (a TCP flow does not outlive its connection)
			continue
		}
		st.Flows = append(st.Flows, stateFlow{Client: f.key.client, Local: f.key.local, Upstream: f.up.addr,
			Backend: f.backendAddr(), NATT: f.natt, Created: f.created.UTC()})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p.s.StateFile)
	tmp, err := os.CreateTemp(dir, ".proxy-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p.s.StateFile)
}

// loadState reads the state file; a missing file is no flows.
func loadState(path string) ([]stateFlow, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxStateBytes)
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", path, st.Version, stateVersion)
	}
	return st.Flows, nil
}

// adopt re-opens the flows of the state file: each gets an upstream
// socket bound to its old address and port, connected to its backend,
// and starts established. A flow whose listener or backend is no longer
// configured, whose client cannot be one, or whose port is taken is left
// out and counted. It runs in Run, before the listeners read.
func (p *Proxy) adopt(now time.Time) {
	if p.s.StateFile == "" {
		return
	}
	flows, err := loadState(p.s.StateFile)
	if err != nil {
		p.log.Warn("proxy: state file not used", "err", err)
		return
	}
	adopted, skipped := 0, 0
	for _, sf := range flows {
		if p.adoptOne(sf, now) {
			adopted++
		} else {
			skipped++
		}
	}
	p.adopted.Store(uint64(adopted))
	p.adoptSkipped.Store(uint64(skipped))
	if adopted+skipped > 0 {
		p.log.Info("proxy: flows re-adopted from the state file", "adopted", adopted, "skipped", skipped, "file", p.s.StateFile)
	}
}

func (p *Proxy) adoptOne(sf stateFlow, now time.Time) bool {
	var l *listener
	for _, ln := range p.listeners {
		if ln.natt == sf.NATT && (ln.addr == sf.Local || ln.wildcard && ln.addr.Port() == sf.Local.Port() &&
			ln.addr.Addr().Is4() == sf.Local.Addr().Is4()) {
			l = ln
			break
		}
	}
	var be *backend
	for _, b := range p.backends {
		if b.cfg.IKE == sf.Backend || b.cfg.NATT == sf.Backend {
			be = b
			break
		}
	}
	if l == nil || be == nil || !sf.Client.IsValid() || !sf.Upstream.IsValid() {
		return false
	}
	if _, refused := p.refuseSource(sf.Client.Addr(), false, sf.Local.Addr(), now); refused {
		return false
	}
	to := be.cfg.IKE
	if sf.NATT {
		to = be.cfg.NATT
	}
	var up *udpSock
	var err error
	if p.s.Source == SourceClient {
		if sf.Upstream != sf.Client {
			return false
		}
		up, err = p.dialUpstream(sf.Client, to)
	} else {
		up, err = dialUDPFrom(sf.Upstream, to, sockOpts{recvErr: true, rcvBuf: 1 << 20, sndBuf: 1 << 20})
	}
	if err != nil {
		p.log.Debug("proxy: cannot re-adopt a flow", "client", sf.Client, "upstream", sf.Upstream, "err", err)
		return false
	}
	ca := sf.Client.Addr()
	f := &Flow{p: p, key: flowKey{sf.Client, sf.Local}, ln: l, be: be, up: up, natt: sf.NATT, created: sf.Created,
		dst: net.UDPAddrFromAddrPort(sf.Client), addMarker: !sf.NATT && be.cfg.IKEMarker, prefix: p.clientPrefix(ca)}
	if l.wildcard {
		f.oob = srcCmsg(sf.Local.Addr())
	}
	f.last.Store(now.UnixNano())
	f.replied.Store(true)
	if _, _, _, ok := p.flows.insert(f, flowLimits{perAddr: 1 << 30, perPrefix: 1 << 30}); !ok {
		up.Close()
		return false
	}
	f.cl = p.client(ca)
	f.cl.flows.Add(1)
	f.cl.last.Store(now.UnixNano())
	f.cl.mu.Lock()
	f.cl.backend = be
	f.cl.mu.Unlock()
	be.flows.Add(1)
	p.promote(f, levelEstablished, now)
	p.wg.Add(1)
	go f.readLoop()
	if f.natt && p.fpx != nil {
		p.fpMap(f)
	}
	return true
}

// dialUDPFrom is dialUDP from a given local address and port.
func dialUDPFrom(from, to netip.AddrPort, o sockOpts) (*udpSock, error) {
	d := net.Dialer{Control: o.control(to.Addr().Is6()), LocalAddr: net.UDPAddrFromAddrPort(from)}
	c, err := d.DialContext(context.Background(), network(to.Addr()), to.String())
	if err != nil {
		return nil, err
	}
	return wrap(c.(*net.UDPConn))
}

// stateSweep writes the state file when the established flows changed,
// logging a failure once per distinct error.
func (p *Proxy) stateSweep(now time.Time) {
	if p.s.StateFile == "" || !p.stateDirty.Swap(false) {
		return
	}
	if err := p.saveState(now); err != nil {
		p.stateDirty.Store(true)
		if msg := err.Error(); msg != p.stateErr {
			p.stateErr = msg
			p.log.Warn("proxy: cannot write the state file", "file", p.s.StateFile, "err", err)
		}
		return
	}
	p.stateErr = ""
}
