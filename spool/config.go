package spool

import (
	"errors"
	"fmt"
	"time"
)

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
	// WriteBuffer is how many bytes a Writer gathers before a write(2).
	WriteBuffer int
	// MaxCachedIndexes bounds how many sealed indexes stay in memory.
	MaxCachedIndexes int
	// ReadOnly opens a spool another process may be writing (stenod query
	// beside a running daemon): nothing is created, repaired or removed;
	// files without a sealed index are indexed in memory only.
	ReadOnly bool
}

// DefaultConfig returns settings that work as they are for a single spool
// directory (which the caller still has to name).
func DefaultConfig() Config {
	return Config{
		SnapLen:          65535,
		RotateSize:       1 << 30,
		RotateAge:        5 * time.Minute,
		WriteBuffer:      1 << 20,
		MaxCachedIndexes: 512,
	}
}

// Validate reports the first impossible setting.
func (c *Config) Validate() error {
	switch {
	case len(c.Dirs) == 0:
		return errors.New("spool: no spool directory configured")
	case c.SnapLen < 64 || c.SnapLen > 262144:
		return fmt.Errorf("spool: snap length %d outside [64, 262144]", c.SnapLen)
	case c.RotateSize < 1<<16:
		return fmt.Errorf("spool: rotate size %d below 64 KiB", c.RotateSize)
	case c.RotateAge < time.Second:
		return fmt.Errorf("spool: rotate age %v below 1s", c.RotateAge)
	case c.WriteBuffer < 1<<12 || int64(c.WriteBuffer) > c.RotateSize:
		return fmt.Errorf("spool: write buffer %d outside [4096, rotate size]", c.WriteBuffer)
	case c.MaxCachedIndexes < 1:
		return fmt.Errorf("spool: max cached indexes %d below 1", c.MaxCachedIndexes)
	}
	return nil
}
