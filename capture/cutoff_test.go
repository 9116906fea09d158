//go:build linux

package capture

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// tcpFrame is an IPv4/TCP frame with flags and size bytes in all.
func tcpFrame(src, dst [4]byte, sport, dport uint16, flags byte, size int) []byte {
	f := make([]byte, max(size, 14+20+20))
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12], tcp[13] = 5<<4, flags
	for i := 20; i < len(tcp); i++ {
		tcp[i] = byte(i)
	}
	return f
}

// cutoffConns is a few TCP connections, interleaved: each a SYN, SYN-ACK,
// ACK, many data packets of random sizes in both directions, FIN, FIN,
// ACK. The ports pick the cutoff rules of TestCaptureCutoff.
func cutoffConns() [][]byte {
	rng := rand.New(rand.NewPCG(17, 17))
	var conns [][][]byte
	for i, port := range []uint16{80, 443, 5001, 5002, 8080} {
		a, b := [4]byte{10, 9, 0, byte(i + 1)}, [4]byte{10, 9, 1, byte(i + 1)}
		ap := uint16(40000 + i)
		fromA := func(flags byte, size int) []byte { return tcpFrame(a, b, ap, port, flags, size) }
		fromB := func(flags byte, size int) []byte { return tcpFrame(b, a, port, ap, flags, size) }
		c := [][]byte{fromA(0x02, 74), fromB(0x12, 74), fromA(0x10, 66)}
		for j := range 60 {
			size := 100 + rng.IntN(1300)
			if j%3 == 2 {
				c = append(c, fromA(0x18, size))
			} else {
				c = append(c, fromB(0x18, size))
			}
		}
		c = append(c, fromA(0x11, 66), fromB(0x11, 66), fromA(0x10, 66))
		conns = append(conns, c)
	}
	var out [][]byte
	for j := 0; ; j++ {
		more := false
		for _, c := range conns {
			if j < len(c) {
				out = append(out, c[j])
				more = true
			}
		}
		if !more {
			return out
		}
	}
}

func TestCaptureCutoffXDP(t *testing.T)      { testCaptureCutoff(t, MethodXDP, nil) }
func TestCaptureCutoffAFPacket(t *testing.T) { testCaptureCutoff(t, MethodAFPacket, nil) }

// The socket filter decides beside the XDP program in observe mode.
func TestCaptureCutoffAFPacketObserve(t *testing.T) {
	testCaptureCutoff(t, MethodAFPacket, func(c *Config) { c.XDPObserve = true })
}

