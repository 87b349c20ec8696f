package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ikefrag/ikefrag/netcfg"
)

// TestKeyListenerMetrics: ikefragd exports keys.listen's counters. A
// forwarder (here a plain connection on loopback, keys.listen in clear)
// supplying keys for a VPN server its client is not configured for is
// refused, and /metrics counts the connection and the forbidden message.
func TestKeyListenerMetrics(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("c0", "c1")
	const keysAddr, metricsAddr = "127.0.0.1:14501", "127.0.0.1:19717"
	d := newDaemon(t, bins, n.name, "interfaces: [c0]\nmetrics:\n  listen: "+metricsAddr+
		"\nkeys:\n  listen:\n    address: "+keysAddr+"\n    tls: false\n    clients: [\"vpn1=10.0.0.5\"]\n")
	d.start()
	defer d.stop()

	h, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var c net.Conn
	if err := netcfg.Do(h, func() error {
		var err error
		c, err = net.DialTimeout("tcp", keysAddr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := strings.Repeat("07", 36)
	line := fmt.Sprintf(`{"spi_i":"0102030405060708","spi_r":"1112131415161718","server":"10.0.0.9","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s"}`, k, k)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no reply to a key message: %v", err)
	}
	if strings.Contains(reply, `"ok":true`) {
		t.Errorf("keys for a server the client is not configured for were accepted: %s", reply)
	}
	if strings.Contains(reply, k) {
		t.Errorf("the reply repeats the key: %s", reply)
	}
	m := scrape(t, nsHTTP(t, n.name), metricsAddr)
	if m["ikefrag_keys_listener_connections_total"] != 1 || m[`ikefrag_keys_listener_messages_total{result="forbidden"}`] != 1 ||
		m[`ikefrag_keys_listener_messages_total{result="added"}`] != 0 {
		t.Errorf("listener metrics: connections %v, forbidden %v, added %v",
			m["ikefrag_keys_listener_connections_total"], m[`ikefrag_keys_listener_messages_total{result="forbidden"}`],
			m[`ikefrag_keys_listener_messages_total{result="added"}`])
	}
}
