package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// ErrUnreachable wraps failures to connect to the daemon.
var ErrUnreachable = errors.New("ikefragd is not reachable")

// wireResponse is Response as a client reads it.
type wireResponse struct {
	Version int             `json:"version"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error"`
	Result  json.RawMessage `json:"result"`
}

// maxResponse bounds one response line (a report of many sessions).
const maxResponse = 256 << 20

func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, os.ErrNotExist):
			hint = " (is ikefragd running? --socket names another socket)"
		case errors.Is(err, os.ErrPermission):
			hint = " (the socket is mode 0660: run as root or as a member of its group)"
		}
		return nil, fmt.Errorf("%w at %s: %v%s", ErrUnreachable, path, err, hint)
	}
	return c, nil
}

// Call sends one request and decodes the result into out.
func Call(ctx context.Context, path, method string, out any) error {
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	if err := json.NewEncoder(c).Encode(Request{Method: method}); err != nil {
		// A daemon that refused the connection may have answered
		// already: its reason beats EPIPE.
		if resp, rerr := readResponse(r); rerr != nil && resp == nil && strings.HasPrefix(rerr.Error(), "ikefragd: ") {
			return rerr
		}
		return err
	}
	resp, err := readResponse(r)
	if err != nil {
		return err
	}
	if out == nil || resp.Result == nil {
		return nil
	}
	return json.Unmarshal(resp.Result, out)
}

func readResponse(r *bufio.Reader) (*wireResponse, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's answer: %w", err)
	}
	var resp wireResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if resp.Version != Version {
		return nil, fmt.Errorf("the daemon speaks control protocol version %d, this client %d", resp.Version, Version)
	}
	if !resp.OK {
		return nil, fmt.Errorf("ikefragd: %s", resp.Error)
	}
	return &resp, nil
}

// readLine reads one response line, however long, up to maxResponse.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxResponse {
			return nil, fmt.Errorf("response longer than %d bytes", maxResponse)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return line, nil
	}
}

// Follow streams events to fn until ctx is done, fn fails or the daemon
// closes the connection (io.EOF is not an error then: it means the daemon
// stopped, which Follow reports).
func Follow(ctx context.Context, path string, fn func(Event) error) error {
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	if err := json.NewEncoder(c).Encode(Request{Method: MethodEvents, Follow: true}); err != nil {
		if _, rerr := readResponse(r); rerr != nil && strings.HasPrefix(rerr.Error(), "ikefragd: ") {
			return rerr
		}
		return err
	}
	for {
		resp, err := readResponse(r)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var e Event
		if err := json.Unmarshal(resp.Result, &e); err != nil {
			return fmt.Errorf("bad event from the daemon: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// Timeout is the default time a one-shot request may take.
const Timeout = 30 * time.Second
