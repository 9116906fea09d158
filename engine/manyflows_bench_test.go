package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// manyFlowsSpool holds n UDP flows of one 64-byte packet each, a
// millisecond apart: the web page's worst case, a spool of as many flows
// as packets.
func manyFlowsSpool(b *testing.B, n int) *spool.Spool {
	b.Helper()
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{b.TempDir()}
	cfg.MinFreePercent = 0
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		b.Fatal(err)
	}
	frame := make([]byte, 64)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range n {
		k := flow.Key{Flags: flow.FlagIPv4 | flow.FlagPorts, Proto: flow.ProtoUDP, EtherType: flow.EtherTypeIPv4,
			SrcPort: uint16(i), DstPort: 53}
		binary.BigEndian.PutUint32(k.Src[:4], 0x0a000000|uint32(i>>16))
		copy(k.Dst[:4], []byte{10, 9, 9, 9})
		if err := w.Append(t0+int64(i)*int64(time.Millisecond), len(frame), frame, &k); err != nil {
			b.Fatal(err)
		}
	}
	if err := errors.Join(w.Close(), sp.Close()); err != nil {
		b.Fatal(err)
	}
	cfg.ReadOnly = true
	if sp, err = spool.Open(cfg, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	return sp
}

// BenchmarkPageOfMillionFlows: one page of the web page's flow table and
// its histogram over a spool of a million flows, warm.
func BenchmarkPageOfMillionFlows(b *testing.B) {
	sp := manyFlowsSpool(b, 1_000_000)
	q, err := query.Parse("udp", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("flows page", func(b *testing.B) {
		for b.Loop() {
			res, err := FlowPage(ctx, sp, q, FlowPageOptions{Desc: true, Limit: 100})
			if err != nil || res.Total != 1_000_000 {
				b.Fatalf("%d flows, %v", res.Total, err)
			}
		}
	})
	b.Run("histogram", func(b *testing.B) {
		for b.Loop() {
			if _, err := Histogram(ctx, sp, q, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
}
