package config

import (
	"reflect"
	"slices"
	"sort"
	"strings"
)

// restartKeys are the sections a reload cannot change: they shape the BPF
// programs and maps, the engine, or sockets opened at start. The rest
// (interfaces, metrics, log) a reload applies.
var restartKeys = []string{"ports", "observe", "diag", "control", "proxy", "keys"}

// Changed lists the keys whose values differ between a and b, and those
// of them that need a restart, both sorted. Both configurations come from
// Load, whose values have one form each: equal files give no change.
func Changed(a, b Config) (changed, needRestart []string) {
	fa, fb := Flatten(a), Flatten(b)
	for k, va := range fa {
		if reflect.DeepEqual(va, fb[k]) {
			continue
		}
		changed = append(changed, k)
		top := strings.SplitN(k, ".", 2)[0]
		if slices.Contains(restartKeys, top) {
			needRestart = append(needRestart, k)
		}
	}
	sort.Strings(changed)
	sort.Strings(needRestart)
	return changed, needRestart
}
