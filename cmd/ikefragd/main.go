// Command ikefragd is the ikefrag daemon.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "ikefragd: the daemon is not implemented yet; use ikefragctl decode FILE to read captures")
	os.Exit(1)
}
