package spool

import (
	"container/list"
	"sync"

	"github.com/stenod/stenod/index"
)

// File is one spool file: its pcap and, once sealed, its index.
type File struct {
	Path   string // the pcap file
	Dir    string // the spool directory it lives in
	Stream string
	Start  int64 // first packet's timestamp, from the name

	ds *dirState // the directory's budget; its mu guards size and idxSize
	// size and idxSize are the bytes of the pcap and of the index file as
	// the budget counts them; idxSize includes sumsSize, the bytes of the
	// sums journal, which the index replaces.
	size, idxSize, sumsSize int64
	// held is the pcap's bytes while it is deleted and readers keep it
	// allocated (revoke.go).
	held int64

	// rm is held while the file's pair on disk changes: its deletion, and
	// the rewrite of an unusable index. It keeps a rewritten index from
	// outliving a deleted pcap.
	rm sync.Mutex

	mu sync.Mutex
	// busy: a writer has the file open; the budget never deletes it.
	busy bool
	// deleted: removed from the spool by the budget; handles opened before
	// keep reading it.
	deleted bool
	// indexing: its index is being written (writeIndex); the budget does
	// not delete it to make room for its own index.
	indexing bool
	// repairing: the index is being rebuilt after a query found the file
	// shorter than it (Spool.Damaged).
	repairing bool
	// unsaved is an index rebuilt at Open that could not be written (disk
	// full); Open writes it once the budget has made room.
	unsaved []byte
	iface   string
	live    *index.Builder // while the file is written and until its index is sealed
	sum     index.Summary  // of the sealed index
	sealed  *index.Reader  // nil when not loaded
	lru     *list.Element  // position in the spool's cache while sealed != nil
	// mapped is the sealed pcap mapped into memory, at most while sealed
	// is cached and the file not deleted; f holds one reference for the
	// cache, handles one each (mapped.go).
	mapped *mapping
	// readers are the snapshots with a handle open on the file, one entry
	// per handle (revoke.go).
	readers []*reader
}

// Summary returns what the file's index covers.
func (f *File) Summary() index.Summary {
	f.mu.Lock()
	live := f.live
	sum := f.sum
	f.mu.Unlock()
	if live != nil {
		return live.Summary()
	}
	return sum
}

// Live returns the file's live index while the file is written and until
// its index is sealed, else nil. The Builder stays valid after that: it
// holds the file's flows as they were at the end, which is how the IPFIX
// exporter counts the last packets of a file that rotated between two of
// its scans.
func (f *File) Live() *index.Builder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live
}

// Interface is the network interface whose packets the file holds, ""
// when unknown (an imported file).
func (f *File) Interface() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.iface
}

// Active reports whether the file is still written or not yet sealed.
func (f *File) Active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live != nil
}

// overlaps reports whether the file may hold packets stamped in [lo, hi).
func (f *File) overlaps(lo, hi int64) bool {
	s := f.Summary()
	if s.Packets == 0 {
		return f.Active()
	}
	return s.First < hi && s.Last >= lo
}

func (f *File) isDeleted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deleted
}
