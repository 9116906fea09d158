package spool_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/spool"
)

// fakeFS is a file system of size bytes holding dir, for the budget to see
// through spool.FakeStatfs without root to mount one. What it counts as
// used is what a real one would: the files in dir, in 4 KiB blocks, and
// the deleted files of dir this process still has open, found in
// /proc/self/fd; it does not ask the spool.
type fakeFS struct {
	dir  string
	size int64
}

const fakeBlock = 4096

func (fs fakeFS) used(t testing.TB) int64 {
	var n int64
	ents, err := os.ReadDir(fs.dir)
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += (fi.Size() + fakeBlock - 1) / fakeBlock * fakeBlock
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Error(err)
		return 0
	}
	seen := map[string]bool{}
	for _, e := range fds {
		p := filepath.Join("/proc/self/fd", e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, fs.dir+"/") || !strings.HasSuffix(target, " (deleted)") || seen[target] {
			continue
		}
		seen[target] = true
		if fi, err := os.Stat(p); err == nil {
			n += (fi.Size() + fakeBlock - 1) / fakeBlock * fakeBlock
		}
	}
	return n
}

func (fs fakeFS) avail(t testing.TB) int64 { return max(fs.size-fs.used(t), 0) }

func (fs fakeFS) statfs(t testing.TB) func(string, *unix.Statfs_t) error {
	return func(_ string, st *unix.Statfs_t) error {
		st.Bsize, st.Frsize = fakeBlock, fakeBlock
		st.Blocks = uint64(fs.size / fakeBlock)
		st.Bavail = uint64(fs.avail(t) / fakeBlock)
		return nil
	}
}

// revokedReader is a Snapshot whose reader closes its handles as soon as
// it is told it is cut off, as the engine does.
type revokedReader struct {
	mu  sync.Mutex
	hs  []*spool.Handle
	err error
	n   atomic.Int32
}

func (r *revokedReader) snapshot(t testing.TB, sp *spool.Spool, lo, hi int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	hs, err := sp.SnapshotFor(lo, hi, r.revoke)
	if err != nil {
		t.Fatal(err)
	}
	r.hs = hs
}

func (r *revokedReader) revoke(err error) {
	r.n.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	if cerr := spool.CloseAll(r.hs); cerr != nil {
		r.err = errors.Join(err, cerr)
	}
	r.hs = nil
}

func (r *revokedReader) revoked() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *revokedReader) close(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := spool.CloseAll(r.hs); err != nil {
		t.Error(err)
	}
	r.hs = nil
}

