package spool

import (
	"cmp"
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/index"
)

// Spool is the set of spool files in the configured directories.
type Spool struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	files   []*File // sorted by Start, then Path
	nextDir int
	cache   *list.List // of *File with a loaded sealed index, most recent first
	streams map[string]bool

	dirs  []*dirState // one per Config.Dirs, in that order
	locks []*os.File  // writer's locks on the directories (lockDir)
	ctr   counters

	sealing   sync.WaitGroup
	sealErr   error
	unmapping sync.WaitGroup // mappings the spool let go of, being unmapped
}

// Open opens the spool directories, creating them if needed, repairs what a
// crashed run left (see scan), and deletes the oldest files of a directory
// over its budget, before anything is written.
func Open(cfg Config, log *slog.Logger) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{cfg: cfg, log: log, cache: list.New(), streams: map[string]bool{}}
	for _, dir := range cfg.Dirs {
		if !cfg.ReadOnly {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, errors.Join(fmt.Errorf("spool %s: %w", dir, err), s.unlock())
			}
			l, err := lockDir(dir)
			if err != nil {
				return nil, errors.Join(err, s.unlock())
			}
			s.locks = append(s.locks, l)
		}
		files, err := s.scan(dir)
		if err != nil {
			return nil, errors.Join(err, s.unlock())
		}
		s.dirs = append(s.dirs, &dirState{path: dir})
		s.files = append(s.files, files...)
	}
	// A copy of a file answers nothing its original does not.
	dups := duplicates(s.files)
	for _, f := range dups {
		s.log.Warn("spool file is a copy of another (the same packets under another name); moving it into quarantine", "file", f.Path)
		if s.quarantine(f.Dir, f.Path) {
			s.quarantine(f.Dir, indexPath(f.Path))
		}
	}
	s.files = slices.DeleteFunc(s.files, func(f *File) bool { return slices.Contains(dups, f) })
	for _, d := range s.dirs {
		var files []*File
		for _, f := range s.files {
			if f.Dir == d.path {
				files = append(files, f)
			}
		}
		s.account(d, files)
	}
	s.sortFiles()
	if !cfg.ReadOnly {
		if err := s.openDirs(); err != nil {
			return nil, errors.Join(err, s.unlock())
		}
	}
	return s, nil
}

// unlock releases the directory locks (lockDir).
func (s *Spool) unlock() error {
	var errs []error
	for _, l := range s.locks {
		errs = append(errs, l.Close())
	}
	s.locks = nil
	return errors.Join(errs...)
}

// Config returns the spool's configuration.
func (s *Spool) Config() Config { return s.cfg }

func (s *Spool) sortFiles() {
	slices.SortFunc(s.files, func(a, b *File) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Path, b.Path))
	})
}

// add registers a new active file.
func (s *Spool) add(f *File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.files, f, func(a, b *File) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Path, b.Path))
	})
	s.files = slices.Insert(s.files, i, f)
}

// pickDir spreads new files over the spool directories.
func (s *Spool) pickDir() *dirState {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dirs[s.nextDir%len(s.dirs)]
	s.nextDir++
	return d
}

// Files returns the spool's files in time order.
func (s *Spool) Files() []*File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.files)
}

// Handle is one file of a Snapshot: its index view and an open descriptor of
// its pcap, which stays readable even if the file is deleted meanwhile. A
// sealed file's handle also holds a reference to the file's mapping, if it
// has one (see mapped.go); ReadAt reads from it.
type Handle struct {
	File      *File
	View      index.View
	Interface string
	PCAP      *os.File

	m  *mapping // nil: read with pread
	sp *Spool
	rd *reader // the snapshot it belongs to
}

// Close releases the mapping, unmapping it if no one else uses it, and
// closes the pcap descriptor. A file truncated while it was mapped reads as
// zeros on its last page past the new end: readers check every record
// against its checksum in the index, so such bytes are never taken for a
// packet.
func (h *Handle) Close() error {
	var errs []error
	if m := h.m; m != nil {
		if m.drop() {
			if err := m.unmap(); err != nil {
				errs = append(errs, fmt.Errorf("spool %s: %w", h.File.Path, err))
			}
		}
		h.m = nil
	}
	errs = append(errs, h.PCAP.Close())
	if h.rd != nil {
		// After the descriptor and the mapping: only now can the space
		// of a deleted file come back.
		h.sp.release(h)
		h.rd = nil
	}
	return errors.Join(errs...)
}

