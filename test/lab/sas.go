package lab

// Reading a daemon's IKE and CHILD SAs (swanctl --list-sas).

import (
	"context"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// SA is an IKE SA as `swanctl --list-sas` shows it.
type SA struct {
	Name, State string
	// SPIi and SPIr are 16 lower-case hex digits.
	SPIi, SPIr string
	// Local and Remote are the IKE endpoints, e.g. 10.99.1.2:4500.
	Local, Remote netip.AddrPort
	// Proposal like "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072".
	Proposal string
	Children []ChildSA
}

// ChildSA is a CHILD_SA of an SA.
type ChildSA struct {
	Name, State string
	// Proposal like "AES_CBC-256/HMAC_SHA2_256_128".
	Proposal string
}

var (
	reIKESA   = regexp.MustCompile(`^(\S+): #\d+, (\S+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r\*?`)
	reIKEProp = regexp.MustCompile(`^  ([A-Z0-9_]+(?:-\d+)?(?:/[A-Z0-9_]+(?:-\d+)?)+)\s*$`)
	reChildSA = regexp.MustCompile(`^  (\S+): #\d+, reqid \d+, (\S+), [^,]+, ESP:(\S+)`)
	reIKEEnd  = regexp.MustCompile(`^  (local|remote) +'[^']*' @ (\S+)\[(\d+)\]`)
)

// SAs lists the daemon's IKE SAs.
func (d *Daemon) SAs(ctx context.Context) ([]SA, error) {
	out, err := d.Swanctl(ctx, "--list-sas")
	if err != nil {
		return nil, err
	}
	return parseSAs(out), nil
}

func parseSAs(out string) []SA {
	var sas []SA
	for _, line := range strings.Split(out, "\n") {
		if m := reIKESA.FindStringSubmatch(line); m != nil {
			sas = append(sas, SA{Name: m[1], State: m[2], SPIi: m[3], SPIr: m[4]})
			continue
		}
		if len(sas) == 0 {
			continue
		}
		sa := &sas[len(sas)-1]
		if m := reIKEEnd.FindStringSubmatch(line); m != nil {
			a, err1 := netip.ParseAddr(m[2])
			port, err2 := strconv.ParseUint(m[3], 10, 16)
			if err1 == nil && err2 == nil {
				if m[1] == "local" {
					sa.Local = netip.AddrPortFrom(a, uint16(port))
				} else {
					sa.Remote = netip.AddrPortFrom(a, uint16(port))
				}
			}
		} else if m := reChildSA.FindStringSubmatch(line); m != nil {
			sa.Children = append(sa.Children, ChildSA{Name: m[1], State: m[2], Proposal: m[3]})
		} else if m := reIKEProp.FindStringSubmatch(line); m != nil && sa.Proposal == "" {
			sa.Proposal = m[1]
		}
	}
	return sas
}
