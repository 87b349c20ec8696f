package ebpf

import "testing"

// TestCounterNames: every counter, those the BPF programs keep (enum
// counter_id) and those user space keeps, has a name of its own.
func TestCounterNames(t *testing.T) {
	seen := map[string]CounterID{}
	for id := CounterID(0); id < NumCounters; id++ {
		name := id.String()
		if name == "" || name == "unknown" {
			t.Errorf("counter %d has no name", id)
			continue
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("counters %d and %d are both %q", prev, id, name)
		}
		seen[name] = id
	}
	if NumCounters.String() != "unknown" {
		t.Errorf("NumCounters is named %q", NumCounters)
	}
}