// ReadAt reads the pcap file at off (io.ReaderAt): from memory when the file
// is mapped and the range lies in the mapping, else with pread. It is safe
// for concurrent use until Close. A mapped file truncated by someone else
// gives an error wrapping io.ErrUnexpectedEOF, as pread would. Once the
// handle's snapshot is revoked, it fails at once with a *RevokedError
// (ErrRevoked).
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	if h.rd != nil {
		if err := h.rd.revoked(); err != nil {
			return 0, err
		}
	}
	if m := h.m; m != nil && off >= 0 && off <= int64(len(m.data))-int64(len(p)) {
		n, err := m.readAt(p, off)
		if err != nil {
			// As os.File.ReadAt reports its errors.
			err = &os.PathError{Op: "read", Path: h.File.Path, Err: err}
		}
		return n, err
	}
	return h.PCAP.ReadAt(p, off)
}

// Revoked returns the *RevokedError of a handle whose query was cut off
// (see SnapshotFor), nil otherwise: for readers that read PCAP directly.
func (h *Handle) Revoked() error {
	if h.rd == nil {
		return nil
	}
	return h.rd.revoked()
}

// Mapped reports whether ReadAt reads from memory, where a read costs no
// system call, so that a reader need not batch nearby reads.
func (h *Handle) Mapped() bool { return h.m != nil }

// Snapshot opens every file that may hold packets stamped in [lo, hi), in
// time order. The caller closes the handles (CloseAll). It is SnapshotFor
// without a callback: a revoked snapshot learns of it from ReadAt alone.
func (s *Spool) Snapshot(lo, hi int64) ([]*Handle, error) {
	return s.SnapshotFor(lo, hi, nil)
}

// SnapshotFor is Snapshot with revoke, if not nil, called (once, on a
// goroutine of its own) when the spool cuts the snapshot off because
// capture needs the space of deleted files it holds (see revoke.go). The
// error is a *RevokedError, which matches ErrRevoked; ReadAt returns it
// from then on. revoke must make the reader stop and close its handles
// soon, even if it is blocked elsewhere (writing to a slow client, say).
func (s *Spool) SnapshotFor(lo, hi int64, revoke func(error)) ([]*Handle, error) {
	var out []*Handle
	rd := &reader{onRevoke: revoke}
	for _, f := range s.Files() {
		if !f.overlaps(lo, hi) {
			continue
		}
		// Not followed if something has put a symbolic link in the
		// file's place since Open.
		pcap, err := os.OpenFile(f.Path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("spool %s: %w", f.Path, err), CloseAll(out))
		}
		f.mu.Lock()
		deleted := f.deleted
		if !deleted {
			// Under f.mu, where remove marks it deleted: a file is
			// either deleted before it has this reader, whose descriptor
			// then goes, or counted as held by it.
			f.readers = append(f.readers, rd)
		}
		f.mu.Unlock()
		if deleted {
			if err := pcap.Close(); err != nil {
				return nil, errors.Join(fmt.Errorf("spool %s: %w", f.Path, err), CloseAll(out))
			}
			continue
		}
		out = append(out, &Handle{File: f, PCAP: pcap, sp: s, rd: rd})
	}
	// Indexes not in memory are read and verified in parallel: a cold query
	// over many files spends most of its time there.
	errs := make([]error, len(out))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	for i, h := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			h.View, h.Interface, errs[i] = s.view(h.File, h.PCAP)
			if errs[i] == nil {
				h.m = s.mapSealed(h.File, h.PCAP)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, CloseAll(out))
	}
	return out, nil
}

// CloseAll closes every handle.
func CloseAll(hs []*Handle) error {
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}

