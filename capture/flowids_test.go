//go:build linux

package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testutil"
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

	type want struct {
		cpu, seq uint64
		known    bool
	}
	var wants []want
	for cpu := uint64(0); cpu < 2; cpu++ {
		wants = append(wants, want{cpu, 1, false}, want{cpu, 100, false}, want{cpu, slots + 100, true})
	}
	for _, w := range wants {
		var k flow.Key
		ok := ids.key(id(w.cpu, w.seq), &k)
		if w.known && (!ok || k != key(w.cpu, w.seq)) {
			t.Errorf("cpu %d seq %d: known %v key %v, want its key", w.cpu, w.seq, ok, k)
		}
		// An evicted id may still be in its slot only if no newer flow
		// took it, which two full rounds rule out here.
		if !w.known && ok {
			t.Errorf("cpu %d seq %d: resolved after eviction to %v", w.cpu, w.seq, k)
		}
	}
	for _, unknown := range []uint64{0, id(5, 7)} {
		var k flow.Key
		if ids.key(unknown, &k) {
			t.Errorf("flow id %#x resolved to %v, want unknown", unknown, k)
		}
	}
}

// TestStoreKeys: the writer keys a packet by the packet before it when
// both have the same flow id, by the flow id table when the snap length cut
// it, and by the parser otherwise.
func TestStoreKeys(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	defer sp.Close()
	w, err := sp.NewWriter("keys-q0", "keys")
	if err != nil {
		t.Fatal(err)
	}
	frame := func(host byte, port uint16) []byte {
		return udpFrame(netip.AddrFrom4([4]byte{10, 0, 0, host}), port, []byte("keys"))
	}
	ids := newFlowIDs(64)
	var k9 flow.Key
	flow.Parse(frame(3, 1003), &k9)
	ids.add([]xdp.NewFlowRecord{{FlowID: 9, Key: k9}})

	b := newBatch(1<<16, 64, 0, 0)
	add := func(id uint64, f []byte, capLen int) { b.add(1e18, id, len(f), f[:capLen]) }
	whole := func(id uint64, f []byte) { add(id, f, len(f)) }
	whole(7, frame(1, 1001))
	whole(7, frame(1, 1002))    // flow id 7 again: the key of the packet before
	add(9, frame(3, 1003), 34)  // cut after the IP header: the table's key
	add(11, frame(4, 1004), 34) // cut, id unknown: what the parser finds
	whole(11, frame(5, 1005))   // parsed: the cut packet's key may be partial
	whole(0, frame(6, 1006))    // no flow id
	q := &queue{stream: "keys-q0", ids: ids, w: w, log: slog.New(slog.DiscardHandler)}
	q.writeLog = errLog{log: q.log, every: time.Second}
	q.store(b)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter string
		want   int
	}{
		{"port 1001", 2}, {"port 1002", 0}, {"port 1003", 1}, {"port 1004", 0}, {"port 1005", 1}, {"port 1006", 1}, {"host 10.0.0.4", 1},
	} {
		if got := len(answer(t, sp, tc.filter)); got != tc.want {
			t.Errorf("%s: %d packets, want %d", tc.filter, got, tc.want)
		}
	}
	if fromID, parsed := q.keysFromID.Load(), q.keysParsed.Load(); fromID != 2 || parsed != 4 {
		t.Errorf("keys from flow ids %d, parsed %d; want 2 and 4", fromID, parsed)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
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

// TestCaptureCutKeysFromNewFlows: packets the snap length cuts before
// their UDP header are keyed by the XDP program's key, which reaches the
// flow id table through the new_flows ring buffer that the writers drain
// before keying each batch: every such packet, each the first of its flow,
// is found by its port.
func TestCaptureCutKeysFromNewFlows(t *testing.T) {
	testutil.RequireRoot(t)
	v := newVeth(t)
	root := testutil.BPFFS(t)
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(root, v.Host)
	cfg.SnapLen = 64
	c := mustStart(t, cfg, sp)
	s := testutil.NewSender(t, v)
	const n = 20
	for i := range n {
		s.Send(t, ipv6ExtFrame(uint16(4000+i)))
	}
	st := waitPackets(t, c, n, 10*time.Second)
	q := st.Interfaces[0].Queues[0]
	if q.Truncated != n || q.KeysFromFlowID != n {
		t.Errorf("%d packets truncated, %d keyed through their flow id; want %d each", q.Truncated, q.KeysFromFlowID, n)
	}
	// Stored is counted before the flush that makes packets queryable.
	time.Sleep(200 * time.Millisecond)
	for i := range n {
		if got := len(answer(t, sp, fmt.Sprintf("udp and port %d", 4000+i))); got != 1 {
			t.Errorf("udp port %d: %d packets, want 1", 4000+i, got)
		}
	}
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// ipv6ExtFrame is a UDP packet behind an IPv6 header and two 8-byte
// extension headers (hop-by-hop, destination options): its UDP header
// starts at byte 70, after a 64-byte snap length.
func ipv6ExtFrame(sport uint16) []byte {
	payload := []byte("beyond the snap length")
	f := make([]byte, 14+40+8+8+8+len(payload))
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd})
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(8+8+8+len(payload)))
	ip[6], ip[7] = 0, 64 // next: hop-by-hop options
	copy(ip[8:], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(ip[24:], netip.MustParseAddr("2001:db8::2").AsSlice())
	hbh := ip[40:]
	hbh[0], hbh[2], hbh[3] = 60, 1, 4 // next: destination options; PadN of 4
	dst := hbh[8:]
	dst[0], dst[2], dst[3] = 17, 1, 4 // next: UDP; PadN of 4
	putUDP(dst[8:], sport, payload)
	return f
}
