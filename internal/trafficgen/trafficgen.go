// Package trafficgen generates synthetic Ethernet traffic for the demo tap's
// generated captures (internal/demotap), benchmarks and tests:
// a mix of TCP, UDP and ICMP flows over IPv4 and IPv6 with an IMIX-like size
// distribution, and two marker populations with known shares of the packets
// so that benchmark queries select a known fraction:
//
//   - host SelectiveHost sends and receives SelectiveShare of the packets;
//   - UDP is BroadShare of the packets (query "udp").
//
// Output is deterministic for a seed. No VLAN tags are generated, so tcpdump
// filters mean the same as stenod queries on this traffic. Every frame is
// well formed, lengths and checksums included, so tcpdump, Wireshark and
// gopacket decode it without complaint (Generator.Next says what is in it).
package trafficgen

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/netip"

	"github.com/stenod/stenod/pcapio"
)

// The marker populations.
const (
	SelectiveHost  = "10.99.99.99"
	SelectiveShare = 0.001
	BroadShare     = 0.30
)

// Start is the timestamp of the first generated packet (2026-01-01T00:00:00Z).
const Start = int64(1767225600) * 1_000_000_000

// Generator produces packets one at a time without allocating.
type Generator struct {
	rng   *rand.Rand
	ts    int64
	frame [1514]byte
	flows []genFlow
	// selSeq are the next TCP sequence numbers of the selective host's
	// connections: [peer][0] from SelectiveHost, [peer][1] to it.
	selSeq [4][2]uint32
	ipID   uint16
}

type genFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
	// seq is the next TCP sequence number of the flow; seqOf points at
	// the counter the packet advances (nil: none, UDP and ICMP), ackOf at
	// the reverse direction's, when generated too.
	seq          uint32
	seqOf, ackOf *uint32
}

// New returns a generator of a given seed with nflows background flows.
func New(seed uint64, nflows int) *Generator {
	g := &Generator{rng: rand.New(rand.NewPCG(seed, 0x5eed)), ts: Start}
	for i := range nflows {
		// Client ports from the dynamic range (RFC 6335), above every server
		// port: dissectors pick a protocol by the lower port.
		f := genFlow{sport: uint16(49152 + g.rng.IntN(16384)), dport: serverPorts[g.rng.IntN(len(serverPorts))], proto: 6}
		if i%8 == 7 {
			f.src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
			f.dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(i >> 8)})
		} else {
			f.src = netip.AddrFrom4([4]byte{10, byte(1 + i%50), byte(i >> 8), byte(i)})
			f.dst = netip.AddrFrom4([4]byte{172, 16, byte(i % 200), byte(1 + i%250)})
		}
		f.seq = uint32(i) * 0x9e3779b9 // any start will do; distinct per flow
		g.flows = append(g.flows, f)
	}
	return g
}

// Next returns the next frame (valid until the next call), its timestamp
// and its length on the wire.
//
// Every frame is a well-formed Ethernet II frame: IPv4 with a correct
// header checksum or IPv6, then TCP (data offset 5, ACK|PSH, a sequence
// number that advances by the payload along each flow), UDP (a DNS query
// to port 53) or an ICMP/ICMPv6 echo request, with correct lengths and
// checksums. A frame is never shorter than its headers and its payload's
// minimum: an IMIX size too small for them is raised to fit.
func (g *Generator) Next() (frame []byte, ts int64) {
	g.ts += 1000 + g.rng.Int64N(2000) // ~500k packets per second of capture time
	r := g.rng.Float64()
	var f genFlow
	switch {
	case r < SelectiveShare:
		peer := g.rng.IntN(4)
		f = genFlow{src: netip.MustParseAddr(SelectiveHost), dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(peer)}), sport: 40000, dport: 443, proto: 6,
			seqOf: &g.selSeq[peer][0], ackOf: &g.selSeq[peer][1]}
		if g.rng.IntN(2) == 0 {
			f.src, f.dst, f.sport, f.dport = f.dst, f.src, f.dport, f.sport
			f.seqOf, f.ackOf = f.ackOf, f.seqOf
		}
	case r < SelectiveShare+BroadShare:
		f = g.flows[g.rng.IntN(len(g.flows))]
		f.proto, f.dport = 17, 53
	default:
		i := g.zipf()
		f = g.flows[i]
		f.seqOf = &g.flows[i].seq
		if g.rng.IntN(100) == 0 {
			f.proto = 1
			if f.src.Is6() {
				f.proto = 58
			}
			f.seqOf = nil
		}
	}
	// IMIX: 7 of 12 packets 64 bytes, 4 of 12 576, 1 of 12 1500.
	size := 64
	switch n := g.rng.IntN(12); {
	case n >= 11:
		size = 1514
	case n >= 7:
		size = 590
	}
	return g.build(&f, size), g.ts
}

// zipf picks a background flow with a skew towards the first ones, as real
// traffic has a few heavy flows.
func (g *Generator) zipf() int {
	n := len(g.flows)
	x := g.rng.Float64()
	return int(x * x * x * float64(n))
}

// serverPorts are the background flows' server ports: protocols whose
// dissectors take any payload as data (TLS, HTTP, SSH).
var serverPorts = []uint16{443, 80, 22, 8080, 8443}

// Header sizes.
const (
	ethLen  = 14
	ipv4Len = 20
	ipv6Len = 40
	tcpLen  = 20
	udpLen  = 8
	icmpLen = 8
)