// view returns the file's live index or its sealed one, loading it, or
// rebuilding it from pcap, the file's open descriptor, if it cannot be
// loaded (corrupt, or deleted by the budget since pcap was opened).
func (s *Spool) view(f *File, pcap *os.File) (index.View, string, error) {
	f.mu.Lock()
	if f.live != nil {
		defer f.mu.Unlock()
		return f.live, f.iface, nil
	}
	if r := f.sealed; r != nil {
		f.mu.Unlock()
		s.touch(f)
		return r, r.Interface(), nil
	}
	f.mu.Unlock()
	var r *index.Reader
	st, err := pcap.Stat()
	if err == nil {
		// Bounded by what the pcap can need, so that a huge file in the
		// index's place is refused before it is read.
		r, err = index.OpenLimit(indexPath(f.Path), indexBound(st.Size()))
	}
	if err != nil {
		if r, err = s.rebuild(f, pcap, err); err != nil {
			return nil, "", err
		}
	}
	f.mu.Lock()
	deleted := f.deleted
	if !deleted {
		// A deleted file's index is not cached: no other query can find it.
		f.sealed, f.sum, f.iface = r, r.Summary(), r.Interface()
	}
	f.mu.Unlock()
	if !deleted {
		s.touch(f)
	}
	return r, r.Interface(), nil
}

// rebuild indexes f from its open pcap descriptor after its index could not
// be loaded (cause), and writes the new index unless the file has been
// deleted meanwhile or the spool is read-only. Reading the descriptor, not
// the path, keeps a query working on a file deleted after it was opened.
func (s *Spool) rebuild(f *File, pcap *os.File, cause error) (*index.Reader, error) {
	f.mu.Lock()
	deleted := f.deleted
	f.mu.Unlock()
	switch {
	case deleted || errors.Is(cause, os.ErrNotExist):
	case errors.Is(cause, index.ErrVersion):
		s.log.Info("index of an earlier version; rebuilding it from its pcap", "file", f.Path, "err", cause)
	default:
		s.log.Warn("index unusable, rebuilding it from its pcap", "file", f.Path, "err", cause)
	}
	st, err := pcap.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool %s: rebuild index: %w", f.Path, err)
	}
	res, err := scanRecords(pcap, st.Size(), f.Start, nil)
	if err != nil {
		return nil, fmt.Errorf("spool %s: rebuild index: %w", f.Path, err)
	}
	s.logDamage(f.Path, res)
	if res.cut >= 0 {
		// A sealed file was fsynced whole; this is damage from outside,
		// and the index ends before it. Nothing is cut while queries may
		// have the file mapped.
		s.log.Warn("pcap ends in a torn or corrupt record; indexed up to it", "file", f.Path, "offset", res.cut, "reason", res.why)
	}
	b, end := res.b, res.end
	b.SetVisible(end)
	data := b.Encode(ifaceOf(f.Stream), filepath.Base(f.Path))
	r, err := index.Decode(data)
	if err != nil || s.cfg.ReadOnly || deleted {
		return r, err
	}
	// Written and fsynced without f.rm: capture's budget, deleting this
	// file meanwhile (remove holds f.rm), waits for the rename alone, not
	// for a write and fsync on a busy disk. The rename under f.rm never
	// puts an index back beside a deleted pcap.
	tmp, werr := index.WriteTemp(indexPath(f.Path), data)
	if werr == nil {
		f.rm.Lock()
		f.mu.Lock()
		deleted = f.deleted
		f.mu.Unlock()
		if deleted {
			werr = tmp.Abort()
		} else if werr = tmp.Rename(); werr != nil {
			werr = errors.Join(werr, tmp.Abort())
		}
		f.rm.Unlock()
		if werr == nil && !deleted {
			werr = tmp.SyncDir()
		}
	}
	switch {
	case werr != nil:
		s.log.Warn("rebuilt index not written; it is kept in memory", "file", f.Path, "err", werr)
	case !deleted:
		s.setIndexSize(f, int64(len(data)))
	}
	return r, nil
}

