package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handler answers requests. Call returns the result of a method, or an
// error the client sees. Events sends the recent events and, with follow,
// every new one until ctx is done or send fails.
type Handler interface {
	Call(ctx context.Context, method string) (any, error)
	Events(ctx context.Context, follow bool, send func(Event) error) error
}

// ServerConfig configures a control socket.
type ServerConfig struct {
	Path string
	// Group, when set, owns the socket so that its members may use it
	// (mode 0660); else the daemon's primary group does.
	Group string
	// MaxConns bounds concurrent connections. Default 32.
	MaxConns int
	// MaxConnsPerUser bounds the connections of one user other than the
	// daemon's own (root's, under the unit). Default MaxConns/2.
	MaxConnsPerUser int
	// Reserved connections (default 4, at most MaxConns-1) only the
	// daemon's own user may take: however many a group member holds open
	// (events --follow), root's status and stop scripts get through.
	Reserved int
	// IdleTimeout closes a connection that sends no request for this long
	// (followers are exempt). Default 1 minute.
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// Server is a listening control socket.
type Server struct {
	cfg   ServerConfig
	h     Handler
	ln    *net.UnixListener
	owner int // the daemon's effective uid: may use the reserved slots

	mu     sync.Mutex  // guards what follows
	total  int         // connections admitted and not yet closed
	byUID  map[int]int // the same, by peer uid
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen creates the socket at cfg.Path with mode 0660, creating its
// directory (0750) when missing. A socket left by a dead daemon is
// replaced; one that answers belongs to a running daemon and is an error.
func Listen(cfg ServerConfig, h Handler) (*Server, error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 32
	}
	if cfg.MaxConnsPerUser <= 0 {
		cfg.MaxConnsPerUser = max(1, cfg.MaxConns/2)
	}
	if cfg.Reserved <= 0 {
		cfg.Reserved = 4
	}
	cfg.Reserved = min(cfg.Reserved, cfg.MaxConns-1)
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	gid := -1
	if cfg.Group != "" {
		g, err := LookupGroup(cfg.Group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	dir := filepath.Dir(cfg.Path)
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	if gid >= 0 {
		if err := openDirToGroup(dir, cfg.Group, gid, created, cfg.Logger); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", cfg.Path)
		}
		if c, err := net.DialTimeout("unix", cfg.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another daemon answers on %s", cfg.Path)
		}
		if err := os.Remove(cfg.Path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	// The umask keeps the socket closed to others between bind and chmod.
	old := syscall.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(cfg.Path, -1, gid); err != nil {
			ln.Close()
			return nil, chownError(cfg.Group, cfg.Path, err)
		}
	}
	if err := os.Chmod(cfg.Path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return &Server{cfg: cfg, h: h, ln: ln, owner: os.Geteuid(), byUID: map[int]int{}, conns: map[net.Conn]struct{}{}}, nil
}

// openDirToGroup lets control.group's members reach the socket: the
// socket's directory gets that group and g+rx (0750 for the 0750 the unit
// and Listen create). Only a directory this daemon owns as its own is
// changed: one Listen just created, or systemd's RuntimeDirectory
// ($RUNTIME_DIRECTORY). Any other directory (the socket placed in /tmp or
// a home directory) is left alone, with a warning when the group cannot
// pass it.
func openDirToGroup(dir, group string, gid int, created bool, log *slog.Logger) error {
	own := created
	for _, rd := range filepath.SplitList(os.Getenv("RUNTIME_DIRECTORY")) {
		if rd != "" && filepath.Clean(rd) == filepath.Clean(dir) {
			own = true
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if own && st != nil && int(st.Uid) == os.Geteuid() {
		if err := os.Chown(dir, -1, gid); err != nil {
			return chownError(group, dir, err)
		}
		mode := fi.Mode().Perm()&^0o070 | 0o050
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("control.group: %s: %w", dir, err)
		}
		return nil
	}
	perm := fi.Mode().Perm()
	if st != nil && !(perm&0o001 != 0 || int(st.Gid) == gid && perm&0o010 != 0) {
		log.Warn("control.group: its members cannot reach the socket: its directory is not this daemon's to change; put control.socket in a directory of its own (the default /run/ikefrag/ is)",
			"dir", dir, "mode", perm.String(), "gid", st.Gid)
	}
	return nil
}

// chownError explains a refused change of group: a process may give its
// file to a group it is a member of, or to any group with CAP_CHOWN. The
// unit keeps CAP_CHOWN out and adds the group with SupplementaryGroups=.
func chownError(group, path string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("control.group %q: giving %s to the group: %w: the daemon must be a member of the group (under the unit: systemctl edit ikefragd, add SupplementaryGroups=%s under [Service]) or hold CAP_CHOWN", group, path, err, group)
	}
	return fmt.Errorf("control.group %q: giving %s to the group: %w", group, path, err)
}

// LookupGroup returns the id of a group given by name or number.
func LookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			g, err = user.LookupGroupId(name)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// Path returns the socket path.
func (s *Server) Path() string { return s.cfg.Path }

// Serve accepts connections until ctx is done or Close is called.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		uid := peerUID(c)
		if why := s.admit(uid); why != "" {
			s.cfg.Logger.Warn("control socket: refusing a connection", "uid", uid, "reason", why)
			go refuse(c, why)
			continue
		}
		if !s.track(c) {
			c.Close()
			s.release(uid)
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.release(uid)
			defer s.untrack(c)
			s.serveConn(ctx, c)
		}()
	}
}

// refuseWait bounds how long a refused connection is kept open for the
// client's request to arrive.
const refuseWait = 2 * time.Second

// refuse answers a connection over the limits with the reason and closes
// it. It runs on its own goroutine, never on the accept loop. The reason is
// written first: a client that writes its request late (a slow machine)
// gets EPIPE and then still reads the reason from its socket; one that
// writes in time has its request read before the close.
func refuse(c net.Conn, why string) {
	defer c.Close()
	writeResponse(c, Response{Version: Version, Error: why})
	_ = c.SetReadDeadline(time.Now().Add(refuseWait))
	_, _ = bufio.NewReaderSize(c, MaxLine).ReadSlice('\n')
}

// peerUID returns the uid of the process at the other end (SO_PEERCRED),
// -1 when the kernel does not say.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	_ = rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// admit counts a new connection of uid in, or says why not: the daemon's
// own user may use every slot; any other user at most MaxConnsPerUser,
// and all of them together leave Reserved slots free.
func (s *Server) admit(uid int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.total >= s.cfg.MaxConns:
		return fmt.Sprintf("too many connections (%d)", s.cfg.MaxConns)
	case uid != s.owner && s.total >= s.cfg.MaxConns-s.cfg.Reserved:
		return fmt.Sprintf("too many connections (%d, of which %d are kept for uid %d)", s.cfg.MaxConns, s.cfg.Reserved, s.owner)
	case uid != s.owner && s.byUID[uid] >= s.cfg.MaxConnsPerUser:
		return fmt.Sprintf("too many connections from uid %d (%d at most per user)", uid, s.cfg.MaxConnsPerUser)
	}
	s.total++
	s.byUID[uid]++
	return ""
}

func (s *Server) release(uid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.byUID[uid]--; s.byUID[uid] <= 0 {
		delete(s.byUID, uid)
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, closes every connection, waits for their
// goroutines and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := bufio.NewReaderSize(c, MaxLine)
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			writeResponse(c, Response{Version: Version, Error: fmt.Sprintf("request longer than %d bytes", MaxLine)})
			return
		}
		if err != nil {
			return
		}
		var req Request
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			if !writeResponse(c, Response{Version: Version, Error: "bad request: " + err.Error()}) {
				return
			}
			continue
		}
		if req.Method == MethodEvents {
			s.events(ctx, c, req.Follow)
			if req.Follow {
				return
			}
			continue
		}
		resp := Response{Version: Version}
		res, err := s.h.Call(ctx, req.Method)
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.OK, resp.Result = true, res
		}
		if !writeResponse(c, resp) {
			return
		}
	}
}

// events answers an events request: one response holding the recent
// events, or, when following, one response per event.
func (s *Server) events(ctx context.Context, c net.Conn, follow bool) {
	if !follow {
		list := []Event{}
		err := s.h.Events(ctx, false, func(e Event) error { list = append(list, e); return nil })
		resp := Response{Version: Version, OK: err == nil, Result: list}
		if err != nil {
			resp.Error, resp.Result = err.Error(), nil
		}
		writeResponse(c, resp)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	// A follower sends nothing more; its closing shows up as EOF and ends
	// the stream even while no event comes.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var b [1]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				cancel()
				return
			}
		}
	}()
	err := s.h.Events(ctx, true, func(e Event) error {
		if !writeResponse(c, Response{Version: Version, OK: true, Result: e}) {
			return net.ErrClosed
		}
		return nil
	})
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
		writeResponse(c, Response{Version: Version, Error: err.Error()})
	}
}

func writeResponse(c net.Conn, r Response) bool {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(Response{Version: Version, Error: "encoding the result: " + err.Error()})
	}
	b = append(b, '\n')
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Write(b)
	return err == nil
}
