package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ipFragCounters are the kernel's IP fragmentation and reassembly
// counters, as /proc/net/snmp names them (snmp6 adds an "Ip6" prefix).
// They are the ground truth to compare the observer's train counts with.
var ipFragCounters = []string{"ReasmReqds", "ReasmOKs", "ReasmFails", "ReasmTimeout", "FragOKs", "FragFails", "FragCreates"}

// readIPFragStats reads those counters for the calling process's network
// namespace: family ("ipv4", "ipv6") → counter → value. IPv6 is left out
// where the kernel has it disabled.
func readIPFragStats() (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return nil, err
	}
	v4, err := parseSNMP(b, "Ip:")
	if err != nil {
		return nil, err
	}
	out["ipv4"] = pick(v4, "")
	if b, err := os.ReadFile("/proc/net/snmp6"); err == nil {
		out["ipv6"] = pick(parseSNMP6(b), "Ip6")
	}
	return out, nil
}

func pick(all map[string]uint64, prefix string) map[string]uint64 {
	m := make(map[string]uint64, len(ipFragCounters))
	for _, name := range ipFragCounters {
		if v, ok := all[prefix+name]; ok {
			m[name] = v
		}
	}
	return m
}

// parseSNMP reads the header/value line pair of one protocol from
// /proc/net/snmp.
func parseSNMP(b []byte, proto string) (map[string]uint64, error) {
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != proto {
			continue
		}
		if header == nil {
			header = fields[1:]
			continue
		}
		vals := fields[1:]
		if len(vals) != len(header) {
			return nil, fmt.Errorf("/proc/net/snmp: %s has %d names and %d values", proto, len(header), len(vals))
		}
		m := make(map[string]uint64, len(header))
		for i, name := range header {
			// Some counters (Forwarding, DefaultTTL) are not counters and
			// may be negative in other protocols: skip what is not a uint.
			if v, err := strconv.ParseUint(vals[i], 10, 64); err == nil {
				m[name] = v
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("/proc/net/snmp has no %s lines", proto)
}

// parseSNMP6 reads /proc/net/snmp6's "name value" lines.
func parseSNMP6(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}
