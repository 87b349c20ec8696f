// Package kfeattest lets tests skip, naming the feature, where the kernel
// lacks what they exercise; every other failure stays a failure.
package kfeattest

import (
	"testing"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
)

// Require skips tb when probe reports a missing kernel feature and fails
// it when the probe itself fails.
func Require(tb testing.TB, probe func() error) {
	tb.Helper()
	if err := probe(); err != nil {
		if kfeat.IsMissing(err) {
			tb.Skip(err)
		}
		tb.Fatal(err)
	}
}
