package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// quarantineDir is the folder, inside each spool directory, that spool
// files no packet could be read from are moved into, for the operator to
// look at: repair never deletes what it cannot prove worthless.
const quarantineDir = "quarantine"

var (
	// errEmpty: a pcap file holds nothing but (part of) its file header
	// and zeros, or a torn first record: provably nothing.
	errEmpty = errors.New("no packets")
	// errNoRecords: a pcap file holds bytes, but not a single plausible
	// record.
	errNoRecords = errors.New("no plausible record")
)

// scan lists a spool directory and repairs what a crash, or damage from
// outside, can leave behind: half-written temporary files are removed; a
// pcap file without a usable sealed index (missing, corrupt, not a regular
// file, of an impossible size, or covering more than the pcap holds) is
// re-indexed from its plausible records (resync.go), its torn last record
// or zero tail cut off, its damaged file header rewritten; a pcap file
// without a single packet is removed, one with bytes but no plausible
// record moved into quarantine; an index without its pcap file is removed.
// Nothing in the directory is followed if it is a symbolic link. A file
// that cannot be repaired is logged and left out; it never keeps the rest
// of the spool from opening.
func (s *Spool) scan(dir string) ([]*File, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	var files []*File
	pcaps := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".") {
			if s.cfg.ReadOnly || !strings.HasSuffix(name, ".tmp") {
				continue
			}
			s.log.Info("removing temporary file of an interrupted run", "file", path)
			if err := os.Remove(path); err != nil {
				s.log.Error("temporary file not removed", "file", path, "err", err)
			}
			continue
		}
		start, stream, ok := parseName(name)
		if !ok {
			continue
		}
		if !e.Type().IsRegular() {
			// A directory, a symbolic link (never followed: it may
			// point anywhere), a FIFO or a device under a pcap's name.
			s.log.Error("spool file is not a regular file; moving it into quarantine", "file", path, "type", e.Type().String())
			s.quarantine(dir, path)
			continue
		}
		pcaps[strings.TrimSuffix(name, pcapExt)] = true
		f, err := s.scanFile(dir, path, start, stream)
		if err != nil {
			s.log.Error("spool file left out: it could not be read or repaired", "file", path, "err", err)
			continue
		}
		if f != nil {
			files = append(files, f)
		}
	}
	for _, e := range ents {
		name := e.Name()
		if s.cfg.ReadOnly {
			break
		}
		if strings.HasSuffix(name, sumsExt) && !strings.HasPrefix(name, ".") && !pcaps[strings.TrimSuffix(name, sumsExt)] && e.Type().IsRegular() {
			path := filepath.Join(dir, name)
			s.log.Info("removing sums journal without its pcap file", "file", path)
			if err := os.Remove(path); err != nil {
				s.log.Error("sums journal without its pcap file not removed", "file", path, "err", err)
			}
			continue
		}
		if strings.HasSuffix(name, indexExt) && !strings.HasPrefix(name, ".") && !pcaps[strings.TrimSuffix(name, indexExt)] {
			path := filepath.Join(dir, name)
			if !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
				s.log.Error("index without its pcap file is not a regular file; moving it into quarantine", "file", path, "type", e.Type().String())
				s.quarantine(dir, path)
				continue
			}
			s.log.Info("removing index without its pcap file", "file", path)
			if err := os.Remove(path); err != nil {
				s.log.Error("index without its pcap file not removed", "file", path, "err", err)
			}
		}
	}
	return files, nil
}