// waitHeld waits until the spool holds want bytes for readers.
func waitHeld(t testing.TB, sp *spool.Spool, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sp.Counters().HeldBytes != want {
		if time.Now().After(deadline) {
			t.Fatalf("held bytes %d, want %d", sp.Counters().HeldBytes, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// heldConfig is a spool of small files on fs, with the floor and without
// the per-query share unless the test sets it.
func heldConfig(dir string) spool.Config {
	cfg := testConfig(dir)
	cfg.RotateSize = 256 << 10
	cfg.WriteBuffer = 16 << 10
	cfg.MinFreePercent = 25
	cfg.MaxHeldPercent = 0
	return cfg
}

// TestSlowReaderKeepsHistory: a query holds a snapshot of every file and
// reads nothing while capture writes on past the disk's size. While its
// held files fit under the floor, the budget deletes no more than the
// writes need (history is kept; the old code, seeing no space come back,
// deleted on); when the disk itself would overflow, the reader is cut off
// (ErrRevoked) instead, its files' space comes back, and no write fails.
// The fake file system never overflows at any flush.
func TestSlowReaderKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	fs := fakeFS{dir: dir, size: 8 << 20}
	cfg := heldConfig(dir)
	sp := open(t, cfg)
	spool.FakeStatfs(sp, fs.statfs(t))
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(21)
	floor := fs.size * 25 / 100
	budget := fs.size - floor
	write := func(bytes int64) {
		t.Helper()
		for start := recordBytes(g.sent); recordBytes(g.sent)-start < bytes; {
			g.must(t, w, 100)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if u := fs.used(t); u > fs.size {
				t.Fatalf("the disk overflowed: %d bytes used of %d", u, fs.size)
			}
		}
	}
	// Fill the budget and turn it over once.
	write(fs.size)
	if c := sp.Counters(); c.FilesDeleted == 0 {
		t.Fatalf("nothing deleted: %+v", c)
	}

	var r revokedReader
	r.snapshot(t, sp, math.MinInt64, math.MaxInt64)
	before := sp.Counters()

	// Half the floor's worth: the reader's files take that much of it.
	written := floor / 2
	write(written)
	c := sp.Counters()
	if r.revoked() != nil || c.ReadersRevoked != 0 {
		t.Fatalf("reader cut off early: %v; %+v", r.revoked(), c)
	}
	if c.HeldBytes <= 0 {
		t.Fatalf("nothing held: %+v", c)
	}
	// No more deleted than written, give or take a file and its index.
	slack := cfg.RotateSize + cfg.RotateSize/10
	if deleted := int64(c.BytesDeleted - before.BytesDeleted); deleted > written+slack {
		t.Fatalf("deleted %d bytes for %d written: the slow reader made the budget delete history", deleted, written)
	}
	u := sp.Usage()[0]
	if u.HeldBytes != c.HeldBytes || u.FileBytes+u.HeldBytes < budget-2*slack {
		t.Fatalf("usage %+v: %d + %d held bytes, budget %d", u, u.FileBytes, u.HeldBytes, budget)
	}

	// On until the disk itself is short: the reader goes, not history.
	for i := 0; r.revoked() == nil; i++ {
		if i == 40 {
			t.Fatalf("the reader was never cut off: %+v", sp.Counters())
		}
		write(floor / 8)
	}
	err = r.revoked()
	var re *spool.RevokedError
	if !errors.Is(err, spool.ErrRevoked) || !errors.As(err, &re) || re.OverShare || re.Held <= 0 ||
		!strings.Contains(err.Error(), "query cut off") || !strings.Contains(err.Error(), "capture needed") {
		t.Fatalf("revoked with %v", err)
	}
	waitHeld(t, sp, 0)
	write(fs.size)
	closeAll(t, w, sp)
	c = sp.Counters()
	t.Logf("%+v", c)
	if c.ReadersRevoked != 1 || r.n.Load() != 1 || c.WriteErrors != 0 || c.PacketsLostToWriteErrors != 0 || c.ENOSPCEvents != 0 {
		t.Fatalf("counters %+v", c)
	}
	sameAnswer(t, "spool after the reader was cut off", answer(t, sp, everything), g.sent[c.PacketsDeleted:])
}

// TestMaxHeldPercent: a reader that holds more than Config.MaxHeldPercent
// of the file system in deleted files is cut off, with a reason that says
// so, before the disk is short.
func TestMaxHeldPercent(t *testing.T) {
	t.Run("floor", func(t *testing.T) { maxHeldPercent(t, func(*spool.Config) {}) })
	// The file system's size is not otherwise needed; it is looked up.
	t.Run("max-files", func(t *testing.T) {
		maxHeldPercent(t, func(c *spool.Config) { c.MinFreePercent, c.MaxFiles = 0, 12 })
	})
}

func maxHeldPercent(t *testing.T, set func(*spool.Config)) {
	dir := t.TempDir()
	fs := fakeFS{dir: dir, size: 8 << 20}
	cfg := heldConfig(dir)
	cfg.MaxHeldPercent = 5 // 410 KiB: two files
	set(&cfg)
	sp := open(t, cfg)
	spool.FakeStatfs(sp, fs.statfs(t))
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(t, w, sp)
	g := newGen(22)
	for recordBytes(g.sent) < fs.size {
		g.must(t, w, 100)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var r revokedReader
	r.snapshot(t, sp, math.MinInt64, math.MaxInt64)
	for start := recordBytes(g.sent); r.revoked() == nil; {
		if recordBytes(g.sent)-start > 4*cfg.RotateSize {
			t.Fatalf("not cut off: %+v", sp.Counters())
		}
		g.must(t, w, 100)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var re *spool.RevokedError
	if err := r.revoked(); !errors.As(err, &re) || !re.OverShare || re.Held <= int64(float64(fs.size)*0.05) ||
		!strings.Contains(err.Error(), "max_held_percent") {
		t.Fatalf("revoked with %v", err)
	}
	waitHeld(t, sp, 0)
	if c := sp.Counters(); c.ReadersRevoked != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// TestHeldAccountingAndRevocationOrder: deleted files that snapshots hold
// are counted as held until the last of their handles closes. A write
// short of space revokes the reader holding the most first, and only as
// many readers as the space needs; a revoked handle's ReadAt fails at
// once.
func TestHeldAccountingAndRevocationOrder(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateSize = 128 << 10
	cfg.WriteBuffer = 16 << 10
	cfg.MinFreePercent = 0
	cfg.MaxHeldPercent = 0
	cfg.MaxFiles = 8
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(t, w, sp)
	g := newGen(23)
	for len(pcaps(t, dir)) < 8 {
		g.must(t, w, 200)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	files := sp.Files()
	oldest := files[0].Summary()
	sizes := map[string]int64{}
	for _, f := range files {
		st, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		sizes[f.Path] = st.Size()
	}
	// big holds every file, small the oldest one only.
	var big, small revokedReader
	big.snapshot(t, sp, math.MinInt64, math.MaxInt64)
	small.snapshot(t, sp, oldest.First, oldest.First+1)
	if n := len(small.hs); n != 1 {
		t.Fatalf("small snapshot has %d files", n)
	}
	// Rotate until the four oldest files are deleted.
	for exists(files[3].Path) {
		g.must(t, w, 200)
	}
	if exists(files[0].Path) || !exists(files[4].Path) {
		t.Fatal("the budget deleted other files than the four oldest")
	}
	var held int64
	for _, f := range files[:4] {
		held += sizes[f.Path]
	}
	waitHeld(t, sp, held)
	if u := sp.Usage()[0]; u.HeldBytes != held {
		t.Fatalf("usage holds %d, want %d", u.HeldBytes, held)
	}

	// One file's worth: big goes; files[1:4] come back, files[0] stays
	// with small.
	got := spool.Reclaim(sp, sizes[files[1].Path])
	if big.revoked() == nil || small.revoked() != nil {
		t.Fatalf("big revoked: %v, small revoked: %v", big.revoked(), small.revoked())
	}
	if got < sizes[files[1].Path] {
		t.Fatalf("reclaimed %d bytes, want at least %d", got, sizes[files[1].Path])
	}
	waitHeld(t, sp, sizes[files[0].Path])

	// More than is held: small goes too.
	if got := spool.Reclaim(sp, 1<<40); got != sizes[files[0].Path] || small.revoked() == nil {
		// All it held came back, after the whole wait: less than need.
		t.Fatalf("reclaimed %d; small revoked: %v", got, small.revoked())
	}
	waitHeld(t, sp, 0)
	if c := sp.Counters(); c.ReadersRevoked != 2 {
		t.Fatalf("counters %+v", c)
	}

	// A handle of a revoked snapshot that its reader has not closed yet
	// reads nothing more.
	h, err := sp.SnapshotFor(math.MinInt64, math.MaxInt64, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	for exists(files[4].Path) {
		g.must(t, w, 200)
	}
	spool.Reclaim(sp, 1)
	buf := make([]byte, 16)
	if _, err := h[0].ReadAt(buf, 0); !errors.Is(err, spool.ErrRevoked) {
		t.Fatalf("ReadAt after revocation: %v", err)
	}
	if err := spool.CloseAll(h); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, sp, 0)
	big.close(t)
	small.close(t)
}
