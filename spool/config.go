package spool

import (
	"path/filepath"
	"time"

	"github.com/stenod/stenod/internal/fielderr"
	"github.com/stenod/stenod/pcapio"
)

// MaxSnapLen is the largest snap length a spool takes: the largest record
// pcapio reads (and so the largest a query reads back), enough for BIG TCP
// and GRO super-packets of up to 256 KiB.
const MaxSnapLen = pcapio.MaxPacket

// Config says where and how packets are stored.
type Config struct {
	// Dirs are the spool directories, typically one per disk. Streams are
	// spread over them round robin.
	Dirs []string
	// SnapLen is the most bytes kept of each packet; the original length is
	// recorded all the same.
	SnapLen int
	// RotateSize starts a new file when the active one would grow past it.
	RotateSize int64
	// RotateAge starts a new file when a packet is stamped this much later
	// than the active file's first packet.
	RotateAge time.Duration
	// MaxLiveIndex starts a new file when the active one's live index holds
	// this many bytes of memory (flow records, flow table, packet log); 0
	// means no bound. Rotation by size bounds it too, but a flood of flows
	// of one small packet each (a scan, spoofed sources) makes a live index
	// of about 160 bytes a packet: 2.2 GB for a 1 GiB file, per stream.
	MaxLiveIndex int64
	// WriteBuffer is how many bytes a Writer gathers before it writes them.
	// A Writer has two such buffers (one is written while the other
	// fills), each made large enough for a disk block and the largest
	// record.
	WriteBuffer int
	// MaxCachedIndexes bounds how many sealed indexes stay in memory.
	MaxCachedIndexes int
	// MaxBytes is the most bytes of spool files (pcap and index) one spool
	// directory may hold; 0 means no limit. The oldest files are deleted to
	// stay within it. It must leave room for a closed file beside each
	// active one: at least 2 × RotateSize.
	MaxBytes int64
	// MinFreePercent is the share of each spool directory's file system
	// that must stay available (statfs f_bavail); the oldest files are
	// deleted to keep it. 0 turns the floor off: then only a full disk
	// (ENOSPC) makes room.
	MinFreePercent float64
	// MaxHeldPercent is the largest share of a spool directory's file
	// system one query may hold in spool files deleted under it (which
	// stay allocated while it reads them); a query holding more is cut
	// off (ErrRevoked). 0: no such limit; a query is still cut off when
	// capture finds the disk full.
	MaxHeldPercent float64
	// MaxFiles is the most spool files (a pcap with its index counts once)
	// one spool directory may hold, active ones included; 0 means no limit.
	MaxFiles int
	// DirectIO writes full buffers with O_DIRECT, bypassing the page cache,
	// where the file system takes it (see Writer). It pays for bulk writes
	// such as stenod import (kernel time per packet ~130 instead of ~1000
	// ns); for live capture, which flushes small amounts every few
	// milliseconds to keep queries fresh, it cost more than it saved.
	DirectIO bool
	// ReadOnly opens a spool another process may be writing (stenod query
	// beside a running daemon): nothing is created, repaired or removed;
	// files without a sealed index are indexed in memory only.
	ReadOnly bool
	// TCPFlags keeps each flow's TCP flags (the OR over its packets) in
	// the live index, for the IPFIX export (index.LiveFlow.TCPFlags). Off,
	// the writer does not look at them: a packet costs nothing more.
	TCPFlags bool
}

// DefaultConfig returns settings that work as they are for a single spool
// directory (which the caller still has to name).
func DefaultConfig() Config {
	return Config{
		SnapLen:    65535,
		RotateSize: 1 << 30,
		RotateAge:  5 * time.Minute,
		// Above the 270 MB a 1 GiB file of 64-byte packets takes with
		// few flows; reached only with well over a million flows in a
		// file.
		MaxLiveIndex:     512 << 20,
		WriteBuffer:      1 << 20,
		MaxCachedIndexes: 512,
		// A tenth of the disk stays free: room for the file system to
		// keep its performance, and for whatever else shares it.
		MinFreePercent: 10,
		// Half the floor: a reader stuck on old files is cut off well
		// before it could make capture wait for the disk.
		MaxHeldPercent: 5,
	}
}

// Validate reports the first impossible setting; fielderr.Field(err)
// names the Config field.
func (c *Config) Validate() error {
	switch {
	case len(c.Dirs) == 0:
		return fielderr.Errorf("Dirs", "spool: no spool directory configured")
	case c.SnapLen < 64 || c.SnapLen > MaxSnapLen:
		return fielderr.Errorf("SnapLen", "spool: snap length %d outside [64, %d]", c.SnapLen, MaxSnapLen)
	case c.RotateSize < 1<<16:
		return fielderr.Errorf("RotateSize", "spool: rotate size %d below 64 KiB", c.RotateSize)
	case c.RotateAge < time.Second:
		return fielderr.Errorf("RotateAge", "spool: rotate age %v below 1s", c.RotateAge)
	case c.MaxLiveIndex < 0 || c.MaxLiveIndex > 0 && c.MaxLiveIndex < 1<<20:
		return fielderr.Errorf("MaxLiveIndex", "spool: max live index %d must be 0 (no bound) or at least 1 MiB", c.MaxLiveIndex)
	case c.WriteBuffer < 1<<12 || int64(c.WriteBuffer) > c.RotateSize:
		return fielderr.Errorf("WriteBuffer", "spool: write buffer %d outside [4096, rotate size]", c.WriteBuffer)
	case c.MaxCachedIndexes < 1:
		return fielderr.Errorf("MaxCachedIndexes", "spool: max cached indexes %d below 1", c.MaxCachedIndexes)
	case c.MaxBytes < 0 || c.MaxBytes > 0 && c.MaxBytes < 2*c.RotateSize:
		return fielderr.Errorf("MaxBytes", "spool: max bytes %d per directory must be 0 (no limit) or at least twice the rotate size %d", c.MaxBytes, c.RotateSize)
	case !(c.MinFreePercent >= 0 && c.MinFreePercent < 100): // also refuses NaN
		return fielderr.Errorf("MinFreePercent", "spool: min free percent %v outside [0, 100)", c.MinFreePercent)
	case !(c.MaxHeldPercent >= 0 && c.MaxHeldPercent <= 100):
		return fielderr.Errorf("MaxHeldPercent", "spool: max held percent %v outside [0, 100]", c.MaxHeldPercent)
	case c.MaxFiles < 0 || c.MaxFiles == 1:
		return fielderr.Errorf("MaxFiles", "spool: max files %d per directory must be 0 (no limit) or at least 2", c.MaxFiles)
	}
	seen := map[string]bool{}
	for _, d := range c.Dirs {
		k := filepath.Clean(d)
		if seen[k] {
			// Its budget would be counted twice and its files listed twice.
			return fielderr.Errorf("Dirs", "spool: directory %s listed twice", d)
		}
		seen[k] = true
	}
	return nil
}
