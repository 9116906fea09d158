//go:build linux

package xdp

import (
	"math/rand/v2"
	"testing"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/trafficgen"
)

// TestCutoffHeavyTail is the retention target on the benchmark's
// heavy-tailed mix (internal/trafficgen HeavyTail), through the decision
// the kernel tests hold the programs to: with a 20 KB cutoff (and 10%
// jitter), at least 95% of the connections are stored whole and at least
// ten times fewer bytes are stored. capbench measures the same on a
// sensor (docs/benchmarks.md, "Per-connection cutoff").
func TestCutoffHeavyTail(t *testing.T) {
	for _, jitter := range []uint32{0, 10} {
		rng := rand.New(rand.NewPCG(1, 2))
		m, err := NewCutoffModel(CutoffConfig{Default: Limit{Bytes: 20_000}, JitterPercent: jitter}, rng.Uint32)
		if err != nil {
			t.Fatal(err)
		}
		var total, stored uint64
		var k flow.Key
		trafficgen.HeavyTail(func(frame []byte) {
			flow.Parse(frame, &k)
			total += uint64(len(frame))
			if !m.Packet(&k, uint64(len(frame)), flow.TCPFlags(frame, &k), 0) {
				stored += uint64(len(frame))
			}
		})
		conns, whole := 0, 0
		m.Conns(func(c *Conn) {
			conns++
			if c.CutPackets[0]+c.CutPackets[1] == 0 {
				whole++
			}
		})
		share, ratio := float64(whole)/float64(conns), float64(total)/float64(stored)
		t.Logf("jitter %d%%: %d connections, %.1f%% whole; %d bytes, %d stored: %.1fx less", jitter, conns, 100*share, total, stored, ratio)
		if conns != trafficgen.HeavyTailConns || share < 0.95 || ratio < 10 {
			t.Errorf("jitter %d%%: %d connections, %.3f whole, %.1fx fewer bytes: want %d, >= 0.95, >= 10x",
				jitter, conns, share, ratio, trafficgen.HeavyTailConns)
		}
	}
}
