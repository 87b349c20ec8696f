package capture

// Reason says why a frame was not decoded into an IP packet. It implements
// error so DecodeFrame can return it without allocating; use errors.As to get
// it back from a wrapped error.
type Reason uint8

// Reasons a frame is skipped. Values are stable within a build only; use the
// names.
const (
	reasonNone Reason = iota

	ReasonLinkType      // link type not supported by the decoder
	ReasonLinkHeader    // frame shorter than its link-layer header
	ReasonNotIP         // link layer carries something other than IPv4/IPv6 (ARP, LLDP, ...)
	ReasonVLANDepth     // more stacked VLAN tags than the decoder walks
	ReasonLinkFamily    // BSD loopback address family is not IPv4 or IPv6
	ReasonIPVersion     // IP version nibble does not match the link layer's claim
	ReasonIPHeader      // fixed IP header cut short, or IPv4 IHL below 5
	ReasonIPLength      // IP length field smaller than the header or larger than the frame
	ReasonIPv6ExtHeader // IPv6 extension header chain malformed or too long
	ReasonJumbogram     // IPv6 payload length 0 with a Hop-by-Hop header (RFC 2675)
	ReasonFragLength    // non-last fragment whose data is not a multiple of 8 bytes
	ReasonFragOverflow  // fragment ends beyond the 65535-byte IP limit
	ReasonUDPHeader     // UDP header missing (packet too short for 8 bytes)
	ReasonUDPLength     // UDP length field below 8 or beyond the IP payload
	ReasonSnapped       // the capture snapped the frame inside a header that is needed

	// NumReasons sizes arrays indexed by Reason.
	NumReasons
)

var reasonText = [NumReasons]string{
	reasonNone:          "ok",
	ReasonLinkType:      "unsupported link type",
	ReasonLinkHeader:    "frame shorter than link-layer header",
	ReasonNotIP:         "not IPv4 or IPv6",
	ReasonVLANDepth:     "too many VLAN tags",
	ReasonLinkFamily:    "loopback address family not IPv4 or IPv6",
	ReasonIPVersion:     "IP version does not match link layer",
	ReasonIPHeader:      "IP header too short",
	ReasonIPLength:      "IP length field inconsistent with frame",
	ReasonIPv6ExtHeader: "IPv6 extension header chain malformed",
	ReasonJumbogram:     "IPv6 jumbogram",
	ReasonFragLength:    "non-last fragment length not a multiple of 8",
	ReasonFragOverflow:  "fragment ends beyond 65535 bytes",
	ReasonUDPHeader:     "UDP header truncated",
	ReasonUDPLength:     "UDP length field inconsistent with IP payload",
	ReasonSnapped:       "capture snapped inside a header",
}

var reasonName = [NumReasons]string{
	reasonNone:          "none",
	ReasonLinkType:      "link-type",
	ReasonLinkHeader:    "link-header",
	ReasonNotIP:         "not-ip",
	ReasonVLANDepth:     "vlan-depth",
	ReasonLinkFamily:    "link-family",
	ReasonIPVersion:     "ip-version",
	ReasonIPHeader:      "ip-header",
	ReasonIPLength:      "ip-length",
	ReasonIPv6ExtHeader: "ipv6-ext-header",
	ReasonJumbogram:     "jumbogram",
	ReasonFragLength:    "frag-length",
	ReasonFragOverflow:  "frag-overflow",
	ReasonUDPHeader:     "udp-header",
	ReasonUDPLength:     "udp-length",
	ReasonSnapped:       "snapped",
}

// Error returns a human-readable description.
func (r Reason) Error() string {
	if r < NumReasons {
		return reasonText[r]
	}
	return "unknown reason"
}

// String returns a short stable name, suitable as a metric label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonName[r]
	}
	return "unknown"
}

// Malformed reports whether the reason means the frame is broken, as opposed
// to well-formed traffic the decoder does not handle (non-IP, snapped).
func (r Reason) Malformed() bool {
	switch r {
	case reasonNone, ReasonLinkType, ReasonNotIP, ReasonSnapped, ReasonJumbogram:
		return false
	}
	return r < NumReasons
}
