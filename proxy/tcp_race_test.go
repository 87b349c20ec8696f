//go:build race

package proxy

// tcpRaceEnabled: the race detector multiplies memory (shadow memory,
// larger stacks), so memory bounds are checked without it only.
const tcpRaceEnabled = true