// touch marks f's sealed index as recently used and evicts the least
// recently used ones beyond the cache size.
func (s *Spool) touch(f *File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.mu.Lock()
	if f.lru != nil {
		s.cache.MoveToFront(f.lru)
	} else if f.sealed != nil && !f.deleted {
		f.lru = s.cache.PushFront(f)
	}
	f.mu.Unlock()
	for s.cache.Len() > s.cfg.MaxCachedIndexes {
		old := s.cache.Remove(s.cache.Back()).(*File)
		old.mu.Lock()
		old.sealed, old.lru = nil, nil
		m := old.takeMapping()
		old.mu.Unlock()
		s.dropMapping(m, old)
	}
}

// Close waits for indexes being sealed and reports the first failure.
// Writers must be closed first.
func (s *Spool) Close() error {
	s.sealing.Wait()
	if c := s.Counters(); c.IndexesSealed > 0 {
		s.log.Info("spool closed", "indexes_sealed", c.IndexesSealed, "seal_cpu", time.Duration(c.SealCPUSeconds*1e9),
			"index_cpu", time.Duration(c.IndexCPUSeconds*1e9))
	}
	cerr := errors.Join(s.closeDirs(), s.unlock())
	s.mu.Lock()
	defer s.mu.Unlock()
	// The cache lets go of its mappings; handles still open keep theirs.
	for e := s.cache.Front(); e != nil; e = e.Next() {
		f := e.Value.(*File)
		f.mu.Lock()
		m := f.takeMapping()
		f.mu.Unlock()
		s.dropMapping(m, f)
	}
	s.unmapping.Wait()
	return errors.Join(s.sealErr, cerr)
}

// Usage is what one spool directory holds, and how much it may hold.
type Usage struct {
	Dir            string
	Files          int
	Bytes          int64 // pcap bytes covered by indexes
	Packets        uint64
	Oldest, Newest int64 // packet timestamps, unix ns; 0 when empty

	// FileBytes is what the directory's spool files take, pcap and index
	// files together: what the budget counts.
	FileBytes int64
	// TotalBytes and FreeBytes are the size of the directory's file system
	// and the bytes available on it (statfs f_bavail); 0 if unknown.
	TotalBytes, FreeBytes int64
	// HeldBytes is the pcap bytes of files the budget deleted that
	// queries still hold open: allocated, and coming back when they close.
	HeldBytes int64
	// BudgetBytes is the most the directory may hold: Config.MaxBytes, or
	// less when the free-space floor comes first (FileBytes plus FreeBytes
	// plus HeldBytes minus the floor). It is below FileBytes when other programs have
	// taken space, which the spool is about to give back; 0 if unknown.
	BudgetBytes int64
}

// Retention estimates the span of packet time the directory holds once it
// is full: the span it holds now, scaled by BudgetBytes / FileBytes (at the
// rate the held data came in). 0 when it holds nothing or the budget is
// unknown.
func (u *Usage) Retention() time.Duration {
	if u.FileBytes <= 0 || u.BudgetBytes <= 0 || u.Newest <= u.Oldest {
		return 0
	}
	r := float64(u.Newest-u.Oldest) * float64(u.BudgetBytes) / float64(u.FileBytes)
	if r >= math.MaxInt64 {
		// Old imported captures on a big disk: centuries, not a wrap.
		return math.MaxInt64
	}
	return time.Duration(r)
}

// Usage sums the files of each directory and reads its file system's
// space (one statfs per directory).
func (s *Spool) Usage() []Usage {
	out := make([]Usage, len(s.dirs))
	pos := map[*dirState]int{}
	for i, d := range s.dirs {
		out[i].Dir = d.path
		pos[d] = i
		s.dirUsage(d, &out[i])
	}
	for _, f := range s.Files() {
		u := &out[pos[f.ds]]
		sum := f.Summary()
		u.Files++
		u.Bytes += sum.DataEnd
		u.Packets += sum.Packets
		if sum.Packets == 0 {
			continue
		}
		if u.Oldest == 0 || sum.First < u.Oldest {
			u.Oldest = sum.First
		}
		u.Newest = max(u.Newest, sum.Last)
	}
	return out
}
