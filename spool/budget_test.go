package spool_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// fsSize is the small file system the budget tests fill, and volume how
// much traffic they write through it: many times its size.
const (
	fsSize = "8m"
	volume = 80 << 20
)

// recordBytes is what packets take in pcap files, file headers aside.
func recordBytes(ps []pkt) int64 {
	var n int64
	for _, p := range ps {
		n += pcapio.RecordHeaderSize + int64(p.capLen)
	}
	return n
}

func rfc3339(ts int64) string { return time.Unix(0, ts).UTC().Format(time.RFC3339Nano) }

// checkBudget fails if dir is over cfg's budget right now.
func checkBudget(t *testing.T, dir string, cfg spool.Config, when string) {
	t.Helper()
	if cfg.MinFreePercent > 0 {
		total, avail := statfs(t, dir)
		if floor := int64(math.Ceil(float64(total) * cfg.MinFreePercent / 100)); avail < floor {
			t.Fatalf("%s: %d bytes available, below the floor of %d", when, avail, floor)
		}
	}
	bytes, files := dirBytes(t, dir)
	if cfg.MaxBytes > 0 && bytes > cfg.MaxBytes {
		t.Fatalf("%s: spool holds %d bytes, budget %d", when, bytes, cfg.MaxBytes)
	}
	if cfg.MaxFiles > 0 && files > cfg.MaxFiles {
		t.Fatalf("%s: spool holds %d files, budget %d", when, files, cfg.MaxFiles)
	}
}

// TestUsageCountsEveryByte: the budget's count of a directory's bytes is
// what its files hold, the active file's sums journal, header included,
// among them.
func TestUsageCountsEveryByte(t *testing.T) {
	dir := t.TempDir()
	sp := open(t, testConfig(dir))
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(3)
	for range 3 {
		g.must(t, w, 100)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		on, _ := dirBytes(t, dir)
		if u := sp.Usage()[0]; u.FileBytes != on {
			t.Fatalf("usage counts %d bytes, the directory holds %d", u.FileBytes, on)
		}
	}
	closeAll(t, w, sp)
}

// TestBudgetOnSmallFilesystem writes ten times a small file system's size
// through a writer under each kind of budget. The budget holds at every
// flush, the writer never fails, the newest packets are all kept, and the
// counters account for every byte and packet deleted.
func TestBudgetOnSmallFilesystem(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*spool.Config)
	}{
		{"free-floor", func(c *spool.Config) { c.MinFreePercent = 25 }},
		{"max-bytes", func(c *spool.Config) { c.MaxBytes = 3 << 20 }},
		{"max-files", func(c *spool.Config) { c.MaxFiles = 6 }},
		{"all", func(c *spool.Config) { c.MinFreePercent = 40; c.MaxBytes = 4 << 20; c.MaxFiles = 12 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mountTmpfs(t, fsSize)
			cfg := testConfig(dir)
			tc.set(&cfg)
			sp := open(t, cfg)
			w, err := sp.NewWriter("eth0-q0", "eth0")
			if err != nil {
				t.Fatal(err)
			}
			g := newGen(7)
			for n := 0; recordBytes(g.sent) < volume; n++ {
				// About a flush interval's worth of packets at a modest rate.
				g.must(t, w, 150)
				if err := w.Flush(); err != nil {
					t.Fatalf("flush %d: %v", n, err)
				}
				checkBudget(t, dir, cfg, "after flush")
			}
			closeAll(t, w, sp)
			checkBudget(t, dir, cfg, "after close")

			c := sp.Counters()
			if c.FilesDeleted == 0 || c.WriteErrors != 0 || c.PacketsLostToWriteErrors != 0 || c.ENOSPCEvents != 0 || c.BudgetShortfalls != 0 {
				t.Fatalf("counters %+v", c)
			}
			// Oldest first: what is left is exactly the newest packets.
			sent := g.sent
			kept := sent[c.PacketsDeleted:]
			sameAnswer(t, "spool after deletions", answer(t, sp, everything), kept)
			last := sent[len(sent)-2000:]
			sameAnswer(t, "the newest packets", answer(t, sp, "after "+rfc3339(last[0].ts)), last)

			// Bytes: what was deleted and what is left is what was written.
			left := pcaps(t, dir)
			var pcapLeft, idxLeft int64
			for name, size := range spoolFiles(t, dir) {
				switch {
				case strings.HasSuffix(name, ".pcap"):
					pcapLeft += size
				case strings.HasSuffix(name, ".idx"):
					idxLeft += size
				default:
					t.Fatalf("unexpected file %s left", name)
				}
			}
			pcapWritten := int64(pcapio.PcapHeaderSize)*int64(int(c.FilesDeleted)+len(left)) + recordBytes(sent)
			pcapDeleted := int64(pcapio.PcapHeaderSize)*int64(c.FilesDeleted) + recordBytes(sent[:c.PacketsDeleted])
			if pcapLeft+pcapDeleted != pcapWritten {
				t.Fatalf("pcap bytes: %d left + %d deleted != %d written", pcapLeft, pcapDeleted, pcapWritten)
			}
			// The rest of BytesDeleted is the deleted indexes: a few percent
			// of their pcap bytes in such small files.
			idxDeleted := int64(c.BytesDeleted) - pcapDeleted
			if idxDeleted <= 0 || idxDeleted > pcapDeleted/10 || idxLeft <= 0 {
				t.Fatalf("%d bytes deleted, of which %d pcap: %d index bytes (%d left)", c.BytesDeleted, pcapDeleted, idxDeleted, idxLeft)
			}
			u := sp.Usage()[0]
			if u.FileBytes != pcapLeft+idxLeft || u.Files != len(left) || u.Packets != uint64(len(kept)) ||
				u.Oldest != kept[0].ts || u.Newest != kept[len(kept)-1].ts {
				t.Fatalf("usage %+v; on disk %d bytes in %d files, %d packets", u, pcapLeft+idxLeft, len(left), len(kept))
			}
			if u.BudgetBytes <= 0 || u.TotalBytes != 8<<20 || u.Retention() <= time.Duration(u.Newest-u.Oldest)/2 {
				t.Fatalf("usage %+v: retention %v", u, u.Retention())
			}
		})
	}
}

