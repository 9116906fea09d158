package spool

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrInUse: another process has the spool directory open for writing.
var ErrInUse = errors.New("in use by another process (a running stenod, or an import)")

// lockDir takes the writer's lock on a spool directory: an exclusive flock
// on the directory itself, held until the returned file is closed (or the
// process dies, so a crash never leaves it behind). Two writers on one
// directory would each repair, rotate and delete the other's files; readers
// (Config.ReadOnly) take no lock and may run beside the writer.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s: %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	return f, nil
}