// testCaptureCutoff sends a few TCP connections through a veth into a
// capture by method with a 20 KB cutoff and rules, and checks that the
// spool holds exactly what the reference cut (xdp.CutoffModel over the
// sent frames) keeps, and that the rest reaches the spool as cut counts,
// per flow and direction.
func testCaptureCutoff(t *testing.T, method string, mod func(*Config)) {
	testutil.RequireRoot(t)
	cutoff := xdp.CutoffConfig{
		Default: xdp.Limit{Bytes: 20000},
		Rules: []xdp.CutoffRule{
			{Name: "port 5001", Match: []xdp.DropRule{{Port: 5001}}},
			{Name: "port 5002", Match: []xdp.DropRule{{Port: 5002}}, Limit: xdp.Limit{Packets: 10}},
		},
	}
	frames := cutoffConns()
	model, err := xdp.NewCutoffModel(cutoff, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kept [][]byte
	keptBefore := make([]int, len(frames)) // frames kept before frame i
	var k flow.Key
	for i, f := range frames {
		keptBefore[i] = len(kept)
		flow.Parse(f, &k)
		if !model.Packet(&k, uint64(len(f)), flow.TCPFlags(f, &k), 0) {
			kept = append(kept, f)
		}
	}
	wantCut := map[flow.Key]cutCount{}
	var cutPackets, cutBytes uint64
	model.Conns(func(c *xdp.Conn) {
		for d := range 2 {
			if c.CutPackets[d] == 0 {
				continue
			}
			dk := c.Key
			if d == 1 {
				dk = dk.Reversed()
			}
			wantCut[dk] = cutCount{packets: c.CutPackets[d], bytes: c.CutBytes[d]}
			cutPackets += c.CutPackets[d]
			cutBytes += c.CutBytes[d]
		}
	})
	t.Logf("%d frames, the reference keeps %d, cuts %d packets (%d bytes) of %d directional flows",
		len(frames), len(kept), cutPackets, cutBytes, len(wantCut))
	if len(wantCut) < 6 || cutPackets < uint64(len(frames))/3 {
		t.Fatalf("the reference cuts little: the test tests little")
	}

	v := newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	cfg := testConfig(root, v.Host)
	cfg.Method = method
	cfg.Cutoff = cutoff
	if mod != nil {
		mod(&cfg)
	}
	c := mustStart(t, cfg, sp)
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
			sp.Close()
		}
	})
	s := testutil.NewSender(t, v)
	for i, f := range frames {
		s.Send(t, f)
		if i%128 == 127 {
			waitPackets(t, c, uint64(max(0, keptBefore[i]-64)), 10*time.Second)
		}
	}
	waitPackets(t, c, uint64(len(kept)), 20*time.Second)
	time.Sleep(100 * time.Millisecond) // anything beyond what is kept would show now
	st := c.Stats()
	packets, _, stored := st.Totals()
	is := st.Interfaces[0]
	if packets != uint64(len(kept)) || stored != packets {
		t.Errorf("captured %d packets, stored %d; the reference keeps %d", packets, stored, len(kept))
	}
	if is.CutPackets != cutPackets || is.CutBytes != cutBytes {
		t.Errorf("interface stats: cut %d packets, %d bytes; want %d, %d", is.CutPackets, is.CutBytes, cutPackets, cutBytes)
	}
	if method == MethodAFPacket && cfg.XDPObserve {
		if p := is.Program; p == nil || p.Packets != uint64(len(frames)) || p.Passed != p.Packets || p.CutPackets != cutPackets {
			t.Errorf("observing program: %+v: want every frame passed, the cut counted by the socket filter", p)
		}
	}
	cs := c.CutoffStats()
	if len(cs) != 1 || cs[0].Name != v.Host || cs[0].Packets != cutPackets || cs[0].Bytes != cutBytes || len(cs[0].Rules) != 3 ||
		cs[0].Rules[0].Packets != 0 || cs[0].Rules[1].Packets == 0 || cs[0].Rules[2].Packets == 0 ||
		cs[0].Rules[1].Packets+cs[0].Rules[2].Packets != cutPackets {
		t.Errorf("cutoff stats %+v: want %d packets %d bytes, none by the never rule", cs, cutPackets, cutBytes)
	}
	m := gatherCounter(t, c, "stenod_capture_cut_packets_total")
	if m != float64(cutPackets) {
		t.Errorf("metric stenod_capture_cut_packets_total %v, want %d", m, cutPackets)
	}
	// The reporter hands cut counts to the spool's index while the
	// capture runs, not only at Close.
	for deadline := time.Now().Add(3 * cutPollInterval); ; time.Sleep(10 * time.Millisecond) {
		n := len(indexCuts(t, sp))
		if n == len(wantCut) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v, cut counts of %d flows handed on, want %d", 3*cutPollInterval, n, len(wantCut))
			break
		}
	}
	// Suspending a connection: counted, not an error.
	n, err := c.SuspendCutoff(func(k *flow.Key) bool { return k.DstPort == 80 || k.SrcPort == 80 })
	if err != nil || n != 1 {
		t.Errorf("suspend port 80: %d, %v; want 1", n, err)
	}

	err = c.Close()
	closed = true
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := c.SuspendCutoff(func(*flow.Key) bool { return true }); err == nil {
		t.Error("suspend after Close: no error")
	}
	// Every cut packet is in the index, on its directional flow, by the
	// time capture has closed, and at a time of the last minute.
	gotCut := indexCuts(t, sp)
	for k, want := range wantCut {
		if got := gotCut[k]; got.packets != want.packets || got.bytes != want.bytes {
			t.Errorf("flow %v: %d packets, %d bytes in the index as cut; want %d, %d", k, got.packets, got.bytes, want.packets, want.bytes)
		}
	}
	for k, got := range gotCut {
		if _, ok := wantCut[k]; !ok {
			t.Errorf("flow %v in the index as cut, the reference did not cut it", k)
		}
		if d := time.Since(time.Unix(0, got.last)); d < 0 || d > time.Minute {
			t.Errorf("flow %v: last seen %v ago", k, d)
		}
	}

	got, want := answer(t, sp, "after 1h ago"), answer(t, importFrames(t, kept), "after 1h ago")
	if !slices.Equal(got, want) {
		t.Errorf("the spool holds %d packets, the reference cut %d", len(got), len(want))
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, dir, root, v.Host)
}

// cutCount is what the index says of a flow's cut packets.
type cutCount struct {
	packets, bytes uint64
	last           int64
}

// indexCuts returns the cut counts the spool's indexes hold, per flow.
func indexCuts(t *testing.T, sp *spool.Spool) map[flow.Key]cutCount {
	t.Helper()
	q, err := query.Parse("after 1h ago", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := engine.Flows(context.Background(), sp, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[flow.Key]cutCount{}
	for _, r := range recs {
		if r.CutPackets > 0 {
			out[r.Key] = cutCount{r.CutPackets, r.CutBytes, r.Last}
		}
	}
	return out
}