// scanFile returns the spool file at path, a regular file, with the
// summary of its sealed index, re-indexing it if the index is not usable.
// It returns nil if the file was removed or quarantined.
func (s *Spool) scanFile(dir, path string, start int64, stream string) (*File, error) {
	f := &File{Path: path, Dir: dir, Stream: stream, Start: start}
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	sum, cutShort, err := s.sealedSummary(dir, path, st.Size())
	if err == nil {
		f.sum = sum
		s.repairFileHeader(path)
		if !s.cfg.ReadOnly {
			// Left by a crash between the seal and the journal's removal.
			if err := removeIfExists(sumsPath(path)); err != nil {
				s.log.Warn("sums journal of a sealed file not removed", "file", sumsPath(path), "err", err)
			}
		}
		return f, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("index unusable, rebuilding it from its pcap", "file", path, "err", err)
	}
	r, unsaved, err := s.reindex(path, stream, start, cutShort)
	if cutShort {
		// The cut-off index counted what the file held: what is not
		// there any more is known lost.
		var left uint64
		if err == nil {
			left = r.Summary().Packets
		}
		if sum.Packets > left {
			s.log.Warn("records cut off with the end of a sealed pcap file", "file", path, "records", sum.Packets-left)
			s.ctr.recordsMissing.Add(sum.Packets - left)
		}
	}
	switch {
	case errors.Is(err, errEmpty):
		if s.cfg.ReadOnly {
			return nil, nil
		}
		s.log.Info("removing spool file without packets", "file", path)
		if err := errors.Join(os.Remove(path), removeIfExists(indexPath(path))); err != nil {
			return nil, fmt.Errorf("spool %s: %w", path, err)
		}
		return nil, nil
	case errors.Is(err, errNoRecords):
		s.log.Warn("spool file holds no plausible record; moving it into quarantine", "file", path, "bytes", st.Size())
		if s.quarantine(dir, path) {
			if err := removeIfExists(indexPath(path)); err != nil {
				s.log.Error("index of a quarantined file not removed", "file", indexPath(path), "err", err)
			}
		}
		return nil, nil
	case err != nil:
		return nil, err
	}
	f.sum = r.Summary()
	f.unsaved = unsaved
	return f, nil
}

// sealedSummary returns the summary of the sealed index of the pcap file
// at path, of pcapSize bytes, or why it cannot be used: missing
// (os.ErrNotExist), not a regular file (moved into quarantine), larger than
// any index of the pcap can be (not read), corrupt, or covering more bytes
// than the pcap has (cutShort: the pcap was cut short after it was sealed).
func (s *Spool) sealedSummary(dir, path string, pcapSize int64) (sum index.Summary, cutShort bool, err error) {
	idx := indexPath(path)
	st, err := os.Lstat(idx)
	if err != nil {
		return sum, false, err
	}
	if !st.Mode().IsRegular() {
		s.log.Error("index is not a regular file; moving it into quarantine", "file", idx, "type", st.Mode().Type().String())
		s.quarantine(dir, idx)
		return sum, false, fmt.Errorf("index %s: not a regular file (%v)", idx, st.Mode().Type())
	}
	if bound := indexBound(pcapSize); st.Size() > bound {
		return sum, false, fmt.Errorf("index %s: %d bytes, more than any index of a %d-byte pcap (%d); not read", idx, st.Size(), pcapSize, bound)
	}
	if sum, err = index.ReadSummary(idx); err != nil {
		return sum, false, err
	}
	if sum.DataEnd > pcapSize {
		return sum, true, fmt.Errorf("spool %s: %d bytes, shorter than the %d its index covers: cut short", path, pcapSize, sum.DataEnd)
	}
	if err := s.checkBelongs(path, sum); err != nil {
		return sum, false, err
	}
	return sum, false, nil
}

// indexBound is the largest index a pcap file of pcapSize bytes can have.
// A record takes at least 16 bytes of the pcap, and at most a few bytes of
// positions, a block entry and, after a damaged region, a hole block: well
// under four times its size; a flow record is smaller than the packet that
// starts it.
func indexBound(pcapSize int64) int64 {
	return min(4*max(pcapSize, 0)+1<<20, index.MaxFileSize)
}

