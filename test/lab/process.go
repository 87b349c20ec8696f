package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a program a test runs inside a node's namespace, such as a
// proxy under test on gw.
type Process struct {
	// Log holds the program's standard output and error.
	Log string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start runs a program in the node's namespace. When ready is not empty it
// waits (15 s at most) until a line of the program's standard output
// contains it. The program is stopped in t.Cleanup (SIGTERM, SIGKILL after
// 5 s); when the test failed the end of its log is printed first and, for
// the Go programs of this module, where their goroutines were waiting.
func (n *Node) Start(t testing.TB, ready, name string, args ...string) *Process {
	t.Helper()
	p, err := n.start(ready, name, args...)
	if p != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("lab: last lines of %s (%s):\n%s", filepath.Base(name), p.Log, tail(p.Log, 60))
				stacks := p.stacks()
				if stacks != "" {
					t.Logf("lab: goroutines of %s in this module:\n%s", filepath.Base(name), stacks)
				}
			}
			if err := p.Stop(); err != nil {
				t.Logf("lab: stopping %s: %v", filepath.Base(name), err)
			}
		})
	}
	if err != nil {
		t.Fatalf("lab: starting %s in %s: %v", name, n.Role, err)
	}
	return p
}

func (n *Node) start(ready, name string, args ...string) (*Process, error) {
	l := n.lab
	l.mu.Lock()
	l.seq++
	logPath := filepath.Join(l.Dir, fmt.Sprintf("%s-%s%d.log", n.Role, filepath.Base(name), l.seq))
	l.mu.Unlock()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Stderr = logf
	// The program dies with the test binary; the namespace sweep of the
	// next run removes the rest.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Log: logPath, cmd: cmd, done: make(chan struct{})}
	readyc := make(chan struct{})
	go func() {
		// Copy stdout to the log (its own handle: logf closes on return).
		out, _ := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0o600)
		if out != nil {
			defer out.Close()
		}
		sc := bufio.NewScanner(stdout)
		seen := ready == ""
		if seen {
			close(readyc)
		}
		for sc.Scan() {
			line := sc.Text()
			if out != nil {
				_, _ = io.WriteString(out, line+"\n")
			}
			if !seen && strings.Contains(line, ready) {
				seen = true
				close(readyc)
			}
		}
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	select {
	case <-readyc:
		return p, nil
	case <-p.done:
		return p, fmt.Errorf("exited (%v) before %q: %s", p.waitErr, ready, tail(logPath, 20))
	case <-time.After(15 * time.Second):
		return p, fmt.Errorf("no %q after 15 s: %s", ready, tail(logPath, 20))
	}
}

// Pid is the process id (of ip netns exec, which execs the program).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the program has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stacks makes a running Go program print its goroutines (SIGQUIT) and
// returns the ones with a frame in this module, a few frames each: when a
// test fails because a program stopped doing its work, this says where it
// waits. The log up to the signal is kept as it was.
func (p *Process) stacks() string {
	if p.Exited() {
		return ""
	}
	before, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		return ""
	}
	all, err := os.ReadFile(p.Log)
	if err != nil || len(all) < len(before) {
		return ""
	}
	_ = os.WriteFile(p.Log+".stacks", all[len(before):], 0o600)
	var out strings.Builder
	for _, g := range strings.Split(string(all[len(before):]), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") || !strings.Contains(g, "github.com/ikefrag/ikefrag/") {
			continue
		}
		out.WriteString(frames(g, 8))
		out.WriteString("\n")
	}
	return out.String()
}

// frames shortens one goroutine of a Go traceback to its header and at
// most n frames outside the runtime, a line each.
func frames(g string, n int) string {
	lines := strings.Split(g, "\n")
	out := []string{lines[0]}
	for i := 1; i+1 < len(lines) && len(out) <= n; i += 2 {
		fn, at := lines[i], strings.TrimSpace(lines[i+1])
		if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/") || strings.HasPrefix(fn, "created by ") {
			continue
		}
		if j := strings.Index(at, " fp="); j > 0 {
			at = at[:j]
		}
		if j := strings.LastIndex(fn, "("); j > 0 {
			fn = fn[:j]
		}
		out = append(out, "  "+fn+"  "+at)
	}
	return strings.Join(out, "\n")
}

// Stop ends the program (SIGTERM, SIGKILL after 5 s) and waits for it; a
// clean exit after SIGTERM is not an error. It is safe to call twice.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.stopErr = p.waitErr
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			var ee *exec.ExitError
			if errors.As(p.waitErr, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
				p.stopErr = nil
			} else {
				p.stopErr = p.waitErr
			}
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = errors.New("ignored SIGTERM for 5 s, killed")
		}
	})
	return p.stopErr
}
