package main

import (
	"encoding/json"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
)

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelFeatures says what this kernel gives the daemon: how programs are
// attached, which observer build runs, whether the ESP fast path and kernel
// drop reasons can be used, and for each "no" why. obs may be nil (before
// the observer is loaded, or for --features).
func kernelFeatures(obs *ebpf.Observer) control.Kernel {
	r := kfeat.Probe()
	k := control.Kernel{Release: kernelRelease(), Attach: "tcx", FastPath: r.CheckMTU, DropReasons: r.DropReasons}
	if r.TCX != "yes" {
		k.Attach = "tc (" + r.TCX + ")"
	}
	k.ObserverBuild = string(ebpf.BuildDefault)
	if r.FetchAtomics != "yes" {
		k.ObserverBuild = string(ebpf.BuildCompat) + " (" + r.FetchAtomics + ")"
	}
	if obs != nil {
		f := obs.Features()
		if !f.DropReasons {
			k.DropReasons = "no: " + f.DropsWhy
		}
	}
	return k
}

// printFeatures writes the kernel report as JSON (ikefragd --features).
func printFeatures(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(kernelFeatures(nil))
}

// yesNo reduces a feature state ("yes" or "no: why") to its first word.
func yesNo(s string) string {
	if s == "yes" {
		return "yes"
	}
	return "no"
}

var descKernel = prometheus.NewDesc(ns+"_kernel_info",
	"The running kernel and what ikefragd uses on it: attach (tcx or tc), observer_build (default or compat), fast_path and drop_reasons (yes or no). Always 1.",
	[]string{"release", "attach", "observer_build", "fast_path", "drop_reasons"}, nil)

func kernelMetric(k control.Kernel) prometheus.Metric {
	return prometheus.MustNewConstMetric(descKernel, prometheus.GaugeValue, 1,
		k.Release, strings.Fields(k.Attach)[0], strings.Fields(k.ObserverBuild)[0], yesNo(k.FastPath), yesNo(k.DropReasons))
}
