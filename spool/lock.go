package spool

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/ifacelock"
)

// Errors of lockDir, to test with errors.Is.
var (
	// ErrInUse: another process has the spool directory open for writing.
	ErrInUse = errors.New("in use by another process (a running stenod, or an import)")
	// ErrSymlink: the spool directory is a symbolic link. A writer never
	// follows one (it would write wherever the link points, as whoever
	// started it: often root); configure the directory it points to.
	ErrSymlink = errors.New("a symbolic link: configure the directory it points to")
)

// lockDir takes the writer's lock on a spool directory: an exclusive flock
// on the directory itself, held until the returned file is closed (or the
// process dies, so a crash never leaves it behind). Two writers on one
// directory would each repair, rotate and delete the other's files; readers
// (Config.ReadOnly) take no lock and may run beside the writer.
//
// The directory is opened without following a symbolic link in its last
// element (ErrSymlink).
func lockDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) && isSymlink(dir) {
		return nil, fmt.Errorf("spool %s: %w", dir, ErrSymlink)
	}
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			if pid, cmdline := ifacelock.Holder(f); pid != 0 {
				return nil, fmt.Errorf("spool %s: %w: process %d (%s)", dir, ErrInUse, pid, cmdline)
			}
			return nil, fmt.Errorf("spool %s: %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	return f, nil
}

func isSymlink(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}