// TestBudgetAtOpen: a budget smaller than what the directory holds takes
// effect at Open, before anything is written.
func TestBudgetAtOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(3)
	for len(pcaps(t, dir)) < 10 {
		g.must(t, w, 1000)
	}
	closeAll(t, w, sp)
	had := len(pcaps(t, dir))
	cfg.MaxFiles = 4
	sp = open(t, cfg)
	if n := len(pcaps(t, dir)); n != 4 {
		t.Fatalf("%d files after Open with a budget of 4", n)
	}
	c := sp.Counters()
	if c.FilesDeleted != uint64(had-4) {
		t.Fatalf("counters %+v", c)
	}
	sameAnswer(t, "after Open", answer(t, sp, everything), g.sent[c.PacketsDeleted:])
}

// TestDiskFull fills a small file system without a budget, so that writes
// fail with ENOSPC for real. The writer deletes the oldest files and goes
// on; every packet is stored, deleted or counted as lost; the files left
// are whole.
func TestDiskFull(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rotateSize int64
		// wantLoss: with files larger than the disk, the active file alone
		// fills it, and nothing can be deleted to save that write.
		wantLoss bool
	}{
		{"small-files", 256 << 10, false},
		{"file-larger-than-disk", 16 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mountTmpfs(t, fsSize)
			cfg := testConfig(dir)
			cfg.RotateSize = tc.rotateSize
			sp := open(t, cfg)
			w, err := sp.NewWriter("eth0-q0", "eth0")
			if err != nil {
				t.Fatal(err)
			}
			g := newGen(11)
			var lost uint64
			count := func(err error) {
				var we *spool.WriteError
				if !errors.As(err, &we) {
					t.Fatalf("not a write error: %v", err)
				}
				lost += uint64(we.Lost)
			}
			for recordBytes(g.sent) < volume {
				for range 150 {
					if _, err := g.next(w); err != nil {
						count(err)
					}
				}
				if err := w.Flush(); err != nil {
					count(err)
				}
			}
			if err := w.Close(); err != nil {
				count(err)
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			c := sp.Counters()
			t.Logf("%+v", c)
			if c.ENOSPCEvents == 0 || c.FilesDeleted == 0 || c.PacketsLostToWriteErrors != lost ||
				tc.wantLoss != (lost > 0) || tc.wantLoss != (c.WriteErrors > 0) {
				t.Fatalf("counters %+v; writer reported %d lost", c, lost)
			}
			got := answer(t, sp, everything)
			sent := g.sent
			if uint64(len(got))+c.PacketsDeleted+c.PacketsLostToWriteErrors != uint64(len(sent)) {
				t.Fatalf("%d packets stored + %d deleted + %d lost != %d sent", len(got), c.PacketsDeleted, c.PacketsLostToWriteErrors, len(sent))
			}
			if !isSubsequence(got, sent) {
				t.Fatal("the spool holds packets out of order, twice, or never sent")
			}
			if !tc.wantLoss {
				sameAnswer(t, "newest packets", got, sent[c.PacketsDeleted:])
			} else if len(got) == 0 || got[len(got)-1].ts < sent[len(sent)*9/10].ts {
				t.Fatal("the newest packets are not in the spool")
			}

			// The files left are whole: they open again as they are, and
			// also when every index has to be rebuilt from the pcaps.
			sizes := spoolFiles(t, dir)
			for name := range sizes {
				if strings.HasPrefix(name, ".") {
					t.Fatalf("temporary file %s left behind", name)
				}
			}
			sp = open(t, cfg)
			sameAnswer(t, "reopened", answer(t, sp, everything), got)
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			for _, idx := range glob(t, dir, "*.idx") {
				if err := os.Remove(idx); err != nil {
					t.Fatal(err)
				}
			}
			sp = open(t, cfg)
			defer sp.Close()
			sameAnswer(t, "reindexed", answer(t, sp, everything), got)
			for _, p := range pcaps(t, dir) {
				if st, _ := os.Stat(p); st.Size() != sizes[filepath.Base(p)] {
					t.Fatalf("%s: repair cut %d bytes", p, sizes[filepath.Base(p)]-st.Size())
				}
			}
		})
	}
}

