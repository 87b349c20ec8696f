package capture

import (
	"encoding/binary"

	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Link types that pcap files use for raw IP besides LINKTYPE_RAW (101):
// DLT_RAW is 12 on most systems and 14 on BSD/OS and OpenBSD, and old files
// carry the DLT value instead of the LINKTYPE one. On OpenBSD 12 is DLT_LOOP,
// so these two are told apart by the first byte.
const (
	linkTypeRawDLT12 layers.LinkType = 12
	linkTypeRawDLT14 layers.LinkType = 14
)

// EtherTypes the decoder follows.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100 // IEEE 802.1Q customer tag
	etherTypeQinQ   = 0x88a8 // IEEE 802.1ad service tag
	etherTypeQinQv1 = 0x9100 // pre-standard stacked tag, still seen on switches
)

// maxVLANTags bounds the tag walk: 802.1ad stacks two, a few more covers
// provider networks, anything deeper is garbage.
const maxVLANTags = 4

// Linux packet types (include/uapi/linux/if_packet.h) in cooked headers.
const (
	packetHost      = 0
	packetBroadcast = 1
	packetMulticast = 2
	packetOtherHost = 3
	packetOutgoing  = 4
)

// SupportedLinkType reports whether DecodeFrame handles lt.
func SupportedLinkType(lt layers.LinkType) bool {
	switch lt {
	case layers.LinkTypeNull, layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL,
		layers.LinkTypeLinuxSLL2, layers.LinkTypeRaw, linkTypeRawDLT12,
		linkTypeRawDLT14, layers.LinkTypeIPv4, layers.LinkTypeIPv6, layers.LinkTypeLoop:
		return true
	}
	return false
}

// linkInfo is what the link layer says about a frame.
type linkInfo struct {
	ifindex int
	dir     obs.Direction
	ver     uint8 // 4 or 6 when the link layer names the IP version, else 0
}

// decodeLink strips the link-layer header and returns the network-layer bytes.
func decodeLink(lt layers.LinkType, data []byte) ([]byte, linkInfo, Reason) {
	var li linkInfo
	switch lt {
	case layers.LinkTypeEthernet:
		if len(data) < 14 {
			return nil, li, ReasonLinkHeader
		}
		return etherPayload(binary.BigEndian.Uint16(data[12:14]), data[14:], li)

	case layers.LinkTypeLinuxSLL:
		// packet type, ARPHRD type, address length, 8 address bytes, protocol.
		if len(data) < 16 {
			return nil, li, ReasonLinkHeader
		}
		li.dir = packetTypeDir(binary.BigEndian.Uint16(data[0:2]))
		return etherPayload(binary.BigEndian.Uint16(data[14:16]), data[16:], li)

	case layers.LinkTypeLinuxSLL2:
		// protocol, reserved, ifindex, ARPHRD type, packet type, address
		// length, 8 address bytes.
		if len(data) < 20 {
			return nil, li, ReasonLinkHeader
		}
		li.ifindex = int(binary.BigEndian.Uint32(data[4:8]))
		li.dir = packetTypeDir(uint16(data[10]))
		return etherPayload(binary.BigEndian.Uint16(data[0:2]), data[20:], li)

	case layers.LinkTypeRaw:
		return data, li, reasonNone

	case layers.LinkTypeIPv4:
		li.ver = 4
		return data, li, reasonNone

	case layers.LinkTypeIPv6:
		li.ver = 6
		return data, li, reasonNone

	case linkTypeRawDLT12, linkTypeRawDLT14:
		if len(data) > 0 {
			if v := data[0] >> 4; v == 4 || v == 6 {
				return data, li, reasonNone
			}
		}
		return loopPayload(data, li, true)

	case layers.LinkTypeNull:
		return loopPayload(data, li, false)

	case layers.LinkTypeLoop:
		return loopPayload(data, li, true)
	}
	return nil, li, ReasonLinkType
}

// etherPayload follows an EtherType through any VLAN tags.
func etherPayload(et uint16, data []byte, li linkInfo) ([]byte, linkInfo, Reason) {
	for tags := 0; ; tags++ {
		switch et {
		case etherTypeIPv4:
			li.ver = 4
			return data, li, reasonNone
		case etherTypeIPv6:
			li.ver = 6
			return data, li, reasonNone
		case etherTypeVLAN, etherTypeQinQ, etherTypeQinQv1:
			if tags == maxVLANTags {
				return nil, li, ReasonVLANDepth
			}
			// Tag control information, then the next EtherType.
			if len(data) < 4 {
				return nil, li, ReasonLinkHeader
			}
			et = binary.BigEndian.Uint16(data[2:4])
			data = data[4:]
		default:
			return nil, li, ReasonNotIP
		}
	}
}

// loopPayload decodes the 4-byte address family header of BSD loopback
// captures: host byte order for LINKTYPE_NULL (so either), network byte
// order for LINKTYPE_LOOP.
func loopPayload(data []byte, li linkInfo, bigEndianOnly bool) ([]byte, linkInfo, Reason) {
	if len(data) < 4 {
		return nil, li, ReasonLinkHeader
	}
	af := binary.BigEndian.Uint32(data[:4])
	if !bigEndianOnly && af > 0xffff {
		af = binary.LittleEndian.Uint32(data[:4])
	}
	switch af {
	case 2: // AF_INET everywhere
		li.ver = 4
	case 10, 23, 24, 28, 30: // AF_INET6: Linux, Windows, NetBSD/OpenBSD, FreeBSD, Darwin
		li.ver = 6
	default:
		return nil, li, ReasonLinkFamily
	}
	return data[4:], li, reasonNone
}

func packetTypeDir(t uint16) obs.Direction {
	switch t {
	case packetHost, packetBroadcast, packetMulticast, packetOtherHost:
		return obs.DirIngress
	case packetOutgoing:
		return obs.DirEgress
	}
	return obs.DirUnknown
}
