package flow

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// Flags say which parts of a Key were found in the frame.
type Flags uint8

const (
	// FlagIPv4 and FlagIPv6 say which outermost IP header was parsed; with
	// neither set, the frame is not IP (ARP, LLDP, truncated, ...).
	FlagIPv4 Flags = 1 << iota
	FlagIPv6
	// FlagPorts: SrcPort and DstPort hold TCP, UDP or SCTP ports. Unset for
	// other protocols and for non-first fragments.
	FlagPorts
	// FlagFragment: the packet is an IP fragment (first or not).
	FlagFragment
	// FlagVLAN0 and FlagVLAN1: VLAN[0] (outer) and VLAN[1] (inner) hold a tag's VID.
	FlagVLAN0
	FlagVLAN1
	// FlagMPLS: MPLS holds the outermost MPLS label.
	FlagMPLS
	// FlagICMP: SrcPort holds the ICMP or ICMPv6 type and DstPort its
	// code (protocol 1 or 58). The Community ID hashes them in the place of
	// ports, and a flow is then one kind of message (echo request, port
	// unreachable, ...). Unset for other protocols and non-first fragments.
	FlagICMP
)

// KeySize is the size of Key in memory and on disk. It equals
// sizeof(struct flow_key) in bpf/stenod.h.
const KeySize = 48

// Key identifies a unidirectional flow. Every packet of a flow has the same
// addresses, ports, protocol, VLAN tags and outer MPLS label, so a query
// primitive evaluated on a Key gives the answer for every packet of the flow.
//
// The layout mirrors struct flow_key in bpf/stenod.h, field for field, with
// no padding; multi-byte integers are in host byte order, addresses in
// network order (an IPv4 address in the first 4 bytes, the rest zero).
type Key struct {
	Src       [16]byte // offset 0
	Dst       [16]byte // offset 16
	SrcPort   uint16   // offset 32; the ICMP type with FlagICMP
	DstPort   uint16   // offset 34; the ICMP code with FlagICMP
	VLAN      [2]uint16
	MPLS      uint32 // outermost label (20 bits)
	EtherType uint16 // the EtherType after the VLAN tags (0x8847 for MPLS)
	Proto     uint8  // IP protocol; for IPv6 the one after extension headers
	Flags     Flags
}

// IsIP reports whether an IPv4 or IPv6 header was parsed.
func (k *Key) IsIP() bool { return k.Flags&(FlagIPv4|FlagIPv6) != 0 }

// Reversed returns the key of the other direction of k's conversation:
// the addresses swapped, and the ports when k has ports (an ICMP key's
// type and code name a message, not an endpoint, and stay).
func (k *Key) Reversed() Key {
	r := *k
	r.Src, r.Dst = k.Dst, k.Src
	if k.Flags&FlagPorts != 0 {
		r.SrcPort, r.DstPort = k.DstPort, k.SrcPort
	}
	return r
}

// SrcAddr returns the source address, or the zero Addr for non-IP frames.
func (k *Key) SrcAddr() netip.Addr { return k.addr(&k.Src) }

// DstAddr returns the destination address, or the zero Addr for non-IP frames.
func (k *Key) DstAddr() netip.Addr { return k.addr(&k.Dst) }

func (k *Key) addr(a *[16]byte) netip.Addr {
	switch {
	case k.Flags&FlagIPv4 != 0:
		return netip.AddrFrom4([4]byte(a[:4]))
	case k.Flags&FlagIPv6 != 0:
		return netip.AddrFrom16(*a)
	}
	return netip.Addr{}
}

// String formats the key for logs, tests and /v1/flows, e.g.
// "proto 6 10.0.0.1:1234 > 10.0.0.2:80 vlan 100" or
// "proto 17 [2001:db8::1]:5353 > [ff02::fb]:5353".
func (k Key) String() string {
	var b strings.Builder
	if !k.IsIP() {
		fmt.Fprintf(&b, "ethertype 0x%04x", k.EtherType)
	} else {
		// With ports, an endpoint is written as netip.AddrPort does:
		// 10.0.0.1:443, [2001:db8::1]:443.
		if k.Flags&FlagPorts != 0 {
			fmt.Fprintf(&b, "proto %d %v > %v", k.Proto,
				netip.AddrPortFrom(k.SrcAddr(), k.SrcPort), netip.AddrPortFrom(k.DstAddr(), k.DstPort))
		} else {
			fmt.Fprintf(&b, "proto %d %v > %v", k.Proto, k.SrcAddr(), k.DstAddr())
		}
		if k.Flags&FlagICMP != 0 {
			fmt.Fprintf(&b, " type %d code %d", k.SrcPort, k.DstPort)
		}
		if k.Flags&FlagFragment != 0 {
			b.WriteString(" frag")
		}
	}
	if k.Flags&FlagVLAN0 != 0 {
		fmt.Fprintf(&b, " vlan %d", k.VLAN[0])
	}
	if k.Flags&FlagVLAN1 != 0 {
		fmt.Fprintf(&b, " vlan %d", k.VLAN[1])
	}
	if k.Flags&FlagMPLS != 0 {
		fmt.Fprintf(&b, " mpls %d", k.MPLS)
	}
	return b.String()
}

// MarshalBinary encodes k in the layout of struct flow_key (little endian,
// the byte order of every platform stenod runs on).
func (k *Key) MarshalBinary() ([]byte, error) {
	b := make([]byte, KeySize)
	k.Put(b)
	return b, nil
}

// Put writes k into b[:KeySize] without allocating.
func (k *Key) Put(b []byte) {
	_ = b[KeySize-1]
	copy(b[0:16], k.Src[:])
	copy(b[16:32], k.Dst[:])
	le := binary.LittleEndian
	le.PutUint16(b[32:], k.SrcPort)
	le.PutUint16(b[34:], k.DstPort)
	le.PutUint16(b[36:], k.VLAN[0])
	le.PutUint16(b[38:], k.VLAN[1])
	le.PutUint32(b[40:], k.MPLS)
	le.PutUint16(b[44:], k.EtherType)
	b[46] = k.Proto
	b[47] = byte(k.Flags)
}

// UnmarshalBinary decodes a key written by MarshalBinary or by the kernel.
func (k *Key) UnmarshalBinary(b []byte) error {
	if len(b) < KeySize {
		return fmt.Errorf("flow key: %d bytes, want %d", len(b), KeySize)
	}
	k.Get(b)
	return nil
}

// Get reads k from b[:KeySize] without allocating. The caller checks the length.
func (k *Key) Get(b []byte) {
	_ = b[KeySize-1]
	copy(k.Src[:], b[0:16])
	copy(k.Dst[:], b[16:32])
	le := binary.LittleEndian
	k.SrcPort = le.Uint16(b[32:])
	k.DstPort = le.Uint16(b[34:])
	k.VLAN[0] = le.Uint16(b[36:])
	k.VLAN[1] = le.Uint16(b[38:])
	k.MPLS = le.Uint32(b[40:])
	k.EtherType = le.Uint16(b[44:])
	k.Proto = b[46]
	k.Flags = Flags(b[47])
}
