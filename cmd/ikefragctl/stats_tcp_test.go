package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
)

// stats shows the engine's RFC 9329 frames and the proxy's TCP listener,
// its upstream split included (counts by reason sorted, zero ones left
// out); without a listener, no proxy tcp lines.
func TestStatsProxyTCP(t *testing.T) {
	st := control.Stats{
		Records: control.RecordStats{TCPFrames: 7, TCPFramesDropped: 1},
		Engine:  control.EngineStats{TCPFrames: 6},
		ProxyTCP: &control.ProxyTCP{Listeners: []string{"10.99.3.2:4500", "[::]:443"}, Connections: 3, NoFlow: 1, Accepted: 9,
			Refused: map[string]uint64{"per_address": 2, "source": 1}, Ended: map[string]uint64{"idle": 4, "too_long": 0},
			FramesIn: 20, BytesIn: 21000, FramesOut: 18, BytesOut: 19000, ESPDropped: 5, KeepalivesNotFramed: 6, Joined: 2,
			Split: 2, SplitFragments: 12, SplitReplays: 1, SplitKeyPrompts: 3, SplitKeysAfterPrompt: 2,
			Unsplit: map[string]uint64{"not_negotiated": 1, "no_keys": 4}, SplitCached: 1},
	}
	var b bytes.Buffer
	writeStats(&b, &st)
	golden(t, "stats-tcp.golden", b.String())
	for _, want := range []string{"2 message(s) into 12 fragment(s), 1 replay(s), 1 held for retransmissions", "3 key prompt(s), 2 answered with keys",
		"relayed whole no_keys=4 not_negotiated=1", "refused per_address=2 source=1; ended idle=4\n",
		"6 frame(s) taken in, 1 not"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("stats lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	st.ProxyTCP, st.Records, st.Engine = nil, control.RecordStats{}, control.EngineStats{}
	writeStats(&b, &st)
	if strings.Contains(b.String(), "tcp") || strings.Contains(b.String(), "TCP") {
		t.Errorf("stats without a TCP listener mentions TCP:\n%s", b.String())
	}
}
