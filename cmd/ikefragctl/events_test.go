package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
)

// A provisional verdict says so in the text form of events, as it does in
// JSON: it may still be withdrawn.
func TestWriteEventMarksProvisional(t *testing.T) {
	for _, prov := range []bool{false, true} {
		var b bytes.Buffer
		writeEvent(&b, &control.Event{Time: time.Unix(0, 0), Verdict: &diag.Verdict{
			Code: diag.FragmentsDropped, Severity: diag.Error, Provisional: prov, Summary: "s",
		}})
		if got := strings.Contains(b.String(), "[provisional]"); got != prov {
			t.Errorf("provisional %v: %q", prov, b.String())
		}
	}
}
