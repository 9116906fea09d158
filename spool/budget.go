package spool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/index"
)

// The disk budget of a spool directory (Config.MaxBytes, MinFreePercent,
// MaxFiles) is enforced where the spool grows: before a writer creates a
// file, before every write of its buffer (Flush) and before an index is
// written. When the growth would cross the budget, the oldest files of that
// directory are deleted first, synchronously, just enough whole files for it
// to hold again. Nothing runs on a timer, so the budget is never crossed in
// between and never more is deleted than needed.
//
// Bytes and files are counted exactly. Free space comes from statfs, which
// is not called per write: between two calls the budget subtracts what the
// spool itself wrote (one extra block per write for rounding, an upper
// bound), so only other programs' writes go unseen, for at most
// statfsInterval or statfsBytes. A statfs is also made before anything is
// deleted for the floor, after a rotation and after a full disk.
const (
	statfsInterval = 100 * time.Millisecond
	statfsBytes    = 4 << 20
)

// dirState is one spool directory's budget accounting.
type dirState struct {
	path string

	mu sync.Mutex
	// dir is kept open so that statfs needs no path, which would be
	// allocated per call; nil for a read-only spool and after Close.
	dir   *os.File
	files int   // pcap files, active ones included
	bytes int64 // their pcap and index bytes

	st     unix.Statfs_t // reused: it is large and passed by pointer
	statOK bool          // total and avail hold a statfs result
	statAt time.Time
	total  int64 // file system size
	block  int64 // its block size
	// avail is the space available at statAt, minus what the spool has
	// allocated since and plus what it has deleted since.
	avail    int64
	inflight int64 // reserved for writes not done yet
	since    int64 // bytes written since statAt
	short    bool  // the budget could not be met; logged once until it holds again

	// held is the pcap bytes of deleted files that readers still hold
	// open (heldFiles): allocated, not in avail, and coming back when
	// they close (revoke.go).
	held      int64
	heldFiles []*File
	// released is signalled when held space comes back, for a write
	// waiting in reclaim until reclaimUntil.
	released     chan struct{}
	reclaimUntil time.Time

	// fakeStatfs, set by tests only, stands for statfs: a file system
	// of a size the test chooses, without root to mount one.
	fakeStatfs func(path string, st *unix.Statfs_t) error
}

// refresh reads the file system's size and available space.
func (d *dirState) refresh(now time.Time) error {
	var err error
	if d.fakeStatfs != nil {
		err = d.fakeStatfs(d.path, &d.st)
	} else if d.dir != nil {
		err = unix.Fstatfs(int(d.dir.Fd()), &d.st)
	} else {
		err = unix.Statfs(d.path, &d.st)
	}
	if err != nil {
		return fmt.Errorf("statfs %s: %w", d.path, err)
	}
	// f_blocks and f_bavail count fragments of f_frsize bytes.
	bs := int64(d.st.Frsize)
	if bs <= 0 {
		bs = int64(d.st.Bsize)
	}
	// Writes under way may or may not be in f_bavail yet: count them as
	// not, or the figure would forget them.
	d.total, d.avail, d.block = int64(d.st.Blocks)*bs, int64(d.st.Bavail)*bs-d.inflight, bs
	d.statOK, d.statAt, d.since = true, now, 0
	return nil
}

// floor is how many bytes must stay available on d's file system.
func (s *Spool) floor(d *dirState) int64 {
	if s.cfg.MinFreePercent <= 0 || !d.statOK {
		return math.MinInt64 / 2
	}
	return int64(math.Ceil(float64(d.total) * s.cfg.MinFreePercent / 100))
}

