// Command ikefragctl is the operator's command-line tool.
package main

import "os"

func main() { os.Exit(execute()) }

func execute() int { return 0 }
