package index

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Encode returns the sealed index file contents for everything the Builder
// has indexed up to its visible end. The Builder should receive no more
// packets (the writer has moved to a new file), but concurrent readers are fine.
func (b *Builder) Encode(iface string) []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	sum := b.sum
	flows := make([]Flow, len(b.flows))
	for i := range b.flows {
		flows[i] = b.flows[i].Flow
	}
	if sum.Packets == 0 {
		sum.First, sum.Last = 0, 0
	}
	return encode(sum, iface, b.blocks, flows, func(dst []int64, i int) []int64 {
		return b.appendOffsets(dst, i, math.MaxInt64)
	})
}

// WriteFile writes data to path atomically and durably: to a hidden
// temporary file in the same directory, fsynced, renamed into place, and the
// directory fsynced, so a crash leaves either no index or a whole one.
func WriteFile(path string, data []byte) (err error) {
	dir, name := filepath.Split(path)
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write index %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return errors.Join(fmt.Errorf("write index %s: %w", tmp, err), f.Close())
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("sync index %s: %w", tmp, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename index %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return errors.Join(d.Sync(), d.Close())
}
