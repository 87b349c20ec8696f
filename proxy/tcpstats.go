package proxy

// What the TCP listener (proxy.tcp, tcp.go) reports: Stats.TCP, the
// ikefrag_proxy_tcp_* metrics, the transport of each flow.

import (
	"github.com/prometheus/client_golang/prometheus"
)

// TCPStats describe the RFC 9329 listener (proxy.tcp). Its frames are
// also counted as datagrams in the proxy's, backends' and clients'
// counters.
type TCPStats struct {
	Listeners []string `json:"listeners"`
	// Connections are open now, NoFlow of them have not yet sent a first
	// message that opened a flow (the ones max_connections evicts).
	Connections int    `json:"connections"`
	NoFlow      int    `json:"connections_without_flow"`
	Accepted    uint64 `json:"accepted"`
	// Refused counts connections closed at accept, by reason: source
	// (admit.go's rules), per_address, max_connections.
	Refused map[string]uint64 `json:"refused,omitempty"`
	// Ended counts connections ended, by reason (tcpEnd).
	Ended map[string]uint64 `json:"ended,omitempty"`
	// Frames and their payload bytes, in (client to backend) and out.
	FramesIn  uint64 `json:"frames_in"`
	BytesIn   uint64 `json:"bytes_in"`
	FramesOut uint64 `json:"frames_out"`
	BytesOut  uint64 `json:"bytes_out"`
	// ESPDropped counts ESP toward a client that did not fit its
	// send_buffer; KeepalivesNotFramed the backend's NAT-T keepalives,
	// which have no place on a stream.
	ESPDropped          uint64 `json:"esp_dropped_send_buffer"`
	KeepalivesNotFramed uint64 `json:"keepalives_not_framed"`
	// Joined counts RFC 7383 fragment sets from a backend sent to the
	// client as one SK message (keyed; RFC 9329: no fragmentation over TCP).
	Joined uint64 `json:"skf_joined"`
	// Split counts IKE messages from clients too large for the path to
	// their backend that went to it as RFC 7383 fragments (keyed), and
	// SplitFragments the fragments sent (retransmissions included);
	// SplitReplays counts retransmissions answered with the same
	// fragments. Unsplit counts such messages relayed whole, by reason:
	// refragment_off, not_negotiated (the backend did not announce
	// IKEV2_FRAGMENTATION_SUPPORTED), no_keys, open_failed, cut_failed.
	Split          uint64 `json:"ike_split"`
	SplitFragments uint64 `json:"ike_split_fragments"`
	SplitReplays   uint64 `json:"ike_split_replays"`
	// SplitKeyPrompts counts key prompts sent to backends that had not
	// yet handed over an IKE SA's keys (refragup.go), SplitKeysAfterPrompt
	// those the keys followed within the wait.
	SplitKeyPrompts      uint64            `json:"ike_split_key_prompts"`
	SplitKeysAfterPrompt uint64            `json:"ike_split_keys_after_prompt"`
	Unsplit              map[string]uint64 `json:"ike_unsplit,omitempty"`
	// SplitCached is the number of split messages whose fragments are
	// held now for retransmissions (until their IKE SA goes, or 5
	// minutes).
	SplitCached int `json:"ike_split_cached"`
}

func (t *tcpServer) stats() *TCPStats {
	st := &TCPStats{Accepted: t.ctr.accepted.Load(), FramesIn: t.ctr.framesIn.Load(), BytesIn: t.ctr.bytesIn.Load(),
		FramesOut: t.ctr.framesOut.Load(), BytesOut: t.ctr.bytesOut.Load(), ESPDropped: t.ctr.espDropped.Load(),
		KeepalivesNotFramed: t.ctr.keepalives.Load(), Joined: t.ctr.joined.Load()}
	for _, ap := range t.p.TCPAddrs() {
		st.Listeners = append(st.Listeners, ap.String())
	}
	t.mu.Lock()
	st.Connections, st.NoFlow = len(t.conns), t.noFlow.Len()
	t.mu.Unlock()
	for i := range t.ctr.refused {
		if n := t.ctr.refused[i].Load(); n != 0 {
			if st.Refused == nil {
				st.Refused = map[string]uint64{}
			}
			st.Refused[tcpRefusalNames[i]] = n
		}
	}
	sc := &t.ctr.split
	st.Split, st.SplitFragments, st.SplitReplays = sc.split.Load(), sc.fragments.Load(), sc.replays.Load()
	st.SplitKeyPrompts, st.SplitKeysAfterPrompt = sc.keyPrompts.Load(), sc.keysAfterPrompt.Load()
	st.SplitCached = t.frag.Stats().Entries
	for i := range sc.missed {
		if n := sc.missed[i].Load(); n != 0 {
			if st.Unsplit == nil {
				st.Unsplit = map[string]uint64{}
			}
			st.Unsplit[splitMiss(i).String()] = n
		}
	}
	for i := range t.ctr.ended {
		if n := t.ctr.ended[i].Load(); n != 0 {
			if st.Ended == nil {
				st.Ended = map[string]uint64{}
			}
			st.Ended[tcpEnd(i).String()] = n
		}
	}
	return st
}

