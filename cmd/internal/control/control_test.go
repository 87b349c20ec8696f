package control

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// handler is a small real Handler: status answers, events come from a
// channel the test feeds.
type handler struct {
	events   chan Event
	mu       sync.Mutex
	followed int // followers whose stream ended
}

func (h *handler) Call(_ context.Context, method string) (any, error) {
	if method == MethodStatus {
		return Status{Version: "test", PID: 7, Healthy: true}, nil
	}
	return nil, errors.New("unknown method " + method)
}

func (h *handler) Events(ctx context.Context, follow bool, send func(Event) error) error {
	if err := send(Event{Seq: 1, Kind: EventDaemon, Message: "started"}); err != nil {
		return err
	}
	if !follow {
		return nil
	}
	defer func() { h.mu.Lock(); h.followed++; h.mu.Unlock() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-h.events:
			if err := send(e); err != nil {
				return err
			}
		}
	}
}

func serve(t *testing.T) (*Server, *handler, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	h := &handler{events: make(chan Event)}
	s, err := Listen(ServerConfig{Path: path}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, h, path
}

func TestCallAndErrors(t *testing.T) {
	_, _, path := serve(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want 0750", di.Mode().Perm())
	}
	ctx := context.Background()
	var st Status
	if err := Call(ctx, path, MethodStatus, &st); err != nil || st.PID != 7 || !st.Healthy {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := Call(ctx, path, "nope", nil); err == nil || !strings.Contains(err.Error(), "unknown method nope") {
		t.Errorf("unknown method: %v", err)
	}
	if err := Call(ctx, filepath.Join(t.TempDir(), "absent.sock"), MethodStatus, nil); !errors.Is(err, ErrUnreachable) ||
		!strings.Contains(err.Error(), "is ikefragd running?") {
		t.Errorf("absent socket: %v", err)
	}

	// Raw protocol: bad JSON and unknown fields are answered and the
	// connection stays usable; an over-long line closes it.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, req := range []string{"{not json\n", `{"method":"status","extra":1}` + "\n", `{"method":"status"}` + "\n"} {
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		ok := strings.Contains(line, `"ok":true`)
		if want := strings.HasPrefix(req, `{"method":"status"}`); ok != want || !strings.Contains(line, `"version":1`) {
			t.Errorf("request %q → %s", req, line)
		}
	}
	if _, err := c.Write([]byte(strings.Repeat("x", MaxLine+10) + "\n")); err != nil {
		t.Fatal(err)
	}
	line, _ := r.ReadString('\n')
	if !strings.Contains(line, "request longer than") {
		t.Errorf("over-long request: %q", line)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Errorf("connection still open after an over-long request")
	}
}

func TestEventsFollow(t *testing.T) {
	_, h, path := serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Event, 8)
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, path, func(e Event) error { got <- e; return nil }) }()
	if e := <-got; e.Message != "started" {
		t.Fatalf("first event %+v", e)
	}
	h.events <- Event{Seq: 2, Kind: EventVerdict, Message: "x"}
	if e := <-got; e.Seq != 2 {
		t.Fatalf("second event %+v", e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow after cancel: %v", err)
	}
	// The daemon side notices the follower left although no event came.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n := h.followed
		h.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower's stream did not end on the daemon side")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var list []Event
	if err := Call(context.Background(), path, MethodEvents, &list); err != nil || len(list) != 1 {
		t.Errorf("events: %+v %v", list, err)
	}
}

// A stale socket (its daemon died) is replaced; a live one is not taken.
func TestStaleAndLiveSockets(t *testing.T) {
	_, _, path := serve(t)
	if _, err := Listen(ServerConfig{Path: path}, &handler{}); err == nil || !strings.Contains(err.Error(), "another daemon answers") {
		t.Errorf("second daemon on a live socket: %v", err)
	}
	// A socket file nobody listens on, as after SIGKILL.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s2, err := Listen(ServerConfig{Path: stale}, &handler{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s2.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Close: %v", err)
	}
	notSock := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(notSock, nil, 0o600)
	if _, err := Listen(ServerConfig{Path: notSock}, &handler{}); err == nil {
		t.Errorf("a regular file was taken for a socket")
	}
	if _, err := Listen(ServerConfig{Path: filepath.Join(t.TempDir(), "g.sock"), Group: "no-such-group-ikefrag"}, &handler{}); err == nil {
		t.Errorf("unknown group accepted")
	}
}

// A user other than the daemon's own may hold at most MaxConnsPerUser
// connections, and all such users leave Reserved slots free: 32 followers
// of a group member do not lock the daemon's own user out. The test
// process plays the group member by making the server's owner another uid.
func TestConnectionLimitsPerUser(t *testing.T) {
	s, _, path := serve(t)
	s.mu.Lock()
	s.owner = os.Geteuid() + 4242 // this process is "another user" now
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var refused []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	started := make(chan struct{}, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := Follow(ctx, path, func(Event) error { started <- struct{}{}; return nil })
			if err != nil {
				mu.Lock()
				refused = append(refused, err.Error())
				mu.Unlock()
			}
		}()
	}
	// 16 streams start (their first event arrives); 16 are refused.
	for range 16 {
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("fewer than 16 followers admitted")
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(refused)
		mu.Unlock()
		if n == 16 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	if len(refused) != 16 || !strings.Contains(refused[0], "too many connections from uid") {
		t.Errorf("%d followers refused, want 16 naming the per-user bound: %q", len(refused), refused)
	}
	mu.Unlock()
	// This user is at its bound: one more call is refused ...
	if err := Call(context.Background(), path, MethodStatus, nil); err == nil || !strings.Contains(err.Error(), "too many connections from uid") {
		t.Errorf("a 17th connection of the same user: %v", err)
	}
	// ... while the daemon's own user still gets through.
	s.mu.Lock()
	s.owner = os.Geteuid()
	s.mu.Unlock()
	var st Status
	if err := Call(context.Background(), path, MethodStatus, &st); err != nil || st.PID != 7 {
		t.Errorf("the daemon's own user with a member's 16 followers open: %v", err)
	}
	cancel()
	wg.Wait()
}

// admit's arithmetic: other users stop at MaxConns-Reserved in total,
// the owner may take every slot.
func TestAdmit(t *testing.T) {
	s := &Server{cfg: ServerConfig{MaxConns: 8, MaxConnsPerUser: 3, Reserved: 2}, owner: 0, byUID: map[int]int{}}
	admit := func(uids ...int) {
		t.Helper()
		for _, uid := range uids {
			if why := s.admit(uid); why != "" {
				t.Fatalf("uid %d refused early: %s", uid, why)
			}
		}
	}
	admit(1000, 1000, 1000)
	if why := s.admit(1000); !strings.Contains(why, "from uid 1000") {
		t.Errorf("4th of uid 1000: %q", why)
	}
	admit(1001, 1001, 1001)
	if why := s.admit(1002); !strings.Contains(why, "kept for uid 0") {
		t.Errorf("a third user past MaxConns-Reserved: %q", why)
	}
	for range 2 {
		if why := s.admit(0); why != "" {
			t.Errorf("owner refused a reserved slot: %s", why)
		}
	}
	if why := s.admit(0); !strings.Contains(why, "too many connections (8)") {
		t.Errorf("owner past MaxConns: %q", why)
	}
	s.release(1000)
	if s.byUID[1000] != 2 || s.total != 7 {
		t.Errorf("after release: %v total %d", s.byUID, s.total)
	}
}
