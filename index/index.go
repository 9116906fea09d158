package index

import (
	"errors"
	"hash/fnv"

	"github.com/stenod/stenod/flow"
)

// BlockPackets is how many packets (in file order) one Block of the sparse
// time index covers.
const BlockPackets = 1024

// Flow is one flow's record in a file's index.
type Flow struct {
	Key     flow.Key
	First   int64  // timestamp of its first packet, unix ns
	Last    int64  // timestamp of its last packet
	Packets uint64 // packets in this file
	Bytes   uint64 // wire bytes (original lengths) in this file
	// CutPackets and CutBytes are the flow's packets and wire bytes that
	// the per-connection cutoff kept out of the file (counted in the
	// kernel, reported while the file was written). A flow with cut
	// packets but none in the file has First and Last at the time of its
	// latest cut packet, within the file's time range once sealed.
	CutPackets uint64
	CutBytes   uint64
}

// Block is one entry of the sparse time index: the packets from Offset up to
// the next block's Offset have timestamps within [Min, Max]. A hole block
// (Min > Max, see Builder.Skip) covers bytes that hold no packet: damage
// that repair stepped over; it overlaps no time range.
type Block struct {
	Offset   int64
	Min, Max int64
}

// Summary describes what an index covers.
type Summary struct {
	First, Last int64  // smallest and largest packet timestamp
	Packets     uint64 // packets indexed
	Bytes       uint64 // wire bytes indexed
	DataEnd     int64  // the index covers the pcap file up to this offset
	Flows       int
	// Monotone: every packet's timestamp is >= the one before it in the
	// file, so reading in file order yields time order.
	Monotone bool
	// FirstSum is the checksum (pcapio.RecordSum) of the file's first
	// record (at the end of the pcap file header), LastSum that of its last
	// one, at LastOffset: reading the two tells an index from another
	// file's without loading it.
	FirstSum   uint32
	LastOffset int64
	LastSum    uint32
	// NameHash is NameHash of the base name of the pcap file the index was
	// written for: an index beside a file of another name came with a
	// copy (or a rename) of that file.
	NameHash uint64
	// Version is the format version of the index file the summary was
	// read from (ReadSummary, Decode), 0 for a live index.
	Version int
}

// NameHash hashes a pcap file's base name for Summary.NameHash (64-bit
// FNV-1a); "" hashes to 0.
func NameHash(name string) uint64 {
	if name == "" {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// View is the read side of an index, live or sealed.
type View interface {
	Summary() Summary
	// Flows calls fn for each flow, with a number that AppendPositions takes,
	// until fn returns false. f is valid only during the call; fn may call
	// the View's other methods.
	Flows(fn func(id int, f *Flow) bool)
	// AppendPositions appends the file offsets of flow id's packet records,
	// in ascending order, all below Summary().DataEnd.
	AppendPositions(dst []int64, id int) ([]int64, error)
	// AppendSums appends the checksums (pcapio.RecordSum) of the records
	// AppendPositions lists, in the same order: a record read at a
	// position is what was stored only if its checksum is this one.
	AppendSums(dst []uint32, id int) ([]uint32, error)
	// Blocks returns the sparse time index in file order.
	Blocks() []Block
}

// Errors returned by Open and Decode; the returned error wraps one of them.
var (
	// ErrCorrupt: the file is not a well-formed index (bad magic, checksum,
	// or structure). It must be rebuilt from its pcap file.
	ErrCorrupt = errors.New("index corrupt")
	// ErrVersion: the file is an index of a version this build does not read.
	ErrVersion = errors.New("index version unsupported")
)
