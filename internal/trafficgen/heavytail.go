package trafficgen

import (
	"encoding/binary"
	"math"
	"net/netip"
	"slices"
)

// The heavy-tailed connection mix of the cutoff benchmark (docs/benchmarks.md,
// "Per-connection cutoff"). Its sizes are not random draws but evenly spaced
// quantiles of the distributions, so that one pass holds the whole
// distribution and every run offers the same bytes:
//
//   - HeavyTailSmall of every HeavyTailConns connections are small: server
//     payloads log-uniform from 200 bytes to 16 KB, which with headers and
//     control packets stay below 20 KB on the wire;
//   - the others are large: payloads Pareto with shape 0.5 from 20 KB, capped
//     at 32 MB (the tail of the mix: backups, video, updates).
//
// The shape 0.5 makes the large connections carry about 95% of the bytes, as
// Time Machine measured of real traffic (Kornexl et al., IMC 2005: a 15-20 KB
// cutoff kept 94-96% of connections whole and 2-13% of the bytes).
const (
	HeavyTailConns = 1000
	HeavyTailSmall = 960
)

const (
	smallMin, smallMax = 200, 16 << 10
	largeMin, largeMax = 20 << 10, 32 << 20
	paretoShape        = 0.5
	mss                = 1448
	// heavyTailActive is how many connections are open at once: their
	// packets interleave, as on a link.
	heavyTailActive = 64
)

// HeavyTailPayloads returns the server payload size of each connection of
// the mix, in the order HeavyTail sends them.
func HeavyTailPayloads() []int {
	sizes := make([]int, 0, HeavyTailConns)
	for i := range HeavyTailSmall {
		u := (float64(i) + 0.5) / HeavyTailSmall
		sizes = append(sizes, int(smallMin*math.Pow(smallMax/smallMin, u)))
	}
	for i := range HeavyTailConns - HeavyTailSmall {
		u := (float64(i) + 0.5) / (HeavyTailConns - HeavyTailSmall)
		x := largeMin / math.Pow(1-u, 1/paretoShape)
		sizes = append(sizes, int(min(x, largeMax)))
	}
	// Large ones spread among the small ones, by a fixed permutation.
	perm := make([]int, len(sizes))
	for i := range perm {
		perm[i] = (i * 617) % len(sizes) // 617 is prime to 1000
	}
	out := make([]int, len(sizes))
	for i, p := range perm {
		out[p] = sizes[i]
	}
	return out
}

// HeavyTail calls emit with every frame of one pass of the mix, in order:
// each connection a TCP handshake, a request of up to 1 KB, the server's
// payload in full-size segments with an ACK every two, and FIN, FIN, ACK,
// with up to 64 connections interleaved. Connection i runs from
// 10.1.x.y:(1024+i) to 10.2.x.y:80, x.y from i. The frame passed to emit
// is reused.
func HeavyTail(emit func(frame []byte)) {
	type conn struct {
		pkts [][]byte
		next int
	}
	payloads := HeavyTailPayloads()
	var active []*conn
	started := 0
	var buf [1514]byte
	for started < len(payloads) || len(active) > 0 {
		for len(active) < heavyTailActive && started < len(payloads) {
			active = append(active, &conn{pkts: connFrames(started, payloads[started])})
			started++
		}
		for _, c := range active {
			n := copy(buf[:], c.pkts[c.next])
			emit(buf[:n])
			c.next++
		}
		active = slices.DeleteFunc(active, func(c *conn) bool { return c.next == len(c.pkts) })
	}
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
)

// connFrames returns the frames of connection i with a server payload of
// size bytes.
func connFrames(i, size int) [][]byte {
	cli := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	srv := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
	cport, sport := uint16(1024+i), uint16(80)
	var cseq, sseq uint32 = 1000, 5000
	var out [][]byte
	c2s := func(flags byte, n int) {
		out = append(out, tcpFrame(cli, srv, cport, sport, cseq, sseq, flags, n))
		cseq += uint32(n)
	}
	s2c := func(flags byte, n int) {
		out = append(out, tcpFrame(srv, cli, sport, cport, sseq, cseq, flags, n))
		sseq += uint32(n)
	}
	c2s(tcpSYN, 0)
	cseq++
	s2c(tcpSYN|tcpACK, 0)
	sseq++
	c2s(tcpACK, 0)
	c2s(tcpACK|tcpPSH, min(1000, max(size/10, 100)))
	for sent, segs := 0, 0; sent < size; segs++ {
		n := min(mss, size-sent)
		s2c(tcpACK|tcpPSH, n)
		sent += n
		if segs%2 == 1 || sent == size {
			c2s(tcpACK, 0)
		}
	}
	s2c(tcpFIN|tcpACK, 0)
	sseq++
	c2s(tcpFIN|tcpACK, 0)
	cseq++
	s2c(tcpACK, 0)
	return out
}

// tcpFrame is an Ethernet/IPv4/TCP frame with n payload bytes, addressed to
// a MAC no interface has (as capbench's trafgen traffic).
func tcpFrame(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags byte, n int) []byte {
	f := make([]byte, 14+20+20+n)
	copy(f, []byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02, 0x08, 0x00})
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+n))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8], ip[9] = 64, 6
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(0, ip))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for j := range n {
		f[54+j] = byte('a' + j%26)
	}
	// The pseudo-header: addresses, protocol, TCP length.
	var pseudo uint32
	for j := 0; j < 4; j += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s[j:])) + uint32(binary.BigEndian.Uint16(d[j:]))
	}
	pseudo += 6 + uint32(20+n)
	binary.BigEndian.PutUint16(tcp[16:], checksum(pseudo, f[34:]))
	return f
}
