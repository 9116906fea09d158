package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// scan lists a spool directory and repairs what a crash can leave behind:
// half-written temporary files are removed, a pcap file without a valid
// sealed index gets its torn last record cut off and its index rebuilt, a
// pcap file without a single packet is removed, and an index without its
// pcap file is removed.
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
		switch {
		case e.IsDir():
			continue
		case strings.HasPrefix(name, "."):
			if s.cfg.ReadOnly || !strings.HasSuffix(name, ".tmp") {
				continue
			}
			s.log.Info("removing temporary file of an interrupted run", "file", path)
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("spool %s: %w", path, err)
			}
			continue
		}
		start, stream, ok := parseName(name)
		if !ok {
			continue
		}
		pcaps[strings.TrimSuffix(name, pcapExt)] = true
		f := &File{Path: path, Dir: dir, Stream: stream, Start: start}
		sum, err := index.ReadSummary(indexPath(path))
		if err == nil {
			err = s.checkBelongs(path, sum)
		}
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("index unreadable, rebuilding it", "file", path, "err", err)
			}
			r, unsaved, err := s.reindex(path, stream)
			if errors.Is(err, errEmpty) && s.cfg.ReadOnly {
				continue
			}
			if errors.Is(err, errEmpty) {
				s.log.Info("removing spool file without packets", "file", path)
				if err := errors.Join(os.Remove(path), removeIfExists(indexPath(path))); err != nil {
					return nil, fmt.Errorf("spool %s: %w", path, err)
				}
				continue
			}
			if err != nil {
				return nil, err
			}
			sum = r.Summary()
			f.unsaved = unsaved
		}
		f.sum = sum
		files = append(files, f)
	}
	for _, e := range ents {
		name := e.Name()
		if s.cfg.ReadOnly {
			break
		}
		if strings.HasSuffix(name, indexExt) && !strings.HasPrefix(name, ".") && !pcaps[strings.TrimSuffix(name, indexExt)] {
			path := filepath.Join(dir, name)
			s.log.Info("removing index without its pcap file", "file", path)
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("spool %s: %w", path, err)
			}
		}
	}
	return files, nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

var errEmpty = errors.New("no packets")

// reindex rebuilds a spool file's index from its pcap, which is the source of
// truth: it reads every record, cuts off a torn last record (a crash in the
// middle of a write), and writes the sealed index. If the disk is too full
// for the index, it returns the index with its encoding in unsaved, for the
// caller to write once the budget has made room: a full disk must not keep
// stenod from starting.
func (s *Spool) reindex(path, stream string) (r *index.Reader, unsaved []byte, err error) {
	mode := os.O_RDWR
	if s.cfg.ReadOnly {
		mode = os.O_RDONLY
	}
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", path, err)
	}
	defer f.Close()
	b, end, tail, err := indexRecords(f)
	if err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if tail != nil && !s.cfg.ReadOnly {
		// Read-only, the writer may be in the middle of this record.
		s.log.Warn("cutting off torn or corrupt tail", "file", path, "offset", end, "err", tail)
		if err := f.Truncate(end); err != nil {
			return nil, nil, fmt.Errorf("spool %s: truncate at %d: %w", path, end, err)
		}
	}
	if b.Summary().Packets == 0 {
		return nil, nil, errEmpty
	}
	b.SetVisible(end)
	data := b.Encode(ifaceOf(stream))
	if r, err = index.Decode(data); err != nil || s.cfg.ReadOnly {
		return r, nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if err := index.WriteFile(indexPath(path), data); errors.Is(err, syscall.ENOSPC) {
		s.ctr.enospc.Add(1)
		return r, data, nil
	} else if err != nil {
		return nil, nil, err
	}
	return r, nil, nil
}

// indexRecords indexes every whole record of the pcap file read from r.
// end is the offset after the last whole record; tail is the error of the
// torn or corrupt record found there, nil if the file ends cleanly. A file
// without a whole file header has nothing in it: errEmpty.
func indexRecords(r io.Reader) (b *index.Builder, end int64, tail error, err error) {
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return nil, 0, nil, errEmpty
	}
	b = index.NewBuilder(0)
	var p pcapio.Packet
	var k flow.Key
	end = int64(pcapio.PcapHeaderSize)
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return b, end, nil, nil
		}
		if err != nil {
			var fe *pcapio.FormatError
			if !errors.As(err, &fe) {
				return nil, 0, nil, err
			}
			return b, fe.Offset, err, nil
		}
		if p.OrigLen == 0 {
			// An all-zero record: a crash can leave zero-filled blocks past
			// the data (delayed allocation); no packet has length 0, so this
			// is where the data ends.
			return b, p.Offset, fmt.Errorf("offset %d: zero-length record (zero-filled tail)", p.Offset), nil
		}
		flow.Parse(p.Data, &k)
		b.Add(&k, p.Offset, p.Timestamp, p.OrigLen, pcapio.RecordSumParts(p.Header, p.Data))
		end = p.Offset + pcapio.RecordHeaderSize + int64(p.CapLen)
	}
}

// ifaceOf returns the interface a stream was captured on ("eth1" of
// "eth1-q0"); an import's stream is its own interface name.
func ifaceOf(stream string) string {
	if i := strings.LastIndexByte(stream, '-'); i > 0 {
		return stream[:i]
	}
	return stream
}
