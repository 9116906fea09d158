package spool

import (
	"slices"

	"github.com/stenod/stenod/flow"
)

// AddCut counts packets and bytes of flow k that the per-connection cutoff
// kept out of the spool (the kernel decided and counted them; capture
// reports them about once a second), the latest at ts (unix ns), in the
// live index of the newest file being written for iface. It reports
// whether there was one: between files, or with nothing captured yet on
// iface, the counts are not kept in the index (the kernel's and the
// metrics' counters still have them).
func (s *Spool) AddCut(iface string, k *flow.Key, packets, bytes uint64, ts int64) bool {
	f := s.newestActive(iface)
	if f == nil {
		return false
	}
	b := f.Live()
	if b == nil {
		return false
	}
	b.AddCut(k, packets, bytes, ts)
	return true
}

// newestActive returns the newest file still written for iface, or nil.
// Files being written are the newest, at the end of the list sorted by
// start: the last activeTail files are enough to find one (one per capture
// queue), and copying only those keeps the spool's lock short.
func (s *Spool) newestActive(iface string) *File {
	s.mu.Lock()
	tail := slices.Clone(s.files[max(0, len(s.files)-activeTail):])
	s.mu.Unlock()
	for i := len(tail) - 1; i >= 0; i-- {
		if f := tail[i]; f.Active() && f.Interface() == iface {
			return f
		}
	}
	return nil
}

// activeTail bounds newestActive's search.
const activeTail = 256