// dnsQuery is the UDP payload: a standard query for example.org A, with
// recursion desired. Its first two bytes (the id) are set per packet; a
// larger datagram adds an EDNS(0) OPT record with a Padding option (RFC
// 7830) to fill it.
var dnsQuery = [...]byte{
	0, 0, // id
	0x01, 0x00, // flags: standard query, RD
	0, 1, 0, 0, 0, 0, 0, 0, // 1 question, no answers, authority or additional records
	7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0, // example.org
	0, 1, 0, 1, // type A, class IN
}

// dnsPadding is the OPT record's size without the padding bytes: owner
// name (root), type, class, TTL, RDLENGTH, option code and length.
const dnsPadding = 1 + 2 + 2 + 4 + 2 + 4

// minTCPPayload keeps every TCP segment carrying data: a segment without
// any would look like a duplicate ACK.
const minTCPPayload = 6

// build writes the frame of f into g.frame: size bytes, or more when the
// headers and the payload's minimum need more.
func (g *Generator) build(f *genFlow, size int) []byte {
	be := binary.BigEndian
	ipLen := ipv4Len
	if f.src.Is6() {
		ipLen = ipv6Len
	}
	l4 := ethLen + ipLen // where the transport header starts
	minSize := l4
	switch f.proto {
	case 6:
		minSize += tcpLen + minTCPPayload
	case 17:
		minSize += udpLen + len(dnsQuery)
		if size > minSize {
			// Room for the query and more: the rest is EDNS padding.
			minSize += dnsPadding
		}
	default:
		minSize += icmpLen
	}
	size = max(size, minSize)
	b := g.frame[:size]
	clear(b)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	l4Len := size - l4
	// sum is the transport checksum's pseudo-header part.
	var sum uint32
	if f.src.Is4() {
		be.PutUint16(b[12:], 0x0800)
		ip := b[ethLen : ethLen+ipv4Len]
		ip[0] = 0x45
		be.PutUint16(ip[2:], uint16(size-ethLen))
		g.ipID++
		be.PutUint16(ip[4:], g.ipID)
		be.PutUint16(ip[6:], 0x4000) // don't fragment
		ip[8] = 64
		ip[9] = f.proto
		s, d := f.src.As4(), f.dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		be.PutUint16(ip[10:], checksum(0, ip))
		sum = sumBytes(0, ip[12:20])
	} else {
		be.PutUint16(b[12:], 0x86dd)
		ip := b[ethLen : ethLen+ipv6Len]
		ip[0] = 0x60
		be.PutUint16(ip[4:], uint16(l4Len))
		ip[6] = f.proto
		ip[7] = 64
		s, d := f.src.As16(), f.dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		sum = sumBytes(0, ip[8:40])
	}
	if f.proto == 1 {
		sum = 0 // ICMPv4 has no pseudo header
	} else {
		sum += uint32(f.proto) + uint32(l4Len)
	}
	t := b[l4:]
	switch f.proto {
	case 6:
		be.PutUint16(t[0:], f.sport)
		be.PutUint16(t[2:], f.dport)
		var seq uint32
		if f.seqOf != nil {
			seq = *f.seqOf
			*f.seqOf += uint32(l4Len - tcpLen)
		}
		be.PutUint32(t[4:], seq)
		ack := uint32(1)
		if f.ackOf != nil {
			ack = *f.ackOf
		}
		be.PutUint32(t[8:], ack)
		t[12] = tcpLen / 4 << 4   // data offset
		t[13] = 0x18              // PSH, ACK
		be.PutUint16(t[14:], 502) // window
		be.PutUint16(t[16:], checksum(sum, t))
	case 17:
		be.PutUint16(t[0:], f.sport)
		be.PutUint16(t[2:], f.dport)
		be.PutUint16(t[4:], uint16(l4Len))
		dns := t[udpLen:]
		copy(dns, dnsQuery[:])
		be.PutUint16(dns, g.ipID^uint16(g.ts))
		if pad := len(dns) - len(dnsQuery) - dnsPadding; pad >= 0 {
			be.PutUint16(dns[10:], 1) // one additional record
			opt := dns[len(dnsQuery):]
			be.PutUint16(opt[1:], 41)   // OPT
			be.PutUint16(opt[3:], 1232) // UDP payload size
			be.PutUint16(opt[9:], uint16(4+pad))
			be.PutUint16(opt[11:], 12) // Padding
			be.PutUint16(opt[13:], uint16(pad))
		}
		c := checksum(sum, t)
		if c == 0 {
			c = 0xffff // 0 means "no checksum" in UDP
		}
		be.PutUint16(t[6:], c)
	default:
		t[0] = 8 // ICMP echo request
		if f.proto == 58 {
			t[0] = 128 // ICMPv6 echo request
		}
		be.PutUint16(t[4:], f.sport) // identifier
		be.PutUint16(t[6:], uint16(g.ts>>10))
		be.PutUint16(t[2:], checksum(sum, t))
	}
	return b
}

// sumBytes adds b to the ones' complement sum s, as 16-bit big-endian
// words (an odd last byte padded with zero).
func sumBytes(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// checksum is the Internet checksum (RFC 1071) of b, starting from the
// partial sum s, for a checksum field that is zero in b.
func checksum(s uint32, b []byte) uint16 {
	s = sumBytes(s, b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// WritePcap writes n generated packets as a nanosecond pcap.
func WritePcap(w io.Writer, seed uint64, n int) error {
	pw, err := pcapio.NewPcapWriter(w, 65535)
	if err != nil {
		return err
	}
	g := New(seed, 5000)
	for range n {
		frame, ts := g.Next()
		if err := pw.WritePacket(ts, len(frame), frame, ""); err != nil {
			return err
		}
	}
	return pw.Flush()
}
