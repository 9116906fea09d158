package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A sealed pcap file never changes, so a query can read it from memory
// instead of with one pread per packet. Its pcap is mapped (read-only,
// MAP_SHARED, the data its index covers) when a Snapshot first takes it
// with its sealed index cached, and stays mapped while that index stays in
// the cache, so that a later query finds the pages already in its page
// tables: a warm query makes no system call and takes no page fault per
// packet.
//
// A mapping is reference-counted: the cache holds one reference, and each
// Handle that reads through it one more. Evicting the index or deleting the
// file (budget, retention) drops the cache's reference; the last Handle to
// close unmaps it. Deleting a mapped file is safe (the pages stay until the
// unmap); unmapping under a reader would not be, and never happens.
//
// The file's size is checked (fstat) against the index before it is mapped,
// and a shorter file is not mapped: its reads go through pread and fail
// with a clear error. A file truncated after it was mapped would raise
// SIGBUS on access; reads from a mapping run with debug.SetPanicOnFault and
// turn such a fault into an error wrapping io.ErrUnexpectedEOF, as pread
// would report it. The last page before the new end reads as zeros instead
// of faulting, so Handle.Close checks the size again and reports a file that
// shrank while it was read the same way.
//
// The mapping is MADV_RANDOM: a fault on a page that is not in the page
// cache reads that page alone, not the pages around it. Readers that find
// the pages on disk are better off with pread (engine does the switch).

// mapping is a read-only shared mapping of the first len(data) bytes of a
// sealed pcap file.
type mapping struct {
	data []byte
	refs atomic.Int32
}

// mapFile maps the first size bytes of f, after checking that the file has
// them. The mapping starts with one reference, its owner's.
func mapFile(f *os.File, size int64) (*mapping, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("map %d bytes: size out of range", size)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	if fi.Size() < size {
		return nil, fmt.Errorf("map: file has %d bytes, its index covers %d: %w", fi.Size(), size, io.ErrUnexpectedEOF)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	var data []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		data, merr = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	if merr != nil {
		return nil, fmt.Errorf("map %d bytes: %w", size, merr)
	}
	// A fault on a page not in the page cache reads that page alone, not
	// the 128 KiB around it: a selective query touches one page every few
	// hundred KiB, and read-around made it read the whole file from disk
	// (measured: 3.8 GB for 10,000 packets of 4 files, 6x slower than
	// pread). Dense reads go through pread, which reads ahead.
	if err := unix.Madvise(data, unix.MADV_RANDOM); err != nil {
		return nil, errors.Join(fmt.Errorf("map: madvise: %w", err), unix.Munmap(data))
	}
	m := &mapping{data: data}
	m.refs.Store(1)
	return m, nil
}

// acquire adds a reference. The caller must hold one already, or hold the
// lock under which the owner's reference is dropped (File.mu).
func (m *mapping) acquire() { m.refs.Add(1) }

// drop drops a reference and reports whether it was the last one, after
// which the caller unmaps m.
func (m *mapping) drop() (last bool) {
	n := m.refs.Add(-1)
	if n < 0 {
		panic("spool: mapping released more often than acquired")
	}
	return n == 0
}

// unmap unmaps m, which no one references any more. It takes time in
// proportion to the pages queries have touched (about 13 ms for a whole
// 1 GiB file), so the spool's own references are dropped and unmapped off
// the capture path (dropMapping).
func (m *mapping) unmap() error {
	data := m.data
	m.data = nil
	if err := unix.Munmap(data); err != nil {
		return fmt.Errorf("unmap: %w", err)
	}
	return nil
}

// errMappedFault: reading a mapping faulted, most likely because the file
// was truncated after it was mapped.
var errMappedFault = errors.New("mapped pcap faulted (truncated after it was mapped?)")

// readAt copies len(p) bytes at off out of the mapping, which holds them. A
// fault (SIGBUS: the file was truncated under the mapping) becomes an error.
func (m *mapping) readAt(p []byte, off int64) (n int, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok || !m.holds(f.Addr()) {
				panic(r)
			}
			n, err = 0, fmt.Errorf("%w: %w", errMappedFault, io.ErrUnexpectedEOF)
		}
	}()
	return copy(p, m.data[off:off+int64(len(p))]), nil
}

// holds reports whether addr is in the mapping.
func (m *mapping) holds(addr uintptr) bool {
	if len(m.data) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	return addr >= start && addr-start < uintptr(len(m.data))
}

// mapSealed returns f's mapping with a reference for the caller, mapping
// the file from pcap (f's open descriptor) first if needed, or nil if f has
// none: it is active or deleted, or it cannot be mapped, in which case the
// caller reads with pread. The cache owns a mapping's first reference while
// f's sealed index is cached; an index evicted since the caller loaded it
// (by other queries' use of the cache, between the two calls) gets a
// mapping of the caller's alone, unmapped when its handle closes.
func (s *Spool) mapSealed(f *File, pcap *os.File) *mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleted || f.live != nil {
		return nil
	}
	if f.mapped == nil {
		if f.sum.DataEnd <= 0 {
			return nil
		}
		m, err := mapFile(pcap, f.sum.DataEnd)
		if err != nil {
			s.log.Warn("sealed pcap not mapped; reading it with pread", "file", f.Path, "err", err)
			return nil
		}
		if f.sealed == nil {
			return m // its one reference is the caller's
		}
		f.mapped = m
	}
	f.mapped.acquire()
	return f.mapped
}

// takeMapping takes the cache's mapping reference off f, for dropMapping;
// f.mu is held.
func (f *File) takeMapping() *mapping {
	m := f.mapped
	f.mapped = nil
	return m
}

// dropMapping drops the cache's reference m (nil: none) to f's mapping,
// which takeMapping took. If it was the last one, the file is unmapped in
// the background: eviction and deletion run under the spool's locks and on
// capture's write path (the budget), which an unmap must not stall.
// Spool.Close waits for it. A failure is logged: the mapping is gone
// either way, and no caller is left to tell.
func (s *Spool) dropMapping(m *mapping, f *File) {
	if m == nil || !m.drop() {
		return
	}
	s.unmapping.Add(1)
	go func() {
		defer s.unmapping.Done()
		if err := m.unmap(); err != nil {
			s.log.Error("unmapping a spool file failed", "file", f.Path, "err", err)
		}
	}()
}
