package index

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	posSec, posLen, sumSec := b.positions()
	posLen = append(posLen, make([]int, len(flows)-len(posLen))...)
	return encode(version, sum, iface, b.blocks, flows, posSec, posLen, sumSec)
}

// positions builds the position section for encode from the packets'
// backward links. Walking each flow's list from its newest packet chases
// one pointer per packet, a cache miss each when flows interleave: that
// walk was a third of an import's CPU. Instead two passes go forward over
// the packets, whose loads do not depend on each other: a packet's flow is
// its previous packet's, or the next new flow when it has none (flows are
// numbered in the order their first packets came), which gives each flow's
// section size; the second pass writes every delta at its flow's cursor,
// and every record's checksum at its flow's place in the sums section.
func (b *Builder) positions() (sec []byte, size []int, sums []byte) {
	l := &b.pkts
	n, nf := l.len(), len(b.flows)
	flowOf := make([]int32, n)
	size = make([]int, nf)
	next := int32(0)
	for ci, c := range l.chunks {
		base := ci << chunkBits
		m := min(n-base, chunkLen)
		offs, prevs, fo := c.off[:m], c.prev[:m], flowOf[base:base+m]
		for i, q := range prevs {
			f, delta := next, offs[i]
			if q >= 0 {
				f, delta = flowOf[q], delta-l.off(q)
			} else {
				next++
			}
			fo[i] = f
			size[f] += uvarintLen(uint64(delta))
		}
	}
	cursor := make([]int, nf)
	sumCursor := make([]int, nf)
	total, packets := 0, 0
	for i, s := range size {
		cursor[i] = total
		total += s
		sumCursor[i] = 4 * packets
		packets += int(b.flows[i].Packets)
	}
	sec = make([]byte, total)
	sums = make([]byte, 4*packets)
	for ci, c := range l.chunks {
		base := ci << chunkBits
		m := min(n-base, chunkLen)
		offs, prevs, fo := c.off[:m], c.prev[:m], flowOf[base:base+m]
		for i, q := range prevs {
			delta := offs[i]
			if q >= 0 {
				delta -= l.off(q)
			}
			f := fo[i]
			cursor[f] += binary.PutUvarint(sec[cursor[f]:], uint64(delta))
			binary.LittleEndian.PutUint32(sums[sumCursor[f]:], c.sum[i])
			sumCursor[f] += 4
		}
	}
	return sec, size, sums
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x.
func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// WriteFile writes data to path atomically and durably: to a hidden
// temporary file in the same directory, fsynced, renamed into place, and the
// directory fsynced, so a crash leaves either no index or a whole one.
func WriteFile(path string, data []byte) (err error) {
	dir, name := filepath.Split(path)
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write index %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return errors.Join(fmt.Errorf("write index %s: %w", tmp, err), f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("sync index %s: %w", tmp, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename index %s: %w", path, err)
	}
	return syncDir(dir)
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
