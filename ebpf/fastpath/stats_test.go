package fastpath

import "testing"

// TestPassReasonNames: every pass reason of enum fp_stat has a label of
// its own, and the reasons lie between the redirect and drop slots.
func TestPassReasonNames(t *testing.T) {
	seen := map[string]PassReason{}
	for _, r := range PassReasons() {
		name := r.String()
		if name == "" || name == "unknown" {
			t.Errorf("pass reason %d has no name", int(r))
			continue
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("pass reasons %d and %d are both %q", int(prev), int(r), name)
		}
		seen[name] = r
	}
	if len(seen) != numStats-2 || statRedirect != 0 || statDropped != numStats-1 {
		t.Errorf("%d named reasons, %d slots (redirect %d, dropped %d)", len(seen), numStats, statRedirect, statDropped)
	}
}
