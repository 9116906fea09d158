package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
)

// Encode returns the sealed index file contents for everything the Builder
// has indexed up to its visible end, for the pcap file named name (its base
// name, as the writer gave it; Summary.NameHash) captured on iface. The
// Builder should receive no more packets (the writer has moved to a new
// file), but concurrent readers are fine.
func (b *Builder) Encode(iface, name string) []byte {
	return b.encode(FormatVersion, iface, name)
}

func (b *Builder) encode(version uint32, iface, name string) []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	sum := b.sum
	flows := make([]Flow, len(b.flows), len(b.flows)+len(b.cutOnly))
	for i := range b.flows {
		flows[i] = b.flows[i].Flow
	}
	if sum.Packets == 0 {
		sum.First, sum.Last = 0, 0
	} else {
		sum.FirstSum, sum.LastOffset, sum.LastSum = b.ends()
		// Flows with cut packets only follow the others, without
		// positions. A file without packets has no time range to put
		// them in: their counts are lost from the index (the kernel's
		// counters keep them).
		flows = append(flows, b.cutOnly...)
	}
	// Cut packets may be later than the last stored one; a sealed
	// index keeps every flow within its time range.
	for i := range flows {
		f := &flows[i]
		f.First = min(max(f.First, sum.First), sum.Last)
		f.Last = min(max(f.Last, f.First), sum.Last)
	}
	sum.NameHash = NameHash(name)
	size, total := b.positionSizes()
	posLen := append(size, make([]int, len(flows)-len(size))...)
	return encode(version, sum, iface, b.blocks, flows, posLen, sealSections{
		posLen: total,
		sumLen: 4 * b.pkts.len(),
		fill:   func(pos, sums []byte) { b.positions(size, pos, sums) },
	})
}

// positionSizes is the first pass of the position section: each flow's
// share of it in bytes, and their total. Walking each flow's list of
// packets (the backward links) from its newest packet chases one pointer
// per packet, a cache miss each when flows interleave: that walk was a
// third of an import's CPU. Instead it goes forward over the packets,
// each packet's distance from its flow's packet before taken from a table
// by flow, and adds up each flow's section size; positions then writes
// every delta at its flow's cursor, and every record's checksum at its
// flow's place in the sums section.
//
// A run of packets of one flow (all of them with one flow, bursts on a
// real link) keeps its flow's figures in registers: through the tables,
// each packet waited for the store of the packet before (measured with
// one flow: BenchmarkSealFlows, docs/benchmarks.md).
func (b *Builder) positionSizes() (size []int, total int) {
	l := &b.pkts
	n, nf := l.len(), len(b.flows)
	size = make([]int, nf)
	lastOff := make([]int64, nf) // 0 before a flow's first packet: its delta is its offset
	run, runOff, runSize := int32(-1), int64(0), 0
	for ci, c := range l.chunks {
		m := min(n-ci<<chunkBits, chunkLen)
		for i, f := range c.flow[:m] {
			if f != run {
				if run >= 0 {
					lastOff[run], size[run] = runOff, runSize
				}
				run, runOff, runSize = f, lastOff[f], size[f]
			}
			off := c.off[i]
			runSize += uvarintLen(uint64(off - runOff))
			runOff = off
		}
	}
	if run >= 0 {
		size[run] = runSize
	}
	for _, s := range size {
		total += s
	}
	return size, total
}

// positions writes the position section into sec and the sums section
// into sums, the flows' shares of sec being size (positionSizes). A run of
// one flow keeps its cursor in registers, as in positionSizes.
func (b *Builder) positions(size []int, sec, sums []byte) {
	l := &b.pkts
	n, nf := l.len(), len(b.flows)
	cur := make([]sealCursor, nf)
	total, packets := 0, 0
	for i, s := range size {
		cur[i] = sealCursor{pos: total, sum: 4 * packets}
		total += s
		packets += int(b.flows[i].Packets)
	}
	if nf >= partitionFlows {
		b.scatterPartitioned(cur, sec, sums)
		return
	}
	// The same walk as positionSizes', written out again: shared as an
	// iterator over runs, whose body Go calls per run, a seal with 1,024
	// flows cost 37 ns a packet instead of 23.
	run, runCur := int32(-1), sealCursor{}
	for ci, c := range l.chunks {
		m := min(n-ci<<chunkBits, chunkLen)
		for i, f := range c.flow[:m] {
			if f != run {
				if run >= 0 {
					cur[run] = runCur
				}
				run, runCur = f, cur[f]
			}
			runCur.put(sec, sums, c.off[i], c.sum[i])
		}
	}
}

// sealCursor is where a flow's next delta and checksum go, and the offset
// of its packet before (0 before its first: its delta is its offset):
// together, so that writing a packet touches one cursor line, not two.
type sealCursor struct {
	pos, sum int
	last     int64
}

func (c *sealCursor) put(sec, sums []byte, off int64, sum uint32) {
	c.pos += binary.PutUvarint(sec[c.pos:], uint64(off-c.last))
	c.last = off
	binary.LittleEndian.PutUint32(sums[c.sum:], sum)
	c.sum += 4
}

