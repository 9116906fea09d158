//go:build linux

package capture

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/xdp"
)

// maxFlowIDs is the number of entries of an interface's flow id table, as
// many as the default flows map holds. An entry costs 56 bytes.
const maxFlowIDs = xdp.DefaultMaxFlows

// flowIDs maps the flow ids of one loaded XDP program to their keys, filled
// from the program's new_flows ring buffer. Ids are scoped to the program
// (each load starts afresh), so the table lives and dies with the interface's
// capture.
//
// The writer consults it for packets the snap length cut, whose headers
// flow.Parse may lack (queue.store), after entering the ring buffer's
// waiting records (refresh). It is direct-mapped: an id has one
// slot, and a newer flow whose id maps to an occupied slot replaces the
// older one, whose cut packets then take their key from parsing what was
// kept (counted in KeysParsed). A lookup is one cache miss, where a Go map
// took two or three. The slot is the id's per-CPU sequence number plus an
// offset per CPU, so the last len(slots) flows of one CPU never evict each
// other.
type flowIDs struct {
	mu    sync.RWMutex
	slots []flowIDSlot

	// ring feeds the table (refresh); nil in tests that add directly.
	ring      *newFlowsRing
	iface     string
	log       *slog.Logger
	pendingMu sync.Mutex
	pending   []xdp.NewFlowRecord // records read, not yet added; reused

	records   atomic.Uint64 // ring buffer records read
	evictions atomic.Uint64 // entries replaced by a newer flow
	bad       atomic.Uint64 // records too short to decode
	size      atomic.Int64  // occupied slots
}

type flowIDSlot struct {
	id  uint64 // 0: empty
	key flow.Key
}

// newFlowIDs returns a table of at least n slots.
func newFlowIDs(n int) *flowIDs {
	return &flowIDs{slots: make([]flowIDSlot, pow2(n))}
}

// slot returns where id belongs. CPU c's flows start at c times the golden
// ratio of the table, spreading the CPUs' sequences apart.
func (t *flowIDs) slot(id uint64) *flowIDSlot {
	seq, cpu := id>>xdp.FlowIDCPUBits, id&(1<<xdp.FlowIDCPUBits-1)
	return &t.slots[(seq+cpu*0x9e3779b97f4a7c15>>32)&uint64(len(t.slots)-1)]
}

// add enters recs.
func (t *flowIDs) add(recs []xdp.NewFlowRecord) {
	var evicted, filled int64
	t.mu.Lock()
	for i := range recs {
		s := t.slot(recs[i].FlowID)
		switch s.id {
		case 0:
			filled++
		case recs[i].FlowID:
		default:
			evicted++
		}
		s.id, s.key = recs[i].FlowID, recs[i].Key
	}
	t.mu.Unlock()
	t.size.Add(filled)
	t.evictions.Add(uint64(evicted))
	t.records.Add(uint64(len(recs)))
}

// key sets *k to the key of flow id and reports whether the id is known.
func (t *flowIDs) key(id uint64, k *flow.Key) bool {
	t.mu.RLock()
	s := t.slot(id)
	ok := s.id == id
	if ok {
		*k = s.key
	}
	t.mu.RUnlock()
	return ok
}

// refresh enters the records waiting in the ring buffer, if the table has
// one. The AF_XDP writers call it before keying each batch: a packet's
// record is submitted before the packet reaches its socket, so a batch's
// new flows are in the table by the time they are looked up. A ring that
// fails is closed (drain) and logged once; keys then come from the parser.
func (t *flowIDs) refresh() {
	if t.ring == nil {
		return
	}
	t.pendingMu.Lock()
	defer t.pendingMu.Unlock()
	_, err := t.ring.drain(func(sample []byte) {
		var r xdp.NewFlowRecord
		if err := r.UnmarshalBinary(sample); err != nil {
			t.bad.Add(1)
			return
		}
		t.pending = append(t.pending, r)
	})
	if len(t.pending) > 0 {
		t.add(t.pending)
		t.pending = t.pending[:0]
	}
	if err != nil {
		t.log.Error("new flows ring buffer failed; keys of cut packets come from the Go parser", "iface", t.iface, "err", err)
	}
}
