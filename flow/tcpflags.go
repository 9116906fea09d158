package flow

// TCP flag bits of TCPFlags' result (the TCP header's byte 13), as IPFIX's
// tcpControlBits and nfdump show them.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// TCPFlags returns the flags byte of the TCP header of frame, whose key
// Parse gave as *k, or 0 when k is not TCP with ports or the frame is cut
// before the flags. It walks again, by the rules of docs/flow-key.md, only
// as far as the key says the headers go (tags, labels, IPv4 header length,
// IPv6 extension headers), so it costs a few loads on a frame just parsed
// and leaves Parse's signature and cost alone. It is the Go twin of what
// parse_ports returns in bpf/stenod.c (the flows map's tcp_flags); the xdp
// tests require the two to agree. It never allocates.
func TCPFlags(frame []byte, k *Key) uint8 {
	if k.Proto != ProtoTCP || k.Flags&FlagPorts == 0 {
		return 0
	}
	off := 14
	if k.Flags&FlagVLAN0 != 0 {
		off += 4
	}
	if k.Flags&FlagVLAN1 != 0 {
		off += 4
	}
	if k.Flags&FlagMPLS != 0 {
		for i := 0; i < maxMPLSLabels; i++ {
			if len(frame)-off < 4 {
				return 0
			}
			e := be.Uint32(frame[off:])
			off += 4
			if e&0x100 != 0 {
				break
			}
		}
	}
	switch {
	case k.Flags&FlagIPv4 != 0:
		if len(frame)-off < 20 {
			return 0
		}
		off += int(frame[off]&0x0f) * 4
	case k.Flags&FlagIPv6 != 0:
		off = ipv6Transport(frame, off)
	default:
		return 0
	}
	if off < 0 || len(frame)-off < 14 {
		return 0
	}
	return frame[off+13]
}

// ipv6Transport returns the offset of the transport header of the IPv6
// packet at frame[off:], walking extension headers as parseIPv6 does, or
// -1 when they do not fit.
func ipv6Transport(frame []byte, off int) int {
	if len(frame)-off < 40 {
		return -1
	}
	nh := frame[off+6]
	off += 40
	for i := 0; i < maxIPv6ExtHeaders; i++ {
		if len(frame)-off < 2 {
			return -1
		}
		var n int
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts:
			n = (int(frame[off+1]) + 1) * 8
		case protoAH:
			n = (int(frame[off+1]) + 2) * 4
		case protoFragment:
			n = 8
		default:
			return off
		}
		if len(frame)-off < n {
			return -1
		}
		nh = frame[off]
		off += n
	}
	if isIPv6Ext(nh) {
		return -1
	}
	return off
}
