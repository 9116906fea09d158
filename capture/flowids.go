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

// maxFlowIDs bounds the flow id table of one interface. Ids never repeat
// within a run (docs/bpf.md), so entries of flows that ended are dead weight;
// the table is cleared when it reaches the bound and the Go parser covers the
// misses until the ring buffer has refilled it. The default flows map holds
// as many flows, and an entry costs about 100 bytes.
const maxFlowIDs = xdp.DefaultMaxFlows

// flowIDs maps the flow ids of one loaded XDP program to their keys, filled
// from the program's new_flows ring buffer. Ids are scoped to the program
// (each load starts afresh), so the table lives and dies with the interface's
// capture.
type flowIDs struct {
	mu  sync.RWMutex
	m   map[uint64]flow.Key
	max int

	records atomic.Uint64 // ring buffer records read
	resets  atomic.Uint64 // times the table was cleared at its bound
	bad     atomic.Uint64 // records too short to decode
	size    atomic.Int64
}

func newFlowIDs(max int) *flowIDs {
	return &flowIDs{m: make(map[uint64]flow.Key), max: max}
}

// add enters recs, clearing the table first when they would take it past
// its bound.
func (t *flowIDs) add(recs []xdp.NewFlowRecord) {
	t.mu.Lock()
	if len(t.m)+len(recs) > t.max {
		clear(t.m)
		t.resets.Add(1)
	}
	for i := range recs {
		t.m[recs[i].FlowID] = recs[i].Key
	}
	t.size.Store(int64(len(t.m)))
	t.mu.Unlock()
	t.records.Add(uint64(len(recs)))
}

// resolve sets the key of every packet of b whose flow id is known, under one
// read lock for the whole batch, and returns how many it found.
func (t *flowIDs) resolve(b *batch) uint64 {
	var hits uint64
	t.mu.RLock()
	for i := range b.pkts {
		p := &b.pkts[i]
		p.keyed = false
		if p.flowID == 0 {
			continue
		}
		if k, ok := t.m[p.flowID]; ok {
			b.keys[i] = k
			p.keyed = true
			hits++
		}
	}
	t.mu.RUnlock()
	return hits
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
