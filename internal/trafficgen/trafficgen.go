// Package trafficgen generates synthetic Ethernet traffic for benchmarks:
// a mix of TCP, UDP and ICMP flows over IPv4 and IPv6 with an IMIX-like size
// distribution, and two marker populations with known shares of the packets
// so that benchmark queries select a known fraction:
//
//   - host SelectiveHost sends and receives SelectiveShare of the packets;
//   - UDP is BroadShare of the packets (query "udp").
//
// Output is deterministic for a seed. No VLAN tags are generated, so tcpdump
// filters mean the same as stenod queries on this traffic.
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
}

type genFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
}

// New returns a generator of a given seed with nflows background flows.
func New(seed uint64, nflows int) *Generator {
	g := &Generator{rng: rand.New(rand.NewPCG(seed, 0x5eed)), ts: Start}
	for i := range nflows {
		f := genFlow{sport: uint16(1024 + g.rng.IntN(60000)), dport: []uint16{443, 80, 22, 8080, 3306}[g.rng.IntN(5)], proto: 6}
		if i%8 == 7 {
			f.src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
			f.dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(i >> 8)})
		} else {
			f.src = netip.AddrFrom4([4]byte{10, byte(1 + i%50), byte(i >> 8), byte(i)})
			f.dst = netip.AddrFrom4([4]byte{172, 16, byte(i % 200), byte(1 + i%250)})
		}
		g.flows = append(g.flows, f)
	}
	return g
}

// Next returns the next frame (valid until the next call), its timestamp
// and its length on the wire.
func (g *Generator) Next() (frame []byte, ts int64) {
	g.ts += 1000 + g.rng.Int64N(2000) // ~500k packets per second of capture time
	r := g.rng.Float64()
	var f genFlow
	switch {
	case r < SelectiveShare:
		f = genFlow{src: netip.MustParseAddr(SelectiveHost), dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(g.rng.IntN(4))}), sport: 40000, dport: 443, proto: 6}
		if g.rng.IntN(2) == 0 {
			f.src, f.dst, f.sport, f.dport = f.dst, f.src, f.dport, f.sport
		}
	case r < SelectiveShare+BroadShare:
		f = g.flows[g.rng.IntN(len(g.flows))]
		f.proto, f.dport = 17, 53
	default:
		f = g.flows[g.zipf()]
		if g.rng.IntN(100) == 0 {
			f.proto = 1
			if f.src.Is6() {
				f.proto = 58
			}
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

func (g *Generator) build(f *genFlow, size int) []byte {
	b := g.frame[:size]
	clear(b)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	be := binary.BigEndian
	off := 14
	if f.src.Is4() {
		be.PutUint16(b[12:], 0x0800)
		ip := b[14:34]
		ip[0] = 0x45
		be.PutUint16(ip[2:], uint16(size-14))
		ip[8] = 64
		ip[9] = f.proto
		s, d := f.src.As4(), f.dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		off = 34
	} else {
		be.PutUint16(b[12:], 0x86dd)
		ip := b[14:54]
		ip[0] = 0x60
		be.PutUint16(ip[4:], uint16(size-54))
		ip[6] = f.proto
		ip[7] = 64
		s, d := f.src.As16(), f.dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		off = 54
	}
	if (f.proto == 6 || f.proto == 17) && off+4 <= size {
		be.PutUint16(b[off:], f.sport)
		be.PutUint16(b[off+2:], f.dport)
	}
	return b
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
