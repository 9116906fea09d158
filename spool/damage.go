package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Damaged is how a reader reports that n records of f were skipped because
// they are not what f's index says (cause is the first of them). The records
// are counted (Counters.DamagedRecordsSkipped) and logged. If the file is
// shorter than its index covers (cut short after it was sealed), f's index
// is rebuilt from what the pcap still holds, in the background and once at
// a time, so that later queries find an index that agrees with the file:
// the records that are gone are not asked for again.
func (s *Spool) Damaged(f *File, n int64, cause error) {
	if n <= 0 {
		return
	}
	s.ctr.damagedSkipped.Add(uint64(n))
	s.log.Warn("damaged records skipped by a query", "file", f.Path, "records", n, "first", cause)
	size := fileSize(f.Path) // a system call: not under f.mu
	f.mu.Lock()
	if f.repairing || f.deleted || f.live != nil || size >= f.sum.DataEnd {
		f.mu.Unlock()
		return
	}
	f.repairing = true
	f.mu.Unlock()
	s.sealing.Add(1)
	go func() {
		defer s.sealing.Done()
		err := s.reindexShort(f)
		f.mu.Lock()
		f.repairing = false
		f.mu.Unlock()
		if err != nil {
			s.log.Error("re-indexing a spool file cut short failed", "file", f.Path, "err", err)
		}
	}()
}

// reindexShort rebuilds the index of f, a sealed file cut short, from its
// pcap, replaces the cached index and drops the mapping, which covers bytes
// the file no longer has.
func (s *Spool) reindexShort(f *File) error {
	pcap, size, err := openPcap(f.Path, os.O_RDONLY)
	if errors.Is(err, os.ErrNotExist) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	defer pcap.Close()
	if size >= f.Summary().DataEnd {
		return nil // repaired already
	}
	s.ctr.filesRepaired.Add(1)
	r, err := s.rebuild(f, pcap, fmt.Errorf("spool %s: %d bytes, its index covers %d: %w", f.Path, size, f.Summary().DataEnd, io.ErrUnexpectedEOF))
	if err != nil {
		return err
	}
	s.mu.Lock()
	f.mu.Lock()
	var m *mapping
	if !f.deleted {
		f.sealed, f.sum, f.iface = r, r.Summary(), r.Interface()
		m = f.takeMapping()
	}
	f.mu.Unlock()
	s.mu.Unlock()
	s.dropMapping(m, f)
	return nil
}
