package diag_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// liveFinal feeds records to an engine as the daemon does (the live judge
// asked after every record), then lets every session settle, and returns
// the final verdicts the live judge reported, and the provisional ones.
func liveFinal(recs []obs.Record, opt diag.Options) (final, provisional []diag.Verdict) {
	e := diag.New(opt)
	take := func() {
		for _, v := range e.Judge() {
			switch {
			case v.Withdrawn:
			case v.Provisional:
				provisional = append(provisional, v.Verdict)
			default:
				final = append(final, v.Verdict)
			}
		}
	}
	for _, r := range recs {
		e.Add(r)
		take()
	}
	e.Advance(e.Now().Add(diag.DefaultOptions.Settle + time.Second))
	take()
	return final, provisional
}

// captureVerdicts is what analyze gives for the same records.
func captureVerdicts(recs []obs.Record, opt diag.Options) []diag.Verdict {
	e := diag.New(opt)
	for _, r := range recs {
		e.Add(r)
	}
	return e.Verdicts(true)
}

// canon renders verdicts for comparison, in a stable order.
func canon(vs []diag.Verdict) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d %s %s %s | %s | %s | %s", v.Session, v.Code, v.Direction, v.Exchange, v.Summary,
			strings.Join(v.Evidence, "; "), strings.Join(v.Remedy, "; ")))
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// verdictKeys renders what identifies verdicts (session, code,
// direction, exchange), in a stable order.
func verdictKeys(vs []diag.Verdict) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d %s %s %s", v.Session, v.Code, v.Direction, v.Exchange))
	}
	sortStrings(out)
	return out
}

// Live and capture verdicts come from the same code. Judged once after the
// traffic, at the same clock, the live judge gives word for word the
// verdicts a capture gives. Fed the records one by one, as the daemon is,
// it ends with every verdict of the capture (their evidence may be the
// earlier view at the time each was first drawn). The live judge reports a
// verdict once and never takes back a final one: an OK drawn when the
// first IKE_AUTH response came by stays reported when that response later
// proves lost (lab d and e); those are the only extras allowed, and logged.
func TestLiveEqualsCapture(t *testing.T) {
	for _, c := range repoCases() {
		t.Run(c.name, func(t *testing.T) {
			recs := c.input(t)
			if len(captureVerdicts(recs, c.opt(t))) == 0 {
				t.Fatal("no verdicts")
			}
			settled := func() *diag.Engine {
				e := diag.New(c.opt(t))
				for _, r := range recs {
					e.Add(r)
				}
				e.Advance(e.Now().Add(diag.DefaultOptions.Settle + time.Second))
				return e
			}
			e := settled()
			var once []diag.Verdict
			for _, v := range e.Judge() {
				once = append(once, v.Verdict)
			}
			want := settled().Verdicts(false)
			if got, want := canon(once), canon(want); !reflect.DeepEqual(got, want) {
				t.Errorf("judged once, live verdicts differ from the capture's:\nlive:\n%s\ncapture:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}

			final, _ := liveFinal(recs, c.opt(t))
			live := map[string]bool{}
			for _, k := range verdictKeys(final) {
				live[k] = true
			}
			for _, k := range verdictKeys(want) {
				if !live[k] {
					t.Errorf("record by record, the live judge never gave %s", k)
				}
				delete(live, k)
			}
			for k := range live {
				if strings.Fields(k)[1] != string(diag.OK) {
					t.Errorf("record by record, the live judge gave %s, which the capture does not", k)
				} else {
					t.Logf("reported live before the session settled, not in the capture: %s", k)
				}
			}
		})
	}
}

// What one session proves about a peer reaches every session's verdict
// judged at the same time, whatever their order: session 1's responses
// toward the client are lost as IKE fragments that were IP-fragmented
// again, and its fragment-size remedy is sized by the largest datagram
// known to have reached the client, which only session 2 (judged after
// session 1, by ID) proves when it settles.
func TestLiveEvidenceOrderIndependent(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	w.send(100*time.Millisecond, true, w.authRequest(1, 200))
	skf := func(n uint16) []byte {
		return w.msg(false, true, ike.ExchangeIKEAuth, 1, 0x5150, ike.Payload{Type: ike.PayloadEncryptedFragment,
			Body: &ike.EncryptedFragment{NextPayload: ike.PayloadIDr, Number: n, Total: 2, Data: make([]byte, 1500)}})
	}
	fragmented := func(at time.Duration, b []byte) {
		d := w.datagram(at, false, b)
		d.Frags = []obs.Frag{{Offset: 0, Len: 1480, MF: true, IPLen: 1500}, {Offset: 1480, Len: len(b) + 8 - 1480, IPLen: 28 + len(b) - 1480}}
		w.e.Add(obs.Record{Datagram: d})
	}
	for i, at := range []time.Duration{150 * time.Millisecond, 2150 * time.Millisecond} {
		fragmented(at, skf(1))
		fragmented(at+time.Millisecond, skf(2))
		w.send(2100*time.Millisecond+time.Duration(i)*2*time.Second, true, w.authRequest(1, 200))
	}
	// Session 2: an IKE_SA_INIT answered with a large response, sent once
	// and never asked for again: once settled, it proves that a datagram
	// that large reached the client.
	w.spi = 0xabc2
	w.send(3*time.Second, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	large := w.msg(false, true, ike.ExchangeIKESAInit, 0, 0x5151, sa(baseline), ke(ike.GroupMODP2048, 960), nonce())
	w.send(3*time.Second+20*time.Millisecond, false, large)
	arrived := 20 + 8 + len(large) // its IP packet

	w.e.Advance(w.e.Now().Add(diag.DefaultOptions.Settle + time.Second))
	var live *diag.Verdict
	for _, v := range w.e.Judge() {
		if v.Code == diag.IKEFragmentsExceedPMTU && !v.Provisional {
			live = &v.Verdict
		}
	}
	if live == nil {
		t.Fatal("no final IKE_FRAGMENTS_EXCEED_PMTU from the live judge")
	}
	if live.Session != 1 || live.Direction != diag.TowardClient {
		t.Fatalf("verdict %+v", live)
	}
	want := findVerdict(w.e.Report(true), diag.IKEFragmentsExceedPMTU)
	if !reflect.DeepEqual(live.Remedy, want.Remedy) {
		t.Errorf("live remedy %q, capture remedy %q", live.Remedy, want.Remedy)
	}
	if !strings.Contains(strings.Join(live.Remedy, " "), fmt.Sprintf("fragment_size = %d ", arrived)) {
		t.Errorf("remedy not sized by session 2's evidence: %q", live.Remedy)
	}
}
