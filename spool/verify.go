package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// checkEnds reads the first and the last record of pcap and checks them
// against the checksums its index keeps of them. If neither matches and the
// file does not have the length the index covers, the index describes
// other bytes: the pcap or the index was swapped, replaced or copied from
// another file, and start-up rebuilds the index from the pcap. Anything
// less is damage to some records (a file of the right length whose end
// records are damaged, one end gone with a file cut short): the index is
// kept, and queries skip the damaged records by their checksums, where a
// rebuilt index would take them for packets. It costs two reads per file.
func checkEnds(pcap *os.File, sum index.Summary) error {
	if sum.Packets == 0 || sum.Version < 2 {
		// Version 1 kept no checksums; it is rebuilt when a query
		// first needs it.
		return nil
	}
	first := recordMatches(pcap, pcapio.PcapHeaderSize, sum.FirstSum, sum.DataEnd)
	if first == nil || recordMatches(pcap, sum.LastOffset, sum.LastSum, sum.DataEnd) == nil {
		return nil
	}
	fi, err := pcap.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == sum.DataEnd || errors.Is(first, io.EOF) || errors.Is(first, io.ErrUnexpectedEOF) {
		// Damaged ends, or a file cut short before its first record
		// ends: no other file's bytes are there.
		return nil
	}
	return fmt.Errorf("%d bytes where its index covers %d, and neither its first nor its last record is the one the index describes (%v): the index is another file's", fi.Size(), sum.DataEnd, first)
}

// recordMatches reads the record at off, which must end by end, and checks
// it against sum.
func recordMatches(pcap *os.File, off int64, sum uint32, end int64) error {
	var h [pcapio.RecordHeaderSize]byte
	if _, err := pcap.ReadAt(h[:], off); err != nil {
		return fmt.Errorf("read the record at %d: %w", off, err)
	}
	n := pcapio.ParseRecordHeader(h[:]).CapLen
	if n > pcapio.MaxPacket || off+int64(pcapio.RecordHeaderSize+n) > end {
		return fmt.Errorf("the record at %d: length %d does not fit the index", off, n)
	}
	data := make([]byte, n)
	if _, err := pcap.ReadAt(data, off+pcapio.RecordHeaderSize); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read the record at %d: %w", off, err)
	}
	if got := pcapio.RecordSumParts(h[:], data); got != sum {
		return fmt.Errorf("the record at %d: checksum %08x, the index says %08x", off, got, sum)
	}
	return nil
}

// duplicates returns the files of files that are copies of another one:
// their index was written for another file's name (Summary.NameHash), and
// that file is here with the same packets (first and last records,
// packets, bytes, time range and length). Answering both would return
// every packet of them twice. Identical files whose indexes name
// themselves (the same capture imported twice) are both kept: that is
// what was stored.
func duplicates(files []*File) []*File {
	type identity struct {
		first, last, end  int64
		packets, bytes    uint64
		firstSum, lastSum uint32
		lastOff           int64
	}
	groups := map[identity][]*File{}
	for _, f := range files {
		s := f.sum
		if s.Packets == 0 {
			continue
		}
		id := identity{s.First, s.Last, s.DataEnd, s.Packets, s.Bytes, s.FirstSum, s.LastSum, s.LastOffset}
		groups[id] = append(groups[id], f)
	}
	var out []*File
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		names := map[uint64]bool{}
		for _, f := range g {
			names[index.NameHash(filepath.Base(f.Path))] = true
		}
		for _, f := range g {
			if h := f.sum.NameHash; h != 0 && h != index.NameHash(filepath.Base(f.Path)) && names[h] {
				out = append(out, f)
			}
		}
	}
	return out
}

// checkBelongs is checkEnds of the pcap at path.
func (s *Spool) checkBelongs(path string, sum index.Summary) error {
	f, _, err := openPcap(path, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := checkEnds(f, sum); err != nil {
		return fmt.Errorf("spool %s: %w", path, err)
	}
	return nil
}