// counters are the Spool's event counts (see Counters).
type counters struct {
	readersRevoked                             atomic.Uint64
	filesDeleted, bytesDeleted, packetsDeleted atomic.Uint64
	writeErrors, packetsLost, enospc           atomic.Uint64
	shortfalls                                 atomic.Uint64
	damagedSkipped, recordsMissing             atomic.Uint64
	damagedRegions, damagedBytes               atomic.Uint64
	filesQuarantined, filesRepaired            atomic.Uint64
	indexesSealed, sealNanos                   atomic.Uint64
	indexNanos                                 atomic.Uint64
	indexFullRotations                         atomic.Uint64
}

// Counters are what the spool has deleted and lost since Open, for export
// as metrics. Once its writer has flushed, every packet given to Append
// that did not return ErrTimestamp is in a spool file, or counted in
// PacketsDeleted, or in PacketsLostToWriteErrors.
type Counters struct {
	// FilesDeleted, BytesDeleted and PacketsDeleted count the files (a
	// pcap with its index) the disk budget deleted, their bytes on disk
	// and the packets they held.
	FilesDeleted   uint64 `json:"files_deleted"`
	BytesDeleted   uint64 `json:"bytes_deleted"`
	PacketsDeleted uint64 `json:"packets_deleted"`
	// WriteErrors counts failed writes of packets: a Flush, or the creation
	// of a file, that failed even after a full disk was given room.
	WriteErrors uint64 `json:"write_errors"`
	// PacketsLostToWriteErrors counts the packets those failures lost.
	PacketsLostToWriteErrors uint64 `json:"packets_lost_to_write_errors"`
	// ENOSPCEvents counts writes (packets or indexes) that found the file
	// system full; each made room and was tried once more.
	ENOSPCEvents uint64 `json:"enospc_events"`
	// ReadersRevoked counts the queries cut off because capture needed
	// the space of deleted files they held open, or because they held
	// more than Config.MaxHeldPercent of a file system.
	ReadersRevoked uint64 `json:"readers_revoked"`
	// HeldBytes is not a count but a gauge: the bytes of deleted spool
	// files that queries hold open right now, over all directories. The
	// budget counts them as space that will come back.
	HeldBytes int64 `json:"held_bytes"`
	// BudgetShortfalls counts the times the budget could not be met
	// because only active files were left to delete: the budget is too
	// small for the number of writers and the rotate size.
	BudgetShortfalls uint64 `json:"budget_shortfalls"`
	// DamagedRecordsSkipped counts the records queries left out of their
	// answers because they are not what their index says (Damaged).
	DamagedRecordsSkipped uint64 `json:"damaged_records_skipped"`
	// RecordsMissing counts the records a file's sums journal lists that
	// repair did not find intact (damaged, or cut off with the file's
	// end): packets known to be lost.
	RecordsMissing uint64 `json:"records_missing"`
	// DamagedRegions and DamagedBytes count the damaged byte ranges that
	// repair stepped over while indexing a pcap file (at Open, or when an
	// index is rebuilt), and their bytes: no plausible record starts in
	// them, so whatever packets they held are not indexed. The bytes stay
	// in the file. A file re-indexed twice in one run counts twice.
	DamagedRegions uint64 `json:"damaged_regions"`
	DamagedBytes   uint64 `json:"damaged_bytes"`
	// FilesQuarantined counts spool files (or what stood in their place: a
	// directory, a symbolic link, ...) moved into a directory's quarantine
	// folder because no packet could be read from them.
	FilesQuarantined uint64 `json:"files_quarantined"`
	// FilesRepaired counts pcap files repaired beyond what a crash leaves
	// (a torn last record, zeros at the end, a missing index): a damaged
	// file header rewritten, damaged regions stepped over, or a file
	// shorter than its index re-indexed.
	FilesRepaired uint64 `json:"files_repaired"`
	// IndexesSealed counts the live indexes sealed into index files (one
	// per spool file, at rotation and at close), and SealCPUSeconds the
	// CPU time that took: encoding the index and reading it back, not the
	// writes and fsyncs. It is part of capture's cost per packet that
	// comes due only at rotation (docs/benchmarks.md, "Capture").
	IndexesSealed  uint64  `json:"indexes_sealed"`
	SealCPUSeconds float64 `json:"seal_cpu_seconds"`
	// IndexCPUSeconds is the CPU time the writers spent adding packets
	// to their live indexes (index.Builder.AddBatch), measured on their
	// threads: the live index's share of capture's cost, which the
	// capture's total CPU time, several times larger and noisier, cannot
	// resolve (docs/benchmarks.md, "Capture").
	IndexCPUSeconds float64 `json:"index_cpu_seconds"`
	// IndexFullRotations counts files ended early because their live
	// index had reached Config.MaxLiveIndex: a flood of new flows, or a
	// bound too low for the traffic.
	IndexFullRotations uint64 `json:"index_full_rotations"`
}

