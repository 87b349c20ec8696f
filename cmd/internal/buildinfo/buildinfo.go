// Package buildinfo holds the version of ikefragd and ikefragctl. The
// Makefile stamps it from `git describe --tags --always --dirty`:
//
//	go build -ldflags "-X github.com/ikefrag/ikefrag/cmd/internal/buildinfo.version=$(git describe --tags --always --dirty)"
//
// Every build path (make build, run, install, deb) passes that flag. A
// plain `go build` leaves it unset; Version then falls back to the VCS
// revision Go records in the binary, as "dev-<revision>[-dirty]".
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags -X (see the package comment).
var version string

// Version returns the build's version.
func Version() string {
	if version != "" {
		return version
	}
	v := "dev"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if rev != "" {
		v += "-" + rev
		if dirty {
			v += "-dirty"
		}
	}
	return v
}

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }

// LDFlag is the linker flag that sets the version, for builds run from
// tests.
func LDFlag(v string) string {
	return "-X github.com/ikefrag/ikefrag/cmd/internal/buildinfo.version=" + v
}
