//go:build !race

package proxy

const tcpRaceEnabled = false