// Counters returns the spool's counts so far.
func (s *Spool) Counters() Counters {
	c := &s.ctr
	return Counters{
		FilesDeleted:             c.filesDeleted.Load(),
		BytesDeleted:             c.bytesDeleted.Load(),
		PacketsDeleted:           c.packetsDeleted.Load(),
		WriteErrors:              c.writeErrors.Load(),
		PacketsLostToWriteErrors: c.packetsLost.Load(),
		ENOSPCEvents:             c.enospc.Load(),
		ReadersRevoked:           c.readersRevoked.Load(),
		HeldBytes:                s.heldBytes(),
		BudgetShortfalls:         c.shortfalls.Load(),
		DamagedRecordsSkipped:    c.damagedSkipped.Load(),
		RecordsMissing:           c.recordsMissing.Load(),
		DamagedRegions:           c.damagedRegions.Load(),
		DamagedBytes:             c.damagedBytes.Load(),
		FilesQuarantined:         c.filesQuarantined.Load(),
		FilesRepaired:            c.filesRepaired.Load(),
		IndexesSealed:            c.indexesSealed.Load(),
		SealCPUSeconds:           float64(c.sealNanos.Load()) / 1e9,
		IndexCPUSeconds:          float64(c.indexNanos.Load()) / 1e9,
		IndexFullRotations:       c.indexFullRotations.Load(),
	}
}

// heldBytes sums the held bytes of every directory.
func (s *Spool) heldBytes() int64 {
	var n int64
	for _, d := range s.dirs {
		d.mu.Lock()
		n += d.held
		d.mu.Unlock()
	}
	return n
}

// makeRoom deletes the oldest files of d until n more bytes, and one more
// file if newFile is set, fit its budget, and at least shortfall bytes
// have been freed (after a write found the disk full). It returns false if
// the budget could not be met because only busy files were left. d.mu is
// held; it is released while revoked readers are waited for (reclaim).
//
// The floor counts held bytes (deleted files readers still have open) as
// available: they come back. When the disk physically cannot take the
// write while bytes are held, the readers holding them are revoked
// before any more history is deleted.
func (s *Spool) makeRoom(d *dirState, n int64, newFile bool, shortfall int64) bool {
	cfg := &s.cfg
	if cfg.MinFreePercent > 0 || shortfall > 0 || d.held > 0 {
		now := time.Now()
		if !d.statOK || newFile || shortfall > 0 || d.since >= statfsBytes ||
			now.Sub(d.statAt) >= statfsInterval || d.avail+d.held-n-d.block < s.floor(d) ||
			d.held > 0 && d.avail-n-d.block < d.block {
			// Under the floor by the estimate, or out of space: look again
			// before deleting, as the estimate errs on the side of less
			// space.
			if err := d.refresh(now); err != nil {
				s.log.Warn("free space unknown; the floor uses the last figure", "err", err)
			}
		}
	}
	more := 0
	if newFile {
		more = 1
	}
	// The write may take a block more than its bytes (see reserve).
	alloc := n
	if n > 0 {
		alloc += d.block
	}
	var freed int64
	// physical is what the disk lacks for the write, or for a write that
	// found it full, beyond what was freed since.
	physical := func() int64 {
		need := shortfall - freed
		if d.statOK {
			need = max(need, alloc+d.block-d.avail)
		}
		return need
	}
	if d.held > 0 {
		if need := physical(); need > 0 {
			freed += s.reclaim(d, need)
		}
	}
	for {
		over := cfg.MaxBytes > 0 && d.bytes+n > cfg.MaxBytes ||
			cfg.MaxFiles > 0 && d.files+more > cfg.MaxFiles ||
			d.avail+d.held-alloc < s.floor(d) ||
			freed < shortfall
		if !over {
			if d.short {
				s.log.Info("disk budget holds again", "dir", d.path)
				d.short = false
			}
			return true
		}
		f := s.oldest(d)
		if f == nil {
			s.ctr.shortfalls.Add(1)
			if !d.short {
				s.log.Warn("disk budget cannot be met: only active files are left to delete",
					"dir", d.path, "bytes", d.bytes, "files", d.files, "available", d.avail, "held", d.held)
				d.short = true
			}
			return false
		}
		freed += s.remove(d, f, true)
		if d.held > 0 && freed < shortfall {
			// The file was held: deleting it freed nothing yet. Cut its
			// readers off rather than delete the next one too.
			freed += s.reclaim(d, physical())
		}
	}
}

