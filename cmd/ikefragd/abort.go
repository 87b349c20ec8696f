package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// abortOnSIGABRT makes the watchdog's SIGABRT a failure that systemd
// restarts. Go's own handling of SIGABRT dumps the goroutines and exits with
// status 2, which is the status of a configuration error, and the unit does
// not restart on that (RestartPreventExitStatus=2): a daemon the watchdog
// caught stuck would stay down. The goroutines are still written out, for
// the journal. It returns a function that stops listening.
func abortOnSIGABRT(stderr io.Writer) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGABRT)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			fmt.Fprintf(stderr, "ikefragd: SIGABRT (the service manager's watchdog, or an operator): exiting with status %d; goroutines:\n%s\n", exitFailure, buf[:n])
			os.Exit(exitFailure)
		case <-done:
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
