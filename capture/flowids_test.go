//go:build linux

package capture

import (
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/xdp"
)

// TestFlowIDs: the last flows of every CPU resolve to their keys; an older
// flow whose slot a newer one took is forgotten and counted, never resolved
// to the newer flow's key.
func TestFlowIDs(t *testing.T) {
	const slots = 1024
	ids := newFlowIDs(slots)
	id := func(cpu, seq uint64) uint64 { return seq<<xdp.FlowIDCPUBits | cpu }
	key := func(cpu, seq uint64) flow.Key {
		var k flow.Key
		k.Src[0], k.Src[1], k.Src[2] = byte(cpu), byte(seq), byte(seq>>8)
		k.SrcPort = uint16(seq)
		return k
	}
	// Two CPUs, each creating slots+100 flows: each CPU's first 100 are
	// evicted by its own newer flows at the latest.
	var recs []xdp.NewFlowRecord
	for seq := uint64(1); seq <= slots+100; seq++ {
		for cpu := uint64(0); cpu < 2; cpu++ {
			recs = append(recs, xdp.NewFlowRecord{FlowID: id(cpu, seq), Key: key(cpu, seq)})
		}
	}
	ids.add(recs)
	if got := ids.records.Load(); got != uint64(len(recs)) {
		t.Fatalf("records %d, want %d", got, len(recs))
	}
	if got := ids.size.Load(); got != slots {
		t.Fatalf("size %d, want %d", got, slots)
	}
	if got := ids.evictions.Load(); got != uint64(len(recs)-slots) {
		t.Fatalf("evictions %d, want %d", got, len(recs)-slots)
	}

	b := newBatch(1<<16, 4096, 0, 0)
	frame := make([]byte, 60)
	type want struct {
		cpu, seq uint64
		known    bool
	}
	var wants []want
	for cpu := uint64(0); cpu < 2; cpu++ {
		wants = append(wants, want{cpu, 1, false}, want{cpu, 100, false}, want{cpu, slots + 100, true})
	}
	for _, w := range wants {
		b.add(1, id(w.cpu, w.seq), len(frame), frame)
	}
	b.add(1, 0, len(frame), frame) // no flow id
	b.add(1, id(5, 7), len(frame), frame)
	hits := ids.resolve(b)
	known := 0
	for i, w := range wants {
		p := b.pkts[i]
		if w.known {
			known++
			if !p.keyed || b.keys[i] != key(w.cpu, w.seq) {
				t.Errorf("cpu %d seq %d: keyed %v key %v, want its key", w.cpu, w.seq, p.keyed, b.keys[i])
			}
		}
		// An evicted id may still be in its slot only if no newer flow
		// took it, which two full rounds rule out here.
		if !w.known && p.keyed {
			t.Errorf("cpu %d seq %d: resolved after eviction to %v", w.cpu, w.seq, b.keys[i])
		}
	}
	for _, p := range b.pkts[len(wants):] {
		if p.keyed {
			t.Errorf("flow id %#x resolved, want unknown", p.flowID)
		}
	}
	if hits != uint64(known) {
		t.Errorf("resolve found %d, want %d", hits, known)
	}
}

// TestGatherTime: the receive loop sleeps the rest of the coalescing time,
// cut so that at the rate of its last sleep at most a quarter of the ring
// fills.
func TestGatherTime(t *testing.T) {
	q := &queue{coalesce: 25 * time.Millisecond, ringSlots: 65536}
	for _, tc := range []struct {
		got         int
		slept, left time.Duration
		want        time.Duration
	}{
		{0, 0, 25 * time.Millisecond, 25 * time.Millisecond},                         // first sleep: no rate yet
		{1000, 25 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond},  // 40 kpps: 16384 take 410 ms
		{16384, 10 * time.Millisecond, 25 * time.Millisecond, 10 * time.Millisecond}, // 1.6 Mpps: a quarter in 10 ms
		{163840, 10 * time.Millisecond, 25 * time.Millisecond, time.Millisecond},     // 16 Mpps: in 1 ms
	} {
		if got := q.gatherTime(tc.got, tc.slept, tc.left); got != tc.want {
			t.Errorf("gatherTime(%d, %v, %v) = %v, want %v", tc.got, tc.slept, tc.left, got, tc.want)
		}
	}
}
