package control

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
)

// A client that writes its request only after the daemon gave up waiting
// (a slow machine) still reads why it was refused, not EPIPE.
func TestRefusalReachesALateClient(t *testing.T) {
	srv, cli, err := unixPair()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	done := make(chan struct{})
	go func() { refuse(srv, "too many connections of uid 1000 (16)"); close(done) }()
	<-done // refused, waited refuseWait for a request, closed
	_ = json.NewEncoder(cli).Encode(Request{Method: MethodStatus})
	resp, err := readResponse(bufio.NewReader(cli))
	if resp != nil || err == nil || !strings.Contains(err.Error(), "too many connections") {
		t.Fatalf("late client read %v, %v; want the refusal", resp, err)
	}
}

func unixPair() (net.Conn, net.Conn, error) {
	dir, err := os.MkdirTemp("", "ikfctl-")
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("unix", dir+"/s")
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	cli, err := net.Dial("unix", dir+"/s")
	if err != nil {
		return nil, nil, err
	}
	srv, err := l.Accept()
	return srv, cli, err
}