// tcpStats is Stats.TCP: nil without a TCP listener.
func (p *Proxy) tcpStats() *TCPStats {
	if p.tcp == nil {
		return nil
	}
	return p.tcp.stats()
}

const tcpns = ns + "tcp_"

var (
	descTCPConns   = prometheus.NewDesc(tcpns+"connections", "RFC 9329 connections open, by state (flow: its first message opened a flow; no_flow: not yet).", []string{"state"}, nil)
	descTCPAccept  = prometheus.NewDesc(tcpns+"accepted_total", "RFC 9329 connections accepted.", nil, nil)
	descTCPRefused = prometheus.NewDesc(tcpns+"refused_total", "RFC 9329 connections closed at accept, by reason (source, per_address, max_connections).", []string{"reason"}, nil)
	descTCPEnded   = prometheus.NewDesc(tcpns+"ended_total", "RFC 9329 connections ended, by reason.", []string{"reason"}, nil)
	descTCPFrames  = prometheus.NewDesc(tcpns+"frames_total", "RFC 9329 frames, by direction (in: client to backend), also counted in datagrams_total.", []string{"direction"}, nil)
	descTCPBytes   = prometheus.NewDesc(tcpns+"frame_bytes_total", "Payload bytes of RFC 9329 frames, by direction.", []string{"direction"}, nil)
	descTCPESPDrop = prometheus.NewDesc(tcpns+"esp_dropped_total", "ESP toward a TCP client dropped because its send_buffer was full.", nil, nil)
	descTCPJoined  = prometheus.NewDesc(tcpns+"skf_joined_total", "RFC 7383 fragment sets from a backend sent to a TCP client as one SK message (keyed).", nil, nil)
	descTCPSplit   = prometheus.NewDesc(tcpns+"ike_split_total", "IKE messages from TCP clients too large for the path to the backend, sent to it as RFC 7383 fragments (keyed).", nil, nil)
	descTCPSplitFr = prometheus.NewDesc(tcpns+"ike_split_fragments_total", "RFC 7383 fragments sent to backends for TCP clients' messages, retransmissions included.", nil, nil)
	descTCPSplitRe = prometheus.NewDesc(tcpns+"ike_split_replays_total", "Retransmissions of TCP clients' split messages answered with the same fragments.", nil, nil)
	descTCPPrompts = prometheus.NewDesc(tcpns+"ike_split_key_prompts_total", "Key prompts sent to backends for a TCP client's message to split, by outcome (keys: they arrived within the wait).", []string{"outcome"}, nil)
	descTCPUnsplit = prometheus.NewDesc(tcpns+"ike_unsplit_total", "IKE messages from TCP clients too large for the path to the backend relayed whole, by reason.", []string{"reason"}, nil)
	descTCPCached  = prometheus.NewDesc(tcpns+"ike_split_cached", "Split messages of TCP clients whose RFC 7383 fragments are held for retransmissions (until their IKE SA goes, or 5 minutes).", nil, nil)
)

var tcpDescs = []*prometheus.Desc{descTCPConns, descTCPAccept, descTCPRefused, descTCPEnded, descTCPFrames, descTCPBytes, descTCPESPDrop, descTCPJoined,
	descTCPSplit, descTCPSplitFr, descTCPSplitRe, descTCPPrompts, descTCPUnsplit, descTCPCached}

// collectTCP adds the TCP listener's series (none without one).
func collectTCP(st *TCPStats, ch chan<- prometheus.Metric) {
	if st == nil {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(st.Connections-st.NoFlow), "flow")
	ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(st.NoFlow), "no_flow")
	counter(descTCPAccept, st.Accepted)
	for _, r := range tcpRefusalNames {
		counter(descTCPRefused, st.Refused[r], r)
	}
	for _, e := range tcpEndNames {
		counter(descTCPEnded, st.Ended[e], e)
	}
	counter(descTCPFrames, st.FramesIn, "in")
	counter(descTCPFrames, st.FramesOut, "out")
	counter(descTCPBytes, st.BytesIn, "in")
	counter(descTCPBytes, st.BytesOut, "out")
	counter(descTCPESPDrop, st.ESPDropped)
	counter(descTCPJoined, st.Joined)
	counter(descTCPSplit, st.Split)
	counter(descTCPSplitFr, st.SplitFragments)
	counter(descTCPSplitRe, st.SplitReplays)
	counter(descTCPPrompts, st.SplitKeysAfterPrompt, "keys")
	counter(descTCPPrompts, st.SplitKeyPrompts-st.SplitKeysAfterPrompt, "no_keys")
	for _, r := range splitMissNames {
		counter(descTCPUnsplit, st.Unsplit[r], r)
	}
	ch <- prometheus.MustNewConstMetric(descTCPCached, prometheus.GaugeValue, float64(st.SplitCached))
}