// TestQueryDuringDeletion: files deleted by the budget while a query reads
// them still give the query its whole answer.
func TestQueryDuringDeletion(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFiles = 4
	cfg.MaxCachedIndexes = 1 // indexes are loaded from disk by the query
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(5)
	for len(pcaps(t, dir)) < 4 {
		g.must(t, w, 500)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	before := slices0(g.sent)
	oldest := pcaps(t, dir)[:2]

	// The answer's writer: at its first packet, the writer rotates twice,
	// and the budget deletes the two oldest files the query is reading.
	var deleted bool
	hook := func() {
		if deleted {
			return
		}
		deleted = true
		for n := len(pcaps(t, dir)); exists(oldest[1]); {
			g.must(t, w, 500)
			if len(pcaps(t, dir)) > n+4 {
				t.Fatal("the budget deletes nothing")
			}
		}
		if exists(oldest[0]) || exists(strings.TrimSuffix(oldest[0], ".pcap")+".idx") {
			t.Fatal("the oldest file was not deleted")
		}
	}
	got, err := answerHook(sp, everything, hook)
	if err != nil {
		t.Fatal(err)
	}
	if !deleted {
		t.Fatal("the hook did not run")
	}
	sameAnswer(t, "query across a deletion", got, before)
	closeAll(t, w, sp)
	if c := sp.Counters(); c.FilesDeleted < 2 {
		t.Fatalf("counters %+v", c)
	}
}

func slices0(ps []pkt) []pkt { return append([]pkt(nil), ps...) }

// TestQueriesWhileDeleting runs queries without pause while a writer fills
// a tight budget: every query succeeds, and its answer is in order, each
// packet once. Run with -race.
func TestQueriesWhileDeleting(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateSize = 64 << 10
	cfg.WriteBuffer = 16 << 10
	cfg.MaxBytes = 256 << 10
	cfg.MaxCachedIndexes = 2
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(9)
	const rounds, batch = 300, 100
	all := generated(9, rounds*batch)
	done := make(chan struct{})
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := answerErr(sp, everything)
			if err == nil && !isSubsequence(got, all) {
				err = errors.New("answer out of order, with a packet twice, or one never sent")
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	for range rounds {
		g.must(t, w, batch)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	closeAll(t, w, sp)
	if c := sp.Counters(); c.FilesDeleted < 10 {
		t.Fatalf("counters %+v", c)
	}
}