// quarantine moves path, a spool file or whatever stands in its place, into
// dir's quarantine folder (created 0750), keeping its name (a number is
// appended if the folder has one of that name already), and reports
// whether it did. A rename moves a symbolic link or a directory itself:
// nothing is followed, nothing is deleted. Read-only, nothing is moved.
func (s *Spool) quarantine(dir, path string) bool {
	if s.cfg.ReadOnly {
		s.log.Warn("read-only: not moving into quarantine", "file", path)
		return false
	}
	q := filepath.Join(dir, quarantineDir)
	if err := os.Mkdir(q, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		s.log.Error("cannot create the quarantine folder; file left in place and not used", "file", path, "err", err)
		return false
	}
	// A symbolic link in its place would take the file out of the spool.
	if st, err := os.Lstat(q); err != nil || !st.IsDir() {
		s.log.Error("quarantine is not a directory; file left in place and not used", "file", path, "quarantine", q)
		return false
	}
	base := filepath.Base(path)
	dst := filepath.Join(q, base)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		}
		dst = filepath.Join(q, fmt.Sprintf("%s.%d", base, i))
	}
	if err := os.Rename(path, dst); err != nil {
		s.log.Error("cannot move into quarantine; file left in place and not used", "file", path, "err", err)
		return false
	}
	s.log.Warn("moved into quarantine", "file", path, "to", dst)
	s.ctr.filesQuarantined.Add(1)
	return true
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// openPcap opens a spool pcap file without following a symbolic link or
// blocking on a FIFO, and returns it with its size if it is a regular file.
func openPcap(path string, mode int) (*os.File, int64, error) {
	f, err := os.OpenFile(path, mode|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("spool %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%v)", st.Mode().Type())
	}
	if err != nil {
		return nil, 0, errors.Join(fmt.Errorf("spool %s: %w", path, err), f.Close())
	}
	return f, st.Size(), nil
}

// reindex rebuilds a spool file's index from its pcap, which is the source
// of truth: it indexes every plausible record (resync.go), cuts off a torn
// last record or a zero tail (what a crash in the middle of a write
// leaves), rewrites a damaged file header, and writes the sealed index.
// cutShort says the file was found shorter than its old index covered. If
// the index cannot be written (a full disk, something in its place), it
// returns the index with its encoding in unsaved, for the caller to write
// once the budget has made room: that must not keep stenod from starting.
func (s *Spool) reindex(path, stream string, start int64, cutShort bool) (r *index.Reader, unsaved []byte, err error) {
	mode := os.O_RDWR
	if s.cfg.ReadOnly {
		mode = os.O_RDONLY
	}
	f, size, err := openPcap(path, mode)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sums, err := readSums(path, size)
	if err != nil {
		s.log.Warn("sums journal unusable; records are checked by their framing alone", "file", path, "err", err)
	}
	res, err := scanRecords(f, size, start, sums)
	if errors.Is(err, errEmpty) {
		s.journaledLost(path, len(sums))
		return nil, nil, errEmpty
	}
	if err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", path, err)
	}
	s.logDamage(path, res)
	b := res.b
	if b.Summary().Packets == 0 {
		if res.headerOK && len(res.regions) == 0 {
			s.journaledLost(path, len(sums))
			return nil, nil, errEmpty
		}
		return nil, nil, errNoRecords
	}
	if !s.cfg.ReadOnly {
		// Read-only, the writer may be in the middle of this record.
		if res.cut >= 0 {
			s.log.Warn("cutting off torn or corrupt tail", "file", path, "offset", res.cut, "length", size-res.cut, "reason", res.why)
			if err := f.Truncate(res.cut); err != nil {
				return nil, nil, fmt.Errorf("spool %s: truncate at %d: %w", path, res.cut, err)
			}
		}
		if !res.headerOK {
			// The name says stenod wrote the file, and so what its
			// header was; the records read with it prove the rest.
			s.log.Warn("rewriting damaged pcap file header", "file", path, "offset", 0, "length", pcapio.PcapHeaderSize)
			if _, err := f.WriteAt(ourFileHeader(s.cfg.SnapLen, res.maxCap), 0); err != nil {
				return nil, nil, fmt.Errorf("spool %s: rewrite file header: %w", path, err)
			}
		}
	}
	if cutShort || !res.headerOK || len(res.regions) > 0 {
		s.ctr.filesRepaired.Add(1)
	}
	b.SetVisible(res.end)
	data := b.Encode(ifaceOf(stream), filepath.Base(path))
	if r, err = index.Decode(data); err != nil || s.cfg.ReadOnly {
		return r, nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if err := index.WriteFile(indexPath(path), data); errors.Is(err, unix.ENOSPC) {
		s.ctr.enospc.Add(1)
		return r, data, nil
	} else if err != nil {
		s.log.Error("rebuilt index not written; it is kept in memory", "file", path, "err", err)
		return r, data, nil
	}
	// The index holds the checksums now.
	if err := removeIfExists(sumsPath(path)); err != nil {
		s.log.Warn("sums journal not removed", "file", sumsPath(path), "err", err)
	}
	return r, nil, nil
}

