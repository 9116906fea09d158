package flow

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// Frame builders for the table. Each returns the bytes of one header with
// fixed, recognisable addresses so that a wrong offset shows up as a wrong
// address or port.

var (
	mac1 = []byte{0x02, 0, 0, 0, 0, 1}
	mac2 = []byte{0x02, 0, 0, 0, 0, 2}
	v4a  = [4]byte{10, 0, 0, 1}
	v4b  = [4]byte{10, 0, 0, 2}
	v6a  = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	v6b  = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// ethHdr is destination MAC, source MAC, EtherType.
func ethHdr(et uint16) []byte { return cat(mac2, mac1, u16(et)) }

// tag is an 802.1Q/802.1ad tag after its TPID: TCI, then the next EtherType.
func tag(tci, et uint16) []byte { return cat(u16(tci), u16(et)) }

// label is an MPLS label stack entry: label 20 bits, TC 3, S 1, TTL 8.
func label(l uint32, bottom bool) []byte {
	e := l<<12 | 64
	if bottom {
		e |= 0x100
	}
	return binary.BigEndian.AppendUint32(nil, e)
}

// ip4 is an IPv4 header from 10.0.0.1 to 10.0.0.2 with the given flags and
// fragment offset field and options (a multiple of 4 bytes).
func ip4(proto uint8, flagsFrag uint16, opts []byte) []byte {
	hl := 20 + len(opts)
	h := []byte{
		0x40 | byte(hl/4), 0, // version, IHL, TOS
		0, byte(hl + 8), // total length (not checked)
		0x12, 0x34, // id
		byte(flagsFrag >> 8), byte(flagsFrag),
		64, proto, 0, 0, // TTL, protocol, checksum
	}
	h = append(h, v4a[:]...)
	h = append(h, v4b[:]...)
	return append(h, opts...)
}

// ip6 is an IPv6 header from 2001:db8::1 to 2001:db8::2.
func ip6(nh uint8) []byte {
	h := []byte{0x60, 0, 0, 0, 0, 8, nh, 64}
	h = append(h, v6a[:]...)
	return append(h, v6b[:]...)
}

// ext6 is a hop-by-hop, routing or destination options header of
// (units+1)*8 bytes.
func ext6(nh, units uint8) []byte {
	h := make([]byte, (int(units)+1)*8)
	h[0], h[1] = nh, units
	return h
}

// ah6 is an authentication header of (units+2)*4 bytes.
func ah6(nh, units uint8) []byte {
	h := make([]byte, (int(units)+2)*4)
	h[0], h[1] = nh, units
	return h
}

// frag6 is an IPv6 fragment header; off is in 8-byte units.
func frag6(nh uint8, off uint16, more bool) []byte {
	v := off << 3
	if more {
		v |= 1
	}
	return cat([]byte{nh, 0}, u16(v), []byte{0xde, 0xad, 0xbe, 0xef})
}

// l4 is n bytes of transport header starting with ports 1234 > 80.
func l4(n int) []byte {
	h := make([]byte, max(n, 4))
	binary.BigEndian.PutUint16(h[0:], 1234)
	binary.BigEndian.PutUint16(h[2:], 80)
	return h[:n]
}

// serialize builds a frame with gopacket, for the plain cases.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if nl, ok := nl.(gopacket.NetworkLayer); ok {
					if err := n.SetNetworkLayerForChecksum(nl); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

// Expected keys for the table.

func key4(proto uint8, flags Flags) Key {
	k := Key{EtherType: EtherTypeIPv4, Proto: proto, Flags: FlagIPv4 | flags}
	copy(k.Src[:], v4a[:])
	copy(k.Dst[:], v4b[:])
	if flags&FlagPorts != 0 {
		k.SrcPort, k.DstPort = 1234, 80
	}
	return k
}

func key6(proto uint8, flags Flags) Key {
	k := Key{EtherType: EtherTypeIPv6, Proto: proto, Flags: FlagIPv6 | flags, Src: v6a, Dst: v6b}
	if flags&FlagPorts != 0 {
		k.SrcPort, k.DstPort = 1234, 80
	}
	return k
}

func (k Key) withTypeCode(typ, code uint16) Key {
	k.SrcPort, k.DstPort = typ, code
	return k
}

func (k Key) withVLAN(vids ...uint16) Key {
	for i, v := range vids {
		k.VLAN[i] = v
		k.Flags |= FlagVLAN0 << i
	}
	return k
}

func (k Key) withMPLS(et uint16, l uint32) Key {
	k.EtherType, k.MPLS, k.Flags = et, l, k.Flags|FlagMPLS
	return k
}

type parseCase struct {
	name  string
	frame []byte
	want  Key
}

func parseCases(t testing.TB) []parseCase {
	var cs []parseCase
	add := func(name string, frame []byte, want Key) {
		cs = append(cs, parseCase{name, frame, want})
	}
	// Rule 1: runts.
	full := cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), l4(8))
	for n := 0; n < 14; n++ {
		add(fmt.Sprintf("runt %d bytes", n), full[:n], Key{})
	}
	add("ethernet header only", full[:14], Key{EtherType: EtherTypeIPv4})
	add("ARP", cat(ethHdr(EtherTypeARP), make([]byte, 28)), Key{EtherType: EtherTypeARP})
	add("802.3 length field", cat(ethHdr(0x0040), []byte{0xaa, 0xaa, 3, 0, 0, 0, 0x08, 0x00}, ip4(ProtoUDP, 0, nil), l4(8)),
		Key{EtherType: 0x0040})

	// Plain IPv4 and IPv6, built by gopacket.
	eth := func(et layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: et}
	}
	i4 := func(p layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p, SrcIP: net.IP(v4a[:]), DstIP: net.IP(v4b[:])}
	}
	i6 := func(p layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p, SrcIP: net.IP(v6a[:]), DstIP: net.IP(v6b[:])}
	}
	pl := gopacket.Payload("payload")
	add("IPv4 TCP", serialize(t, eth(layers.EthernetTypeIPv4), i4(layers.IPProtocolTCP),
		&layers.TCP{SrcPort: 1234, DstPort: 80, SYN: true, Window: 1024}, pl), key4(ProtoTCP, FlagPorts))
	add("IPv4 UDP", serialize(t, eth(layers.EthernetTypeIPv4), i4(layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 1234, DstPort: 80}, pl), key4(ProtoUDP, FlagPorts))
	add("IPv4 SCTP", serialize(t, eth(layers.EthernetTypeIPv4), i4(layers.IPProtocolSCTP),
		&layers.SCTP{SrcPort: 1234, DstPort: 80}), key4(ProtoSCTP, FlagPorts))
	add("IPv4 ICMP", serialize(t, eth(layers.EthernetTypeIPv4), i4(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1234, Seq: 80}, pl),
		key4(ProtoICMP, FlagICMP).withTypeCode(8, 0))
	add("IPv6 TCP", serialize(t, eth(layers.EthernetTypeIPv6), i6(layers.IPProtocolTCP),
		&layers.TCP{SrcPort: 1234, DstPort: 80, SYN: true, Window: 1024}, pl), key6(ProtoTCP, FlagPorts))
	add("IPv6 UDP", serialize(t, eth(layers.EthernetTypeIPv6), i6(layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 1234, DstPort: 80}, pl), key6(ProtoUDP, FlagPorts))
	add("IPv6 SCTP", serialize(t, eth(layers.EthernetTypeIPv6), i6(layers.IPProtocolSCTP),
		&layers.SCTP{SrcPort: 1234, DstPort: 80}), key6(ProtoSCTP, FlagPorts))
	add("IPv6 ICMPv6", serialize(t, eth(layers.EthernetTypeIPv6), i6(layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}, pl),
		key6(ProtoICMPv6, FlagICMP).withTypeCode(128, 0))
	add("IPv6 ESP", cat(ethHdr(EtherTypeIPv6), ip6(50), l4(16)), key6(50, 0))
	add("IPv6 no next header", cat(ethHdr(EtherTypeIPv6), ip6(59)), key6(59, 0))

	// Rule 2: VLAN tags. The PCP and DEI bits must not leak into the VID.
	udp4 := cat(ip4(ProtoUDP, 0, nil), l4(8))
	add("802.1Q", cat(ethHdr(EtherTypeVLAN), tag(0xf064, EtherTypeIPv4), udp4),
		key4(ProtoUDP, FlagPorts).withVLAN(100))
	add("802.1ad", cat(ethHdr(EtherTypeQinQ), tag(0x0fff, EtherTypeIPv4), udp4),
		key4(ProtoUDP, FlagPorts).withVLAN(4095))
	add("802.1ad + 802.1Q", cat(ethHdr(EtherTypeQinQ), tag(0x2001, EtherTypeVLAN), tag(0x0002, EtherTypeIPv4), udp4),
		key4(ProtoUDP, FlagPorts).withVLAN(1, 2))
	add("802.1Q + 802.1Q", cat(ethHdr(EtherTypeVLAN), tag(10, EtherTypeVLAN), tag(20, EtherTypeIPv6), ip6(ProtoTCP), l4(20)),
		key6(ProtoTCP, FlagPorts).withVLAN(10, 20))
	add("VLAN 0 (priority tag)", cat(ethHdr(EtherTypeVLAN), tag(0xa000, EtherTypeIPv4), udp4),
		key4(ProtoUDP, FlagPorts).withVLAN(0))
	add("third tag", cat(ethHdr(EtherTypeQinQ), tag(1, EtherTypeVLAN), tag(2, EtherTypeVLAN), tag(3, EtherTypeIPv4), udp4),
		Key{EtherType: EtherTypeVLAN}.withVLAN(1, 2))
	add("third tag 802.1ad", cat(ethHdr(EtherTypeVLAN), tag(1, EtherTypeVLAN), tag(2, EtherTypeQinQ), tag(3, EtherTypeIPv4), udp4),
		Key{EtherType: EtherTypeQinQ}.withVLAN(1, 2))
	add("truncated tag", cat(ethHdr(EtherTypeVLAN), []byte{0, 100, 8}), Key{EtherType: EtherTypeVLAN})
	add("truncated second tag", cat(ethHdr(EtherTypeQinQ), tag(100, EtherTypeVLAN), []byte{0, 200}),
		Key{EtherType: EtherTypeVLAN}.withVLAN(100))
	add("tag then nothing", cat(ethHdr(EtherTypeVLAN), tag(100, EtherTypeIPv4)),
		Key{EtherType: EtherTypeIPv4}.withVLAN(100))
	add("VLAN ARP", cat(ethHdr(EtherTypeVLAN), tag(7, EtherTypeARP), make([]byte, 28)),
		Key{EtherType: EtherTypeARP}.withVLAN(7))

	// Rule 3: MPLS.
	add("MPLS IPv4", cat(ethHdr(EtherTypeMPLS), label(17, true), udp4),
		key4(ProtoUDP, FlagPorts).withMPLS(EtherTypeMPLS, 17))
	add("MPLS multicast IPv4", cat(ethHdr(EtherTypeMPLSMcast), label(0xfffff, true), udp4),
		key4(ProtoUDP, FlagPorts).withMPLS(EtherTypeMPLSMcast, 0xfffff))
	add("MPLS 3 labels IPv6", cat(ethHdr(EtherTypeMPLS), label(100, false), label(200, false), label(300, true), ip6(ProtoTCP), l4(20)),
		key6(ProtoTCP, FlagPorts).withMPLS(EtherTypeMPLS, 100))
	eight := cat(label(1, false), label(2, false), label(3, false), label(4, false), label(5, false), label(6, false), label(7, false))
	add("MPLS 8 labels", cat(ethHdr(EtherTypeMPLS), eight, label(8, true), udp4),
		key4(ProtoUDP, FlagPorts).withMPLS(EtherTypeMPLS, 1))
	add("MPLS 9 labels", cat(ethHdr(EtherTypeMPLS), eight, label(8, false), label(9, true), udp4),
		Key{}.withMPLS(EtherTypeMPLS, 1))
	add("MPLS without bottom of stack", cat(ethHdr(EtherTypeMPLS), label(5, false), label(6, false)),
		Key{}.withMPLS(EtherTypeMPLS, 5))
	add("MPLS truncated entry", cat(ethHdr(EtherTypeMPLS), label(5, false), []byte{0, 0, 0x61}),
		Key{}.withMPLS(EtherTypeMPLS, 5))
	add("MPLS no entry", cat(ethHdr(EtherTypeMPLS), []byte{0, 1, 1}), Key{EtherType: EtherTypeMPLS})
	add("MPLS no payload", cat(ethHdr(EtherTypeMPLS), label(5, true)), Key{}.withMPLS(EtherTypeMPLS, 5))
	add("MPLS control word payload", cat(ethHdr(EtherTypeMPLS), label(5, true), []byte{0, 0, 0, 1}, udp4),
		Key{}.withMPLS(EtherTypeMPLS, 5))
	add("MPLS payload nibble 4 bad IHL", cat(ethHdr(EtherTypeMPLS), label(5, true), []byte{0x44}, udp4[1:]),
		Key{}.withMPLS(EtherTypeMPLS, 5))
	add("MPLS payload short IPv6", cat(ethHdr(EtherTypeMPLS), label(5, true), ip6(ProtoTCP)[:39]),
		Key{}.withMPLS(EtherTypeMPLS, 5))
	add("VLAN MPLS IPv4", cat(ethHdr(EtherTypeVLAN), tag(42, EtherTypeMPLS), label(17, true), udp4),
		key4(ProtoUDP, FlagPorts).withVLAN(42).withMPLS(EtherTypeMPLS, 17))
	add("MPLS IPv6 fragment", cat(ethHdr(EtherTypeMPLS), label(9, true), ip6(protoFragment), frag6(ProtoUDP, 0, true), l4(8)),
		key6(ProtoUDP, FlagPorts|FlagFragment).withMPLS(EtherTypeMPLS, 9))

	// Rule 4: IPv4.
	add("IPv4 first fragment", cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0x2000, nil), l4(8)),
		key4(ProtoUDP, FlagPorts|FlagFragment))
	add("IPv4 middle fragment", cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0x2000|185, nil), l4(8)),
		key4(ProtoUDP, FlagFragment))
	add("IPv4 last fragment", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 1, nil), l4(20)),
		key4(ProtoTCP, FlagFragment))
	add("IPv4 DF", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0x4000, nil), l4(20)), key4(ProtoTCP, FlagPorts))
	add("IPv4 reserved flag", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0x8000, nil), l4(20)), key4(ProtoTCP, FlagPorts))
	add("IPv4 options", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, []byte{0x94, 4, 0, 0, 1, 1, 1, 0}), l4(20)),
		key4(ProtoTCP, FlagPorts))
	add("IPv4 60-byte header", cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, make([]byte, 40)), l4(8)),
		key4(ProtoUDP, FlagPorts))
	add("IPv4 options truncated", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, make([]byte, 8))[:27]),
		Key{EtherType: EtherTypeIPv4})
	bad := cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), l4(8))
	bad[14] = 0x44
	add("IPv4 IHL 4", bad, Key{EtherType: EtherTypeIPv4})
	bad = cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), l4(8))
	bad[14] = 0x4f
	add("IPv4 IHL 15 beyond frame", bad, Key{EtherType: EtherTypeIPv4})
	bad = cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), l4(8))
	bad[14] = 0x65
	add("IPv4 EtherType, version 6", bad, Key{EtherType: EtherTypeIPv4})
	add("IPv4 19 bytes", cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil)[:19]), Key{EtherType: EtherTypeIPv4})
	add("IPv4 no transport", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil)), key4(ProtoTCP, 0))
	add("IPv4 TCP 3 bytes", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil), l4(3)), key4(ProtoTCP, 0))
	add("IPv4 TCP 4 bytes", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil), l4(4)), key4(ProtoTCP, FlagPorts))
	add("IPv4 SCTP 4 bytes", cat(ethHdr(EtherTypeIPv4), ip4(ProtoSCTP, 0, nil), l4(4)), key4(ProtoSCTP, FlagPorts))
	add("IPv4 GRE", cat(ethHdr(EtherTypeIPv4), ip4(47, 0, nil), l4(8)), key4(47, 0))
	add("IPv4 AH is not walked", cat(ethHdr(EtherTypeIPv4), ip4(protoAH, 0, nil), ah6(ProtoTCP, 4), l4(20)), key4(protoAH, 0))

	// Rule 5: IPv6 extension headers.
	add("IPv6 hop-by-hop routing dest-opts", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(protoRouting, 0),
		ext6(protoDestOpts, 2), ext6(ProtoTCP, 1), l4(20)), key6(ProtoTCP, FlagPorts))
	add("IPv6 first fragment", cat(ethHdr(EtherTypeIPv6), ip6(protoFragment), frag6(ProtoUDP, 0, true), l4(8)),
		key6(ProtoUDP, FlagPorts|FlagFragment))
	add("IPv6 atomic fragment", cat(ethHdr(EtherTypeIPv6), ip6(protoFragment), frag6(ProtoUDP, 0, false), l4(8)),
		key6(ProtoUDP, FlagPorts|FlagFragment))
	add("IPv6 non-first fragment", cat(ethHdr(EtherTypeIPv6), ip6(protoFragment), frag6(ProtoUDP, 100, true), l4(8)),
		key6(ProtoUDP, FlagFragment))
	add("IPv6 last fragment", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(protoFragment, 0), frag6(ProtoTCP, 1, false), l4(20)),
		key6(ProtoTCP, FlagFragment))
	add("IPv6 AH", cat(ethHdr(EtherTypeIPv6), ip6(protoAH), ah6(ProtoTCP, 4), l4(20)), key6(ProtoTCP, FlagPorts))
	add("IPv6 all extension headers", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(protoRouting, 0),
		ext6(protoFragment, 0), frag6(protoAH, 0, true), ah6(protoDestOpts, 1), ext6(ProtoUDP, 0), l4(8)),
		key6(ProtoUDP, FlagPorts|FlagFragment))
	add("IPv6 fragment then ESP", cat(ethHdr(EtherTypeIPv6), ip6(protoFragment), frag6(50, 0, true), l4(8)),
		key6(50, FlagFragment))
	add("IPv6 ext header truncated", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(ProtoTCP, 1)[:10]),
		key6(protoHopByHop, 0))
	add("IPv6 ext header 1 byte", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(protoDestOpts, 0), []byte{ProtoTCP}),
		key6(protoDestOpts, 0))
	add("IPv6 ext header 0 bytes", cat(ethHdr(EtherTypeIPv6), ip6(protoRouting)), key6(protoRouting, 0))
	add("IPv6 ext header exactly fits", cat(ethHdr(EtherTypeIPv6), ip6(protoDestOpts), ext6(ProtoTCP, 0)), key6(ProtoTCP, 0))
	add("IPv6 AH truncated", cat(ethHdr(EtherTypeIPv6), ip6(protoAH), ah6(ProtoTCP, 4)[:23]), key6(protoAH, 0))
	add("IPv6 fragment truncated", cat(ethHdr(EtherTypeIPv6), ip6(protoFragment), frag6(ProtoUDP, 100, true)[:7]),
		key6(protoFragment, 0))
	eightExt := cat(ext6(protoDestOpts, 0), ext6(protoDestOpts, 0), ext6(protoDestOpts, 0), ext6(protoDestOpts, 0),
		ext6(protoDestOpts, 0), ext6(protoDestOpts, 0), ext6(protoDestOpts, 0))
	add("IPv6 8 ext headers", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), eightExt, ext6(ProtoTCP, 0), l4(20)),
		key6(ProtoTCP, FlagPorts))
	add("IPv6 9 ext headers", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), eightExt, ext6(protoDestOpts, 0), ext6(ProtoTCP, 0), l4(20)),
		key6(protoDestOpts, 0))
	add("IPv6 8 ext headers, 9th is a fragment", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), eightExt,
		ext6(protoFragment, 0), frag6(ProtoUDP, 0, true), l4(8)), key6(protoFragment, 0))
	add("IPv6 TCP 4 bytes", cat(ethHdr(EtherTypeIPv6), ip6(ProtoTCP), l4(4)), key6(ProtoTCP, FlagPorts))
	add("IPv6 UDP 2 bytes", cat(ethHdr(EtherTypeIPv6), ip6(ProtoUDP), l4(2)), key6(ProtoUDP, 0))
	add("IPv6 39 bytes", cat(ethHdr(EtherTypeIPv6), ip6(ProtoTCP)[:39]), Key{EtherType: EtherTypeIPv6})
	bad = cat(ethHdr(EtherTypeIPv6), ip6(ProtoTCP), l4(20))
	bad[14] = 0x45
	add("IPv6 EtherType, version 4", bad, Key{EtherType: EtherTypeIPv6})
	return cs
}