// With many flows, writing each packet at its flow's cursor in packet
// order touches a line of sec and one of sums per packet, each far from
// the last one written (65,536 flows: a cache miss each, two thirds of a
// seal). From partitionFlows flows on, the packets go a window at a time,
// each window's sorted by group of neighbouring flows (partitionGroups
// streams written in order: cache-friendly), and then written group after
// group: a group's flows have neighbouring cursors and sections, and with
// windowPerFlow packets a flow in a window its lines are loaded once for
// several packets. The sort is stable, so each flow's packets keep their
// order. BenchmarkSealFlows with 65,536 flows: 90 to 68 ns a packet
// (medians of five alternating runs; 63 with four times the window, not
// worth its 64 MiB); with each packet's flow number in the log instead of
// taken from its previous packet's, 53 to 45 (in a quieter hour), for
// 1.4-2.3 ns more per packet in Add. The distances from each flow's packet
// before are taken in the last step, from the cursors, rather than while
// sorting from a table by flow read in packet order (a cache miss a
// packet): 46-55 to 33-37 ns (four alternating runs; in the process,
// the seal's CPU with random flows 48 to 41 ns a packet).
const (
	partitionFlows  = 2048
	partitionGroups = 256
	windowPerFlow   = 16
	maxWindow       = 1 << 20 // 16 MiB of sealEntry
)

// sealEntry is a packet on its way to its flow's cursor.
type sealEntry struct {
	flow int32
	sum  uint32
	off  int64
}

// scatterPartitioned is positions' walk with many flows.
func (b *Builder) scatterPartitioned(cur []sealCursor, sec, sums []byte) {
	l := &b.pkts
	n := l.len()
	shift := uint(bits.Len(uint(len(cur)-1) / partitionGroups))
	// A window is whole chunks.
	w := min(max(windowPerFlow*len(cur), chunkLen), maxWindow)
	w = (w + chunkLen - 1) &^ chunkMask
	tmp := make([]sealEntry, min(w, n))
	var start [partitionGroups]int
	for a := 0; a < n; a += w {
		e := min(n, a+w)
		var count [partitionGroups]int
		for base := a; base < e; base += chunkLen {
			c := l.chunks[base>>chunkBits]
			for _, f := range c.flow[:min(e-base, chunkLen)] {
				count[f>>shift]++
			}
		}
		at := 0
		for g, c := range count {
			start[g] = at
			at += c
		}
		for base := a; base < e; base += chunkLen {
			c := l.chunks[base>>chunkBits]
			m := min(e-base, chunkLen)
			for i, f := range c.flow[:m] {
				g := f >> shift
				tmp[start[g]] = sealEntry{flow: f, sum: c.sum[i], off: c.off[i]}
				start[g]++
			}
		}
		for _, en := range tmp[:e-a] {
			cur[en.flow].put(sec, sums, en.off, en.sum)
		}
	}
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x: a
// byte per 7 bits, at least one.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// WriteFile writes data to path atomically and durably: to a hidden
// temporary file in the same directory, fsynced, renamed into place, and the
// directory fsynced, so a crash leaves either no index or a whole one.
func WriteFile(path string, data []byte) error {
	t, err := WriteTemp(path, data)
	if err != nil {
		return err
	}
	if err := t.Rename(); err != nil {
		return errors.Join(err, t.Abort())
	}
	return t.SyncDir()
}

// TempFile is an index file written and fsynced under a hidden temporary
// name beside its path (WriteTemp), to be renamed into place or removed.
// The write and its fsync are the slow part: a caller that holds a lock
// while the index appears (the spool, against a concurrent delete of its
// pcap) holds it for the rename alone.
type TempFile struct{ tmp, path string }

// WriteTemp writes data to a new hidden file beside path, named
// ".NAME.*.tmp" (unique, so that two writers of one index never share
// it; a spool's startup repair removes such files), and fsyncs it.
func WriteTemp(path string, data []byte) (_ *TempFile, err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("write index %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o640); err != nil {
		return nil, errors.Join(fmt.Errorf("write index %s: %w", tmp, err), f.Close())
	}
	if _, err := f.Write(data); err != nil {
		return nil, errors.Join(fmt.Errorf("write index %s: %w", tmp, err), f.Close())
	}
	if err := f.Sync(); err != nil {
		return nil, errors.Join(fmt.Errorf("sync index %s: %w", tmp, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close index %s: %w", tmp, err)
	}
	return &TempFile{tmp: tmp, path: path}, nil
}

// Rename puts the file in place, replacing any file at its path.
func (t *TempFile) Rename() error {
	if err := os.Rename(t.tmp, t.path); err != nil {
		return fmt.Errorf("rename index %s: %w", t.path, err)
	}
	return nil
}

// SyncDir makes the rename durable.
func (t *TempFile) SyncDir() error { return syncDir(filepath.Dir(t.path)) }

// Abort removes the temporary file, if Rename has not moved it.
func (t *TempFile) Abort() error {
	if err := os.Remove(t.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove index %s: %w", t.tmp, err)
	}
	return nil
}

func syncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return errors.Join(d.Sync(), d.Close())
}