// oldest returns d's file with the earliest first packet that may be
// deleted: not busy (written) and not deleted already. A file being sealed
// may go: waiting for its seal (an fsync of up to RotateSize bytes) would
// stall capture, and the seal notices the deletion.
func (s *Spool) oldest(d *dirState) *File {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if f.ds != d {
			continue
		}
		f.mu.Lock()
		ok := !f.busy && !f.deleted && !f.indexing
		f.mu.Unlock()
		if ok {
			return f
		}
	}
	return nil
}

// remove deletes f (its pcap and its index) from the spool and from disk
// and returns the bytes freed on disk now (not those readers hold, which
// come back when they close). budget says the budget deleted it, which is
// counted; otherwise it is a file the spool discards (it holds no packets).
// The budget never removes a busy file. Handles opened before keep reading
// it: its descriptor and index are theirs. From now on f's bytes are not
// counted in d: reserve and release leave a deleted file alone. d.mu is
// held.
func (s *Spool) remove(d *dirState, f *File, budget bool) int64 {
	f.rm.Lock()
	defer f.rm.Unlock()
	f.mu.Lock()
	if f.deleted || budget && f.busy {
		f.mu.Unlock()
		return 0
	}
	f.deleted = true
	live, packets := f.live, f.sum.Packets
	holders := slices.Clone(f.readers)
	f.mu.Unlock()
	if live != nil {
		packets = live.Summary().Packets
	}

	s.mu.Lock()
	if i := slices.Index(s.files, f); i >= 0 {
		s.files = slices.Delete(s.files, i, i+1)
	}
	f.mu.Lock()
	if f.lru != nil {
		s.cache.Remove(f.lru)
		f.lru = nil
	}
	f.sealed = nil
	m := f.takeMapping() // handles reading it keep it mapped
	f.mu.Unlock()
	s.mu.Unlock()
	s.dropMapping(m, f)

	size := f.size + f.idxSize
	d.files--
	d.bytes -= size
	// The pcap goes first: a crash in between leaves an index without its
	// pcap, which Open removes, and not a pcap without its index, which
	// Open would index again only for it to be deleted once more.
	err := removeIfExists(f.Path)
	if err != nil {
		// Out of the spool all the same, so the budget does not try it
		// forever; the next Open finds it again.
		s.log.Error("deleting spool file failed", "file", f.Path, "err", err)
		return 0
	}
	if err := errors.Join(removeIfExists(indexPath(f.Path)), removeIfExists(sumsPath(f.Path))); err != nil {
		s.log.Error("deleting index or sums journal failed; the next start removes it", "file", f.Path, "err", err)
	}
	// Readers that have the pcap open keep its blocks allocated until
	// they close it: held, not available (revoke.go).
	back := size
	if len(holders) > 0 {
		s.hold(d, f, f.size, holders)
		back = f.idxSize
	}
	d.avail += back
	if budget {
		s.ctr.filesDeleted.Add(1)
		s.ctr.bytesDeleted.Add(uint64(size))
		s.ctr.packetsDeleted.Add(packets)
		s.log.Info("deleted oldest spool file for the disk budget", "file", f.Path, "bytes", size, "packets", packets,
			"held_by_queries", len(holders))
	}
	return back
}