// repairFileHeader rewrites the damaged file header of a sealed pcap whose
// index is intact: queries read records by offset and do not need it, but
// tcpdump and Wireshark, reading the file directly, do. It costs a 24-byte
// read per file at Open. Failures are logged: queries are not affected.
func (s *Spool) repairFileHeader(path string) {
	if s.cfg.ReadOnly {
		return
	}
	f, _, err := openPcap(path, os.O_RDWR)
	if err != nil {
		s.log.Error("pcap file header not checked", "file", path, "err", err)
		return
	}
	defer f.Close()
	var h [pcapio.PcapHeaderSize]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		s.log.Error("pcap file header not checked", "file", path, "err", err)
		return
	}
	if ok, _ := checkFileHeader(h[:]); ok {
		return
	}
	s.log.Warn("rewriting damaged pcap file header", "file", path, "offset", 0, "length", pcapio.PcapHeaderSize)
	// The records' lengths are unknown without reading them; the
	// largest a spool file can hold keeps every reader content.
	if _, err := f.WriteAt(ourFileHeader(s.cfg.SnapLen, pcapio.MaxPacket), 0); err != nil {
		s.log.Error("pcap file header not rewritten", "file", path, "err", err)
		return
	}
	s.ctr.filesRepaired.Add(1)
}

// logDamage logs and counts the damaged regions repair found in a file.
func (s *Spool) logDamage(path string, res *scanResult) {
	for _, g := range res.regions {
		s.log.Warn("damaged region in pcap file: no plausible record in it, so no packet indexed; its bytes are kept",
			"file", path, "offset", g.off, "length", g.n)
	}
	s.ctr.damagedRegions.Add(uint64(len(res.regions)))
	s.ctr.damagedBytes.Add(uint64(res.damagedBytes()))
	if res.missing > 0 {
		s.log.Warn("records the sums journal lists were not found intact: damaged, or cut off with the file's end",
			"file", path, "records", res.missing)
		s.ctr.recordsMissing.Add(uint64(res.missing))
	}
}

// journaledLost counts the n records a file's sums journal lists when
// nothing of the file is left but (part of) its header: they were written
// and are gone.
func (s *Spool) journaledLost(path string, n int) {
	if n == 0 {
		return
	}
	s.log.Warn("records the sums journal lists were not found: the file ends before them", "file", path, "records", n)
	s.ctr.recordsMissing.Add(uint64(n))
}

// ifaceOf returns the interface a stream was captured on ("eth1" of
// "eth1-q0"); an import's stream is its own interface name.
func ifaceOf(stream string) string {
	if i := strings.LastIndexByte(stream, '-'); i > 0 {
		return stream[:i]
	}
	return stream
}
