//go:build linux

package capture

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf/ringbuf"

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
// flow.Parse may lack (queue.store). It is direct-mapped: an id has one
// slot, and a newer flow whose id maps to an occupied slot replaces the
// older one, whose cut packets then take their key from parsing what was
// kept (counted in KeysParsed). A lookup is one cache miss, where a Go map
// took two or three. The slot is the id's per-CPU sequence number plus an
// offset per CPU, so the last len(slots) flows of one CPU never evict each
// other.
type flowIDs struct {
	mu    sync.RWMutex
	slots []flowIDSlot

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

// run reads the ring buffer until rd is closed. Records are entered in
// groups, once the ring has no more ready, so that the writers' read lock is
// rarely contended.
func (t *flowIDs) run(rd *ringbuf.Reader, iface string, log *slog.Logger) {
	var rec ringbuf.Record
	pending := make([]xdp.NewFlowRecord, 0, 512)
	for {
		err := rd.ReadInto(&rec)
		if errors.Is(err, ringbuf.ErrClosed) {
			return
		}
		if err != nil {
			log.Error("new flows ring buffer reader stopped; keys come from the Go parser", "iface", iface, "err", err)
			return
		}
		var r xdp.NewFlowRecord
		if err := r.UnmarshalBinary(rec.RawSample); err != nil {
			t.bad.Add(1)
			continue
		}
		pending = append(pending, r)
		if len(pending) == cap(pending) || rd.AvailableBytes() == 0 {
			t.add(pending)
			pending = pending[:0]
		}
	}
}