// grant is the room reserve made for one write.
type grant struct {
	f       *File
	n       int64 // bytes
	alloc   int64 // what they may take on disk: a block more, for rounding
	idx     bool  // of f's index, not its pcap
	counted bool  // false if f was deleted already: nothing to undo
}

// reserve makes room in f's directory for n more bytes of f (of its index
// if idx is set) and counts them, deleting the oldest files as needed;
// shortfall > 0 frees at least that many bytes whatever the budget says
// (the disk was full). The bytes are counted before they are written, so
// that two writers cannot both take the last room. The caller reports the
// write's outcome with done.
func (s *Spool) reserve(f *File, n int64, idx bool, shortfall int64) grant {
	d := f.ds
	d.mu.Lock()
	defer d.mu.Unlock()
	s.makeRoom(d, n, false, shortfall)
	g := grant{f: f, n: n, alloc: n + d.block, idx: idx}
	if f.isDeleted() {
		return g // its index, sealed after the budget deleted it
	}
	g.counted = true
	d.bytes += n
	d.avail -= g.alloc
	d.inflight += g.alloc
	d.since += n
	if idx {
		f.idxSize += n
	} else {
		f.size += n
	}
	return g
}

// done ends a write reserve made room for; if it failed (ok false) or was
// cut off again, its bytes are given back.
func (s *Spool) done(g grant, ok bool) {
	if !g.counted {
		return
	}
	d := g.f.ds
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight -= g.alloc
	if ok || g.f.isDeleted() {
		return // a deleted file's bytes were all taken off by remove
	}
	d.bytes -= g.n
	d.avail += g.alloc
	if g.idx {
		g.f.idxSize -= g.n
	} else {
		g.f.size -= g.n
	}
}

// reserveFile makes room in d for one more file and counts it; shortfall
// as in reserve.
func (s *Spool) reserveFile(d *dirState, shortfall int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.makeRoom(d, 0, true, shortfall)
	d.files++
}

func (s *Spool) releaseFile(d *dirState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.files--
}

// shortfall is how much a write of n bytes that found the disk full asks
// to be freed: the bytes, and a block on either side for rounding.
func (d *dirState) shortfall(n int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return n + 2*max(d.block, 4096)
}

// settle commits the file system's journal (syncfs), and reports whether
// it did. ext4 reuses the blocks of deleted files only once the transaction
// that freed them has committed, so a write right after the deletions that
// made room for it can still find the disk full: under heavy writeback
// that was seen to lose a batch of packets on a full disk. Called only then.
func (d *dirState) settle() bool {
	d.mu.Lock()
	dir := d.dir
	d.mu.Unlock()
	return dir != nil && unix.Syncfs(int(dir.Fd())) == nil
}

// setIndexSize counts a rewritten index of f.
func (s *Spool) setIndexSize(f *File, n int64) {
	d := f.ds
	d.mu.Lock()
	defer d.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.deleted {
		d.bytes += n - f.idxSize
		f.idxSize = n
	}
}

