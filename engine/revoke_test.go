package engine

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// revoking makes the spool cut the query off at the first packet of the
// answer: it writes until the budget deletes the oldest file, which the
// query holds, past a per-query share of almost nothing.
type revoking struct {
	pcapio.PacketWriter
	t       *testing.T
	w       *spool.Writer
	gen     *trafficgen.Generator
	oldest  string
	revoked chan error
	done    bool
}

func (r *revoking) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	if !r.done {
		r.done = true
		var key flow.Key
		for exists(r.oldest) {
			frame, ts := r.gen.Next()
			flow.Parse(frame, &key)
			if err := r.w.Append(ts, len(frame), frame, &key); err != nil {
				r.t.Error(err)
				break
			}
		}
		select {
		case err := <-r.revoked:
			r.revoked <- err
		case <-time.After(5 * time.Second):
			r.t.Error("OnRevoke was not called")
		}
	}
	return r.PacketWriter.WritePacket(ts, origLen, data, iface)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestRevokedQueryStops: a query the spool cuts off stops with an error
// that matches spool.ErrRevoked, and Options.OnRevoke hears of it.
func TestRevokedQueryStops(t *testing.T) {
	sp, w, gen := testutil.HeldSpool(t, 6, 41)
	q, _ := query.Parse("after 1970-01-01T00:00:00Z", time.Now())
	pw, _ := pcapio.NewPcapWriter(io.Discard, 65535)
	r := &revoking{PacketWriter: pw, t: t, w: w, gen: gen, oldest: sp.Files()[0].Path, revoked: make(chan error, 1)}
	res, err := Run(context.Background(), sp, q, r, Options{OnRevoke: func(err error) { r.revoked <- err }})
	if !errors.Is(err, spool.ErrRevoked) {
		t.Fatalf("query after %d packets: %v", res.Packets, err)
	}
	if err := <-r.revoked; !errors.Is(err, spool.ErrRevoked) {
		t.Fatalf("OnRevoke got %v", err)
	}
	if c := sp.Counters(); c.ReadersRevoked != 1 || c.HeldBytes != 0 {
		t.Fatalf("counters %+v", c)
	}
	t.Logf("stopped after %d packets: %v", res.Packets, err)
}