// TestParse checks every rule of docs/flow-key.md on hand-built frames, and
// that the gopacket-based reference used on the captures agrees with the
// table (so the reference is itself checked on every rule).
func TestParse(t *testing.T) {
	for _, c := range parseCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var k Key
			Parse(c.frame, &k)
			if d := keyDiff(c.want, k); d != "" {
				t.Errorf("Parse(%x):\n got %v\nwant %v\n%s", c.frame, k, c.want, d)
			}
			ref, _, err := refKey(c.frame)
			if err != nil {
				t.Fatalf("reference: %v", err)
			}
			if d := keyDiff(c.want, ref); d != "" {
				t.Errorf("reference(%x):\n got %v\nwant %v\n%s", c.frame, ref, c.want, d)
			}
		})
	}
}

// TestParseZeroesKey checks that no field of a previous key survives.
func TestParseZeroesKey(t *testing.T) {
	k := Key{Src: v6a, Dst: v6b, SrcPort: 1, DstPort: 2, VLAN: [2]uint16{3, 4}, MPLS: 5, EtherType: 6, Proto: 7, Flags: 0xff}
	Parse(nil, &k)
	if k != (Key{}) {
		t.Errorf("Parse(nil) left %+v", k)
	}
}

// TestParseCaptures compares Parse with a key derived from gopacket's
// decoding on every packet of every Ethernet test capture.
func TestParseCaptures(t *testing.T) {
	paths := map[string]int{}
	features := map[string]int{}
	var packets, files, mismatches int
	for _, c := range testpcaps.Ethernet(t, "") {
		files++
		for i, p := range c.Packets {
			packets++
			want, ps, err := refKey(p.Data)
			if err != nil {
				t.Fatalf("%s packet %d: reference: %v\n%s", c.Path, i+1, err, hex.Dump(p.Data))
			}
			for _, s := range ps {
				paths[s]++
			}
			for bit, name := range flagNames {
				if want.Flags&(1<<bit) != 0 {
					features[name]++
				}
			}
			var got Key
			Parse(p.Data, &got)
			if d := keyDiff(want, got); d != "" {
				mismatches++
				if mismatches <= 20 {
					t.Errorf("%s packet %d (reference paths %v):\n got %v\nwant %v\n%s%s",
						c.Path, i+1, ps, got, want, d, hex.Dump(p.Data[:min(len(p.Data), 128)]))
				}
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d packets differ", mismatches, packets)
	}
	names := make([]string, 0, len(paths))
	for s := range paths {
		names = append(names, s)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, s := range names {
		fmt.Fprintf(&b, "\n%8d  %s", paths[s], s)
	}
	t.Logf("compared %d packets from %d Ethernet captures; reference paths (packets):%s", packets, files, b.String())
	b.Reset()
	for _, name := range flagNames {
		fmt.Fprintf(&b, " %s=%d", name, features[name])
	}
	t.Logf("packets with flag:%s", b.String())
}

var flagNames = [...]string{"IPV4", "IPV6", "PORTS", "FRAGMENT", "VLAN0", "VLAN1", "MPLS"}

// keyDiff names the fields in which got differs from want, or returns "".
func keyDiff(want, got Key) string {
	var b strings.Builder
	f := func(name string, w, g any) {
		if w != g {
			fmt.Fprintf(&b, "  %s: got %v, want %v\n", name, g, w)
		}
	}
	f("Src", net.IP(want.Src[:]).String(), net.IP(got.Src[:]).String())
	f("Dst", net.IP(want.Dst[:]).String(), net.IP(got.Dst[:]).String())
	f("SrcPort", want.SrcPort, got.SrcPort)
	f("DstPort", want.DstPort, got.DstPort)
	f("VLAN[0]", want.VLAN[0], got.VLAN[0])
	f("VLAN[1]", want.VLAN[1], got.VLAN[1])
	f("MPLS", want.MPLS, got.MPLS)
	f("EtherType", fmt.Sprintf("%#04x", want.EtherType), fmt.Sprintf("%#04x", got.EtherType))
	f("Proto", want.Proto, got.Proto)
	f("Flags", fmt.Sprintf("%07b", want.Flags), fmt.Sprintf("%07b", got.Flags))
	return b.String()
}

// refKey derives the key of frame from gopacket's decoding of it, as the
// independent check of Parse. gopacket decodes more than the spec asks
// (unbounded tag and label stacks, checks of length fields) and gives up
// sooner in places (it checks total and payload lengths, requires whole
// transport headers, does not decode past fragment headers or unknown routing
// types). Wherever gopacket has no layer for a header the spec reads, the
// header is read from the bytes following the spec, and the reason is
// returned in paths; a packet gopacket decodes as far as the spec goes gets
// the single path "gopacket". err reports a gopacket result that contradicts
// the frame (a bug in this function, not in Parse).
func refKey(frame []byte) (k Key, paths []string, err error) {
	r := refDecoder{frame: frame[:len(frame):len(frame)]}
	r.decode()
	if len(r.paths) == 0 {
		r.paths = []string{"gopacket"}
	}
	return r.k, r.paths, r.err
}

type refDecoder struct {
	frame []byte
	at    map[int]gopacket.Layer // gopacket's layers by their offset in frame
	k     Key
	paths []string
	err   error
}

func (r *refDecoder) path(format string, args ...any) {
	r.paths = append(r.paths, fmt.Sprintf(format, args...))
}

func (r *refDecoder) decode() {
	if len(r.frame) < 14 {
		r.path("runt")
		return
	}
	pkt := gopacket.NewPacket(r.frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	r.at = map[int]gopacket.Layer{}
	given := r.frame
	for i, l := range pkt.Layers() {
		data := given
		given = l.LayerPayload()
		c := l.LayerContents()
		if len(c) == 0 || !decodedCleanly(pkt.Layers()[:i], l, data) {
			continue
		}
		// With NoCopy every layer's contents is a subslice of frame.
		off := cap(r.frame) - cap(c)
		if _, dup := r.at[off]; !dup {
			r.at[off] = l
		}
	}
	eth, ok := r.at[0].(*layers.Ethernet)
	if !ok {
		r.err = fmt.Errorf("no Ethernet layer at 0 in %d bytes", len(r.frame))
		return
	}
	et := uint16(eth.EthernetType)
	if eth.EthernetType == layers.EthernetTypeLLC {
		// gopacket replaces a length field with the LLC pseudo type.
		r.path("802.3 length field")
		et = eth.Length
	}
	off := 14
	for n := 0; et == EtherTypeVLAN || et == EtherTypeQinQ; n++ {
		if n == 2 {
			r.path("third tag (gopacket decodes it)")
			break
		}
		t, ok := r.at[off].(*layers.Dot1Q)
		if !ok {
			if len(r.frame)-off >= 4 {
				r.err = fmt.Errorf("no Dot1Q layer at %d", off)
				return
			}
			r.path("truncated tag")
			break
		}
		r.k.VLAN[n] = t.VLANIdentifier
		r.k.Flags |= FlagVLAN0 << n
		et = uint16(t.Type)
		off += 4
	}
	r.k.EtherType = et
	switch et {
	case EtherTypeIPv4:
		r.ipv4(off)
	case EtherTypeIPv6:
		r.ipv6(off)
	case EtherTypeMPLS, EtherTypeMPLSMcast:
		r.mpls(off)
	}
}

// decodedCleanly reports whether gopacket decoded l from data without error.
// Several of its decoders add a layer whose DecodeFromBytes failed (with the
// fields read so far) before the failure layer, so each is decoded again.
func decodedCleanly(before []gopacket.Layer, l gopacket.Layer, data []byte) (clean bool) {
	// NewPacket recovers from panics in decoders; this must too.
	defer func() {
		if recover() != nil {
			clean = false
		}
	}()
	if h, ok := l.(*layers.IPv6HopByHop); ok && len(before) > 0 {
		// A leading hop-by-hop header is decoded inside the IPv6 layer and
		// added after it only when it decoded.
		if ip, ok := before[len(before)-1].(*layers.IPv6); ok && ip.HopByHop == h {
			return true
		}
	}
	if _, ok := l.(gopacket.DecodingLayer); !ok {
		// The other decoders used here add their layer only on success.
		return true
	}
	fresh := reflect.New(reflect.TypeOf(l).Elem()).Interface().(gopacket.DecodingLayer)
	return fresh.DecodeFromBytes(data, gopacket.NilDecodeFeedback) == nil
}

func (r *refDecoder) mpls(off int) {
	bottom := false
	for n := 0; !bottom; n++ {
		if n == 8 {
			r.path("MPLS: no bottom of stack in 8 entries")
			return
		}
		m, ok := r.at[off].(*layers.MPLS)
		if !ok {
			if len(r.frame)-off >= 4 {
				r.err = fmt.Errorf("no MPLS layer at %d", off)
				return
			}
			r.path("MPLS: stack truncated")
			return
		}
		if n == 0 {
			r.k.MPLS = m.Label
			r.k.Flags |= FlagMPLS
		}
		bottom = m.StackBottom
		off += 4
	}
	if off >= len(r.frame) {
		r.path("MPLS: no payload")
		return
	}
	// gopacket guesses the payload from the first byte too, but only takes
	// 0x45-0x4f as IPv4; ipv4 finds that 0x40-0x44 are not IPv4 either.
	switch r.frame[off] >> 4 {
	case 4:
		r.ipv4(off)
	case 6:
		r.ipv6(off)
	default:
		r.path("MPLS: payload not IP")
	}
}

func (r *refDecoder) ipv4(off int) {
	var (
		hl       int
		proto    uint8
		mf       bool
		fragOff  uint16
		src, dst []byte
	)
	if ip, ok := r.at[off].(*layers.IPv4); ok {
		// gopacket does not check the version.
		if ip.Version != 4 {
			r.path("IPv4: version %d", ip.Version)
			return
		}
		hl, proto, src, dst = int(ip.IHL)*4, uint8(ip.Protocol), ip.SrcIP, ip.DstIP
		mf, fragOff = ip.Flags&layers.IPv4MoreFragments != 0, ip.FragOffset
	} else {
		b := r.frame[off:]
		switch {
		case len(b) < 20:
			r.path("IPv4: truncated header")
			return
		case b[0]>>4 != 4:
			r.path("IPv4: version %d", b[0]>>4)
			return
		case b[0]&0xf < 5:
			r.path("IPv4: IHL < 5")
			return
		case int(b[0]&0xf)*4 > len(b):
			r.path("IPv4: options truncated")
			return
		}
		// gopacket also rejects bad total lengths and malformed options,
		// which the spec does not look at.
		r.path("IPv4: header rejected by gopacket, read from bytes")
		hl, proto, src, dst = int(b[0]&0xf)*4, b[9], b[12:16], b[16:20]
		mf, fragOff = b[6]&0x20 != 0, binary.BigEndian.Uint16(b[6:])&0x1fff
	}
	r.k.Flags |= FlagIPv4
	copy(r.k.Src[:], src)
	copy(r.k.Dst[:], dst)
	r.k.Proto = proto
	if mf || fragOff != 0 {
		r.k.Flags |= FlagFragment
	}
	if fragOff != 0 {
		return
	}
	r.ports(off + hl)
}

func (r *refDecoder) ipv6(off int) {
	ip, ok := r.at[off].(*layers.IPv6)
	var nh uint8
	if ok {
		if ip.Version != 6 {
			r.path("IPv6: version %d", ip.Version)
			return
		}
		copy(r.k.Src[:], ip.SrcIP)
		copy(r.k.Dst[:], ip.DstIP)
		nh = uint8(ip.NextHeader)
	} else {
		b := r.frame[off:]
		switch {
		case len(b) < 40:
			r.path("IPv6: truncated header")
			return
		case b[0]>>4 != 6:
			r.path("IPv6: version %d", b[0]>>4)
			return
		}
		// gopacket rejects a zero payload length without a jumbogram
		// option, and hop-by-hop options it cannot decode.
		r.path("IPv6: header rejected by gopacket, read from bytes")
		copy(r.k.Src[:], b[8:24])
		copy(r.k.Dst[:], b[24:40])
		nh = b[6]
		ip = nil
	}
	r.k.Flags |= FlagIPv6
	cur := off + 40
	ports := true
	for n := 0; isIPv6Ext(nh); n++ {
		if n == 8 {
			r.path("IPv6: more than 8 extension headers")
			r.k.Proto = nh
			return
		}
		size, next, fragOff, ok := r.ipv6Ext(ip, off, cur, nh)
		if !ok {
			r.k.Proto = nh
			return
		}
		if nh == protoFragment {
			r.k.Flags |= FlagFragment
			if fragOff != 0 {
				ports = false
			}
		}
		nh = next
		cur += size
	}
	r.k.Proto = nh
	if ports {
		r.ports(cur)
	}
}

// ipv6Ext returns the size, next header and (for a fragment header) the
// fragment offset of the extension header nh at cur, and false if it does not
// fit in the frame.
func (r *refDecoder) ipv6Ext(ip *layers.IPv6, ipOff, cur int, nh uint8) (size int, next uint8, fragOff uint16, ok bool) {
	// gopacket keeps a leading hop-by-hop header inside the IPv6 layer.
	if ip != nil && nh == protoHopByHop && cur == ipOff+40 && ip.HopByHop != nil {
		return ip.HopByHop.ActualLength, uint8(ip.HopByHop.NextHeader), 0, true
	}
	switch l := r.at[cur].(type) {
	case *layers.IPv6HopByHop:
		if nh == protoHopByHop {
			return l.ActualLength, uint8(l.NextHeader), 0, true
		}
	case *layers.IPv6Routing:
		if nh == protoRouting {
			return l.ActualLength, uint8(l.NextHeader), 0, true
		}
	case *layers.IPv6Destination:
		if nh == protoDestOpts {
			return l.ActualLength, uint8(l.NextHeader), 0, true
		}
	case *layers.IPSecAH:
		if nh == protoAH {
			return l.ActualLength, uint8(l.NextHeader), 0, true
		}
	case *layers.IPv6Fragment:
		if nh == protoFragment {
			return 8, uint8(l.NextHeader), l.FragmentOffset, true
		}
	}
	b := r.frame[cur:]
	switch nh {
	case protoFragment:
		size = 8
	case protoAH:
		if len(b) >= 2 {
			size = (int(b[1]) + 2) * 4
		}
	default:
		if len(b) >= 2 {
			size = (int(b[1]) + 1) * 8
		}
	}
	if size == 0 || size > len(b) {
		r.path("IPv6: extension header %d truncated", nh)
		return 0, 0, 0, false
	}
	// Not decoded by gopacket: routing types other than 0, headers past the
	// payload length or past a fragment header, AH shorter than 12 bytes.
	r.path("IPv6: extension header %d not decoded by gopacket, read from bytes", nh)
	if nh == protoFragment {
		fragOff = binary.BigEndian.Uint16(b[2:]) >> 3
	}
	return size, b[0], fragOff, true
}

func (r *refDecoder) ports(off int) {
	if r.k.Proto == ProtoICMP || r.k.Proto == ProtoICMPv6 {
		r.icmp(off)
		return
	}
	var sport, dport uint16
	switch l := r.at[off].(type) {
	case *layers.TCP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.SCTP:
		sport, dport = uint16(l.SrcPort), uint16(l.DstPort)
	}
	var decoded bool
	switch r.k.Proto {
	case ProtoTCP:
		_, decoded = r.at[off].(*layers.TCP)
	case ProtoUDP:
		_, decoded = r.at[off].(*layers.UDP)
	case ProtoSCTP:
		_, decoded = r.at[off].(*layers.SCTP)
	default:
		return
	}
	if !decoded {
		b := r.frame[off:]
		if len(b) < 4 {
			r.path("transport: fewer than 4 bytes")
			return
		}
		// gopacket does not decode first fragments, and wants whole
		// TCP/UDP/SCTP headers within the IP length.
		if _, ok := r.at[off].(*gopacket.Fragment); ok {
			r.path("transport %d: first fragment, ports read from bytes", r.k.Proto)
		} else {
			r.path("transport %d: not decoded by gopacket, ports read from bytes", r.k.Proto)
		}
		sport, dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	}
	r.k.SrcPort, r.k.DstPort = sport, dport
	r.k.Flags |= FlagPorts
}

// icmp takes the type and code of an ICMP or ICMPv6 header, whichever the
// IP header's protocol names, as gopacket decodes it.
func (r *refDecoder) icmp(off int) {
	var tc uint16
	var decoded bool
	switch l := r.at[off].(type) {
	case *layers.ICMPv4:
		tc, decoded = uint16(l.TypeCode), r.k.Proto == ProtoICMP
	case *layers.ICMPv6:
		tc, decoded = uint16(l.TypeCode), r.k.Proto == ProtoICMPv6
	}
	if !decoded {
		b := r.frame[off:]
		if len(b) < 2 {
			r.path("ICMP: fewer than 2 bytes")
			return
		}
		// gopacket wants a whole ICMP header (4 or 8 bytes), decodes
		// ICMPv4 only after IPv4 and ICMPv6 only after IPv6, and does not
		// decode first fragments.
		r.path("ICMP %d: not decoded by gopacket, type and code read from bytes", r.k.Proto)
		tc = binary.BigEndian.Uint16(b)
	}
	r.k.SrcPort, r.k.DstPort = tc>>8, tc&0xff
	r.k.Flags |= FlagICMP
}
