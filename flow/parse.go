package flow

import "encoding/binary"

// EtherTypes the flow key tells apart (ARP is named for the query side).
const (
	EtherTypeIPv4      = 0x0800
	EtherTypeARP       = 0x0806
	EtherTypeVLAN      = 0x8100 // 802.1Q
	EtherTypeQinQ      = 0x88a8 // 802.1ad
	EtherTypeIPv6      = 0x86dd
	EtherTypeMPLS      = 0x8847
	EtherTypeMPLSMcast = 0x8848
)

// IP protocol numbers the parser and the query primitives act on.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
	ProtoSCTP   = 132

	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoDestOpts = 60
)

// The bounds of the three walks. The BPF verifier needs them in the C twin;
// they are part of the spec, so the Go parser stops at the same places.
const (
	maxVLANTags       = 2
	maxMPLSLabels     = 8
	maxIPv6ExtHeaders = 8
)

var be = binary.BigEndian

// Parse derives the flow key of an Ethernet frame into *k, following
// docs/flow-key.md rule for rule, so that it agrees byte for byte with the XDP
// program. It never allocates or panics, and every loop has a fixed bound (the
// BPF verifier requires that of the C twin; keeping the Go code shaped the same
// makes the two easy to compare). frame may be truncated anywhere.
func Parse(frame []byte, k *Key) {
	*k = Key{}
	if len(frame) < 14 {
		return
	}
	et := be.Uint16(frame[12:]) // after destination and source MAC
	off := 14
	for i := 0; i < maxVLANTags && (et == EtherTypeVLAN || et == EtherTypeQinQ); i++ {
		if len(frame)-off < 4 {
			// et stays a tag type, which nothing below parses.
			break
		}
		// A tag is TCI (PCP 3 bits, DEI 1, VID 12) then the next EtherType.
		k.VLAN[i] = be.Uint16(frame[off:]) & 0x0fff
		k.Flags |= FlagVLAN0 << i
		et = be.Uint16(frame[off+2:])
		off += 4
	}
	k.EtherType = et
	switch et {
	case EtherTypeIPv4:
		parseIPv4(frame[off:], k)
	case EtherTypeIPv6:
		parseIPv6(frame[off:], k)
	case EtherTypeMPLS, EtherTypeMPLSMcast:
		parseMPLS(frame[off:], k)
	}
}

// parseMPLS takes the label stack at the start of b, each entry 32 bits:
// label (20), traffic class (3), bottom of stack (1), TTL (8). MPLS carries no
// payload type, so the first nibble after the bottom of stack decides.
func parseMPLS(b []byte, k *Key) {
	off := 0
	for i := 0; i < maxMPLSLabels; i++ {
		if len(b)-off < 4 {
			return
		}
		e := be.Uint32(b[off:])
		off += 4
		if i == 0 {
			k.MPLS = e >> 12
			k.Flags |= FlagMPLS
		}
		if e&0x100 != 0 {
			if off >= len(b) {
				return
			}
			switch b[off] >> 4 {
			case 4:
				parseIPv4(b[off:], k)
			case 6:
				parseIPv6(b[off:], k)
			}
			return
		}
	}
}

// parseIPv4 reads the IPv4 header at the start of b: version and IHL (byte 0),
// flags and fragment offset (6-7), protocol (9), source (12-15), destination
// (16-19), options up to IHL*4. The total-length field is deliberately
// ignored: snap-length truncated frames must still parse.
func parseIPv4(b []byte, k *Key) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	hl := int(b[0]&0x0f) * 4
	if hl < 20 || hl > len(b) {
		return
	}
	k.Flags |= FlagIPv4
	copy(k.Src[:4], b[12:16])
	copy(k.Dst[:4], b[16:20])
	k.Proto = b[9]
	ff := be.Uint16(b[6:]) // 3 flag bits (reserved, DF, MF), 13 bits offset
	if ff&0x3fff != 0 {
		k.Flags |= FlagFragment
		if ff&0x1fff != 0 {
			return
		}
	}
	parsePorts(b[hl:], k)
}

// parseIPv6 reads the IPv6 header at the start of b (version in the top
// nibble of byte 0, next header 6, source 8-23, destination 24-39) and walks up
// to maxIPv6ExtHeaders extension headers to find the upper-layer protocol.
// Every extension header starts with its next header; byte 1 is its length,
// in 8-byte units not counting the first 8, except for AH (4-byte units not
// counting the first 8) and fragment (fixed 8 bytes, offset in bytes 2-3).
func parseIPv6(b []byte, k *Key) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return
	}
	k.Flags |= FlagIPv6
	copy(k.Src[:], b[8:24])
	copy(k.Dst[:], b[24:40])
	nh := b[6]
	off := 40
	ports := true
	for i := 0; i < maxIPv6ExtHeaders; i++ {
		rest := len(b) - off
		var n int
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts:
			if rest < 2 {
				k.Proto = nh
				return
			}
			n = (int(b[off+1]) + 1) * 8
		case protoAH:
			if rest < 2 {
				k.Proto = nh
				return
			}
			n = (int(b[off+1]) + 2) * 4
		case protoFragment:
			n = 8
			if rest >= n {
				k.Flags |= FlagFragment
				if be.Uint16(b[off+2:])&0xfff8 != 0 {
					ports = false
				}
			}
		default:
			k.Proto = nh
			if ports {
				parsePorts(b[off:], k)
			}
			return
		}
		if rest < n {
			k.Proto = nh
			return
		}
		nh = b[off]
		off += n
	}
	// maxIPv6ExtHeaders walked: the next header is final only if it is not
	// one more extension header.
	k.Proto = nh
	if ports && !isIPv6Ext(nh) {
		parsePorts(b[off:], k)
	}
}

func isIPv6Ext(p uint8) bool {
	switch p {
	case protoHopByHop, protoRouting, protoDestOpts, protoAH, protoFragment:
		return true
	}
	return false
}

// parsePorts reads the ports at the start of the transport header b for the
// protocols that have them, needing only the 4 bytes the ports occupy, and an
// ICMP or ICMPv6 header's type and code (its first 2 bytes).
func parsePorts(b []byte, k *Key) {
	switch k.Proto {
	case ProtoICMP, ProtoICMPv6:
		if len(b) < 2 {
			return
		}
		k.SrcPort = uint16(b[0])
		k.DstPort = uint16(b[1])
		k.Flags |= FlagICMP
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		if len(b) < 4 {
			return
		}
		k.SrcPort = be.Uint16(b[0:])
		k.DstPort = be.Uint16(b[2:])
		k.Flags |= FlagPorts
	}
}
