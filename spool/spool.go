package spool

import (
	"cmp"
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

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

	sealing sync.WaitGroup
	sealErr error
}

// Open opens the spool directories, creating them if needed, and repairs
// what a crashed run left (see Repair) before anything is written.
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
				return nil, fmt.Errorf("spool %s: %w", dir, err)
			}
		}
		files, err := s.scan(dir)
		if err != nil {
			return nil, err
		}
		s.files = append(s.files, files...)
	}
	s.sortFiles()
	return s, nil
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
func (s *Spool) pickDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.cfg.Dirs[s.nextDir%len(s.cfg.Dirs)]
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
// its pcap, which stays readable even if the file is deleted meanwhile.
type Handle struct {
	File      *File
	View      index.View
	Interface string
	PCAP      *os.File
}

// Close closes the pcap descriptor.
func (h *Handle) Close() error { return h.PCAP.Close() }

// Snapshot opens every file that may hold packets stamped in [lo, hi), in
// time order. The caller closes the handles (CloseAll).
func (s *Spool) Snapshot(lo, hi int64) ([]*Handle, error) {
	var out []*Handle
	for _, f := range s.Files() {
		if !f.overlaps(lo, hi) {
			continue
		}
		pcap, err := os.Open(f.Path)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("spool %s: %w", f.Path, err), CloseAll(out))
		}
		view, iface, err := s.view(f)
		if err != nil {
			return nil, errors.Join(err, pcap.Close(), CloseAll(out))
		}
		out = append(out, &Handle{File: f, View: view, Interface: iface, PCAP: pcap})
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

// view returns the file's live index or its sealed one, loading it (and
// rebuilding it from the pcap if it turns out corrupt).
func (s *Spool) view(f *File) (index.View, string, error) {
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
	r, err := index.Open(indexPath(f.Path))
	if err != nil {
		s.log.Warn("index unusable, rebuilding it from its pcap", "file", f.Path, "err", err)
		if r, err = s.reindex(f.Path, f.Stream); err != nil {
			return nil, "", err
		}
	}
	f.mu.Lock()
	f.sealed, f.sum, f.iface = r, r.Summary(), r.Interface()
	f.mu.Unlock()
	s.touch(f)
	return r, r.Interface(), nil
}

// touch marks f's sealed index as recently used and evicts the least
// recently used ones beyond the cache size.
func (s *Spool) touch(f *File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.mu.Lock()
	if f.lru != nil {
		s.cache.MoveToFront(f.lru)
	} else if f.sealed != nil {
		f.lru = s.cache.PushFront(f)
	}
	f.mu.Unlock()
	for s.cache.Len() > s.cfg.MaxCachedIndexes {
		old := s.cache.Remove(s.cache.Back()).(*File)
		old.mu.Lock()
		old.sealed, old.lru = nil, nil
		old.mu.Unlock()
	}
}

// Close waits for indexes being sealed and reports the first failure.
// Writers must be closed first.
func (s *Spool) Close() error {
	s.sealing.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealErr
}

// Usage is what one spool directory holds.
type Usage struct {
	Dir           string
	Files         int
	Bytes         int64 // pcap bytes covered by indexes
	Packets       uint64
	Oldest, Newest int64 // packet timestamps, unix ns; 0 when empty
}

// Usage sums the files of each directory.
func (s *Spool) Usage() []Usage {
	out := make([]Usage, len(s.cfg.Dirs))
	pos := map[string]int{}
	for i, d := range s.cfg.Dirs {
		out[i].Dir = d
		pos[filepath.Clean(d)] = i
	}
	for _, f := range s.Files() {
		u := &out[pos[filepath.Clean(f.Dir)]]
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