// writeIndex writes f's index within the budget. If the disk is full, the
// oldest files make room and it is tried once more.
func (s *Spool) writeIndex(f *File, data []byte) error {
	n := int64(len(data))
	path := indexPath(f.Path)
	// Making room for f's index must not delete f: on a disk its newest
	// file fills, that deleted the newest packets for nothing.
	f.mu.Lock()
	f.indexing = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.indexing = false
		f.mu.Unlock()
	}()
	g := s.reserve(f, n, true, 0)
	err := index.WriteFile(path, data)
	if errors.Is(err, unix.ENOSPC) {
		s.ctr.enospc.Add(1)
		s.done(g, false)
		g = s.reserve(f, n, true, f.ds.shortfall(n))
		err = index.WriteFile(path, data)
	}
	s.done(g, err == nil)
	return err
}

// openDirs keeps each spool directory open for statfs and brings it within
// its budget: a smaller budget than the last run's takes effect before
// anything is written.
func (s *Spool) openDirs() error {
	for _, d := range s.dirs {
		dir, err := os.Open(d.path)
		if err != nil {
			return errors.Join(fmt.Errorf("spool %s: %w", d.path, err), s.closeDirs())
		}
		d.mu.Lock()
		d.dir = dir
		s.makeRoom(d, 0, false, 0)
		d.mu.Unlock()
	}
	// Indexes rebuilt by scan that did not fit on a full disk.
	for _, f := range s.Files() {
		f.mu.Lock()
		data := f.unsaved
		f.unsaved = nil
		f.mu.Unlock()
		if data == nil {
			continue
		}
		if err := s.writeIndex(f, data); err != nil {
			s.log.Warn("index still not written; queries rebuild it in memory", "file", f.Path, "err", err)
		}
	}
	return nil
}

func (s *Spool) closeDirs() error {
	var errs []error
	for _, d := range s.dirs {
		d.mu.Lock()
		if d.dir != nil {
			errs = append(errs, d.dir.Close())
			d.dir = nil
		}
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

// account counts the files scan found in d.
func (s *Spool) account(d *dirState, files []*File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range files {
		f.ds = d
		f.size = fileSize(f.Path)
		f.sumsSize = fileSize(sumsPath(f.Path))
		f.idxSize = fileSize(indexPath(f.Path)) + f.sumsSize
		d.files++
		d.bytes += f.size + f.idxSize
	}
}

func fileSize(path string) int64 {
	// Lstat: a symbolic link or directory left in an index's place (it
	// could not be quarantined) holds none of the spool's bytes.
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return 0
	}
	return st.Size()
}

// dirUsage fills in the budget side of u: the bytes d holds, the file
// system's size and available space, and the budget.
func (s *Spool) dirUsage(d *dirState, u *Usage) {
	d.mu.Lock()
	u.FileBytes, u.HeldBytes = d.bytes, d.held
	d.mu.Unlock()
	// A statfs of its own: d's figure is an estimate, and Usage is rare.
	var st unix.Statfs_t
	statfs := unix.Statfs
	if d.fakeStatfs != nil {
		statfs = d.fakeStatfs
	}
	if err := statfs(d.path, &st); err == nil {
		bs := int64(st.Frsize)
		if bs <= 0 {
			bs = int64(st.Bsize)
		}
		u.TotalBytes, u.FreeBytes = int64(st.Blocks)*bs, int64(st.Bavail)*bs
		u.BudgetBytes = u.FileBytes + u.FreeBytes + u.HeldBytes
		if s.cfg.MinFreePercent > 0 {
			u.BudgetBytes -= int64(math.Ceil(float64(u.TotalBytes) * s.cfg.MinFreePercent / 100))
		}
		// Below FileBytes when others have filled the disk: the spool
		// is about to shrink to it.
		u.BudgetBytes = max(u.BudgetBytes, 0)
	}
	if s.cfg.MaxBytes > 0 && (u.BudgetBytes == 0 || s.cfg.MaxBytes < u.BudgetBytes) {
		u.BudgetBytes = s.cfg.MaxBytes
	}
}
