package index

// packetLog holds, for every packet of a live index, its file offset, its
// record's checksum, its flow's number and the number of the previous
// packet of its flow, in fixed-size chunks. A
// file gathers millions of packets, and a growing slice copies itself each
// time it runs out (Go grows large slices by a quarter, so every entry was
// copied about four times, each copy into fresh pages the kernel has to
// fault in and clear): that copying was a tenth of the capture's CPU. Chunks
// never move, so each entry is written once.
type packetLog struct {
	chunks []*packetChunk
	n      int32
}

const (
	chunkBits = 16
	chunkLen  = 1 << chunkBits
	chunkMask = chunkLen - 1
)

// packetChunk is 1.25 MiB: large enough that taking a new one is rare,
// small enough that a short file does not hold much memory it does not
// use.
type packetChunk struct {
	off  [chunkLen]int64
	prev [chunkLen]int32
	sum  [chunkLen]uint32
	// flow is kept for the seal, which goes forward over the packets:
	// without it, a packet's flow came from its previous packet's, a
	// load from far back in the log per packet (a cache miss each with
	// many flows), and the seal's own table of it took the same memory.
	flow [chunkLen]int32
}

// append records a packet at offset off, whose record has checksum sum,
// of flow number flow, whose previous packet is prev (-1 for none), and
// returns its number.
func (l *packetLog) append(off int64, sum uint32, flow, prev int32) int32 {
	p := l.n
	c, i := l.reserve(1)
	c.off[i], c.prev[i], c.sum[i], c.flow[i] = off, prev, sum, flow
	return p
}

// reserve takes the next n entries, which must fit in the last chunk or
// start a new one, for the caller to fill: it returns their chunk and the
// index of the first in it.
func (l *packetLog) reserve(n int) (*packetChunk, int) {
	i := int(l.n) & chunkMask
	if i == 0 {
		l.chunks = append(l.chunks, new(packetChunk))
	}
	l.n += int32(n)
	return l.chunks[len(l.chunks)-1], i
}

func (l *packetLog) len() int { return int(l.n) }

func (l *packetLog) off(p int32) int64 { return l.chunks[p>>chunkBits].off[p&chunkMask] }

func (l *packetLog) sum(p int32) uint32 { return l.chunks[p>>chunkBits].sum[p&chunkMask] }

func (l *packetLog) prev(p int32) int32 { return l.chunks[p>>chunkBits].prev[p&chunkMask] }
