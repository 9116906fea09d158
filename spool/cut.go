package spool

import (
	"slices"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
)

// LiveIndex returns the live index of the newest file being written for
// iface, nil when there is none (between files, or nothing captured yet on
// iface). The per-connection cutoff's reporter enters the kernel's cut
// counts there (index.Builder.AddCut) about once a second.
//
// Files being written are the newest, at the end of the list sorted by
// start: the last activeTail files are enough to find one (one per capture
// queue), and copying only those keeps the spool's lock short.
func (s *Spool) LiveIndex(iface string) *index.Builder {
	s.mu.Lock()
	tail := slices.Clone(s.files[max(0, len(s.files)-activeTail):])
	s.mu.Unlock()
	for i := len(tail) - 1; i >= 0; i-- {
		if f := tail[i]; f.Interface() == iface {
			if b := f.Live(); b != nil {
				return b
			}
		}
	}
	return nil
}

// activeTail bounds LiveIndex's search.
const activeTail = 256

// AddCut counts packets and bytes of flow k that the per-connection cutoff
// kept out of the spool, the latest at ts (unix ns), in LiveIndex(iface).
// It reports whether there was one; without, the counts are not kept in
// the index (the kernel's and the metrics' counters still have them).
func (s *Spool) AddCut(iface string, k *flow.Key, packets, bytes uint64, ts int64) bool {
	b := s.LiveIndex(iface)
	if b == nil {
		return false
	}
	b.AddCut(k, packets, bytes, ts)
	return true
}
