package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("index unreadable, rebuilding it", "file", path, "err", err)
			}
			r, err := s.reindex(path, stream)
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
// middle of a write), and writes the sealed index.
func (s *Spool) reindex(path, stream string) (*index.Reader, error) {
	mode := os.O_RDWR
	if s.cfg.ReadOnly {
		mode = os.O_RDONLY
	}
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	defer f.Close()
	rd, err := pcapio.NewReader(f)
	if err != nil {
		// Not even a whole file header: nothing was stored in it.
		return nil, errEmpty
	}
	b := index.NewBuilder(0)
	var p pcapio.Packet
	var k flow.Key
	end := int64(pcapio.PcapHeaderSize)
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			var fe *pcapio.FormatError
			if !errors.As(err, &fe) {
				return nil, fmt.Errorf("spool %s: %w", path, err)
			}
			end = fe.Offset
			if s.cfg.ReadOnly {
				// The writer may be in the middle of this record.
				break
			}
			s.log.Warn("cutting off torn or corrupt tail", "file", path, "offset", fe.Offset, "err", err)
			if err := f.Truncate(fe.Offset); err != nil {
				return nil, fmt.Errorf("spool %s: truncate at %d: %w", path, fe.Offset, err)
			}
			break
		}
		flow.Parse(p.Data, &k)
		b.Add(&k, p.Offset, p.Timestamp, p.OrigLen)
		end = p.Offset + pcapio.RecordHeaderSize + int64(p.CapLen)
	}
	if b.Summary().Packets == 0 {
		return nil, errEmpty
	}
	b.SetVisible(end)
	iface := stream
	if i := strings.LastIndexByte(stream, '-'); i > 0 {
		iface = stream[:i]
	}
	data := b.Encode(iface)
	if s.cfg.ReadOnly {
		return index.Decode(data)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if err := index.WriteFile(indexPath(path), data); err != nil {
		return nil, err
	}
	return index.Decode(data)
}
