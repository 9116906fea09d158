package spool_test

import (
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// TestRotateBackInTime: a packet stamped RotateAge before the file's first
// starts a new file, as one stamped RotateAge after it does, so that every
// file spans at most RotateAge either way (repair relies on it); and many
// files whose first packets share a timestamp (an import of captures that
// all start at 0) each get a name, none is lost; and each file's index is
// sealed and counted.
func TestRotateBackInTime(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sp := open(t, cfg)
	w, err := sp.NewWriter("import", "import")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 60)
	data[12], data[13] = 0x08, 0x06 // ARP
	var k flow.Key
	flow.Parse(data, &k)
	const rounds = 40
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range rounds {
		for _, ts := range []int64{t0, t0 + int64(cfg.RotateAge)} {
			if err := w.Append(ts, len(data), data, &k); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
	closeAll(t, w, sp)
	// Every file's live index was sealed, each seal timed.
	if c := sp.Counters(); c.IndexesSealed != 2*rounds || c.SealCPUSeconds <= 0 || c.IndexCPUSeconds <= 0 {
		t.Fatalf("%d indexes sealed in %v s of CPU (live indexes %v s), want %d in some", c.IndexesSealed, c.SealCPUSeconds, c.IndexCPUSeconds, 2*rounds)
	}
	sp = open(t, cfg)
	defer sp.Close()
	if got := len(answer(t, sp, "after 2019-12-31T00:00:00Z")); got != 2*rounds {
		t.Fatalf("%d packets stored, want %d", got, 2*rounds)
	}
	if n := len(sp.Files()); n != 2*rounds {
		t.Fatalf("%d files, want one per packet (%d): each jump of RotateAge either way starts one", n, 2*rounds)
	}
	if c := sp.Counters(); c.WriteErrors != 0 || c.FilesQuarantined != 0 {
		t.Fatalf("counters %+v", c)
	}
}
