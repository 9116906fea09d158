package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/ifacelock"
	"github.com/stenod/stenod/spool"
)

// Opening the spool at start-up, as root, safely.
//
// The spool directories belong to the user the daemon drops to, so whoever
// runs as that user (the daemon itself, were it ever compromised) may put
// anything in them, symbolic links included. Root must not follow such a
// link: repairing a torn spool file truncates it, rebuilding an index
// writes one. So, started as root with a user to drop to, stenod
//
//   - gives everything in the spool directories to the user first
//     (chownTree: no link is followed), so the user can repair what an
//     earlier run as root left, unless another writer holds a directory;
//   - removes symbolic links named like spool files (stenod never creates
//     one);
//   - opens, repairs and indexes the spool with the user's file-system
//     identity (fsuid, fsgid and groups; the other credentials stay root's
//     for capture): the kernel itself then refuses what the user could not
//     do, wherever a link points;
//   - checks, as the user, that it can create files in every spool
//     directory, so a spool the daemon could not write after the drop is
//     an error at start, not packets lost later while /healthz says ok.

// openSpool opens the spool for writing, as described above. d may be nil
// (nothing to drop: the spool is opened as the process is).
func (d *dropper) openSpool(cfg spool.Config, log *slog.Logger) (*spool.Spool, error) {
	if d != nil && d.root {
		for _, dir := range cfg.Dirs {
			if err := handOverSpoolDir(dir, d.uid, d.gid); err != nil {
				return nil, err
			}
		}
	}
	var sp *spool.Spool
	err := d.asUser(log, func(asUser bool) error {
		for _, dir := range cfg.Dirs {
			if err := removeSpoolLinks(dir, log); err != nil {
				return err
			}
		}
		var err error
		if sp, err = spool.Open(cfg, log); err != nil {
			return err
		}
		for _, dir := range cfg.Dirs {
			if err := d.checkWritable(dir, asUser); err != nil {
				return errors.Join(err, sp.Close())
			}
		}
		return nil
	})
	return sp, err
}

// handOverSpoolDir gives dir and its files to uid:gid (chownTree), unless
// another writer holds the directory (spool.ErrInUse: then spool.Open
// refuses it anyway, and its files are left alone).
func handOverSpoolDir(dir string, uid, gid int) error {
	fd, err := openDirNoFollow(dir)
	if err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		if pid, cmdline := ifacelock.Holder(f); pid != 0 {
			return fmt.Errorf("spool %s: %w: process %d (%s)", dir, spool.ErrInUse, pid, cmdline)
		}
		return fmt.Errorf("spool %s: %w", dir, spool.ErrInUse)
	} else if err != nil {
		return fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	// Released when f is closed, for spool.Open to take.
	if err := chownTree(dir, uid, gid); err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	return nil
}

// asUser runs f with the file-system identity of the user the daemon will
// run as (f's argument true), when started as root with a user to drop to;
// otherwise, and in a binary built with cgo (the identity can only be
// switched on every thread without cgo), as the process is (false).
func (d *dropper) asUser(log *slog.Logger, f func(asUser bool) error) (err error) {
	if d == nil || !d.root {
		return f(false)
	}
	// Probe: a cgo binary cannot run a system call on every thread.
	if err := allThreadsSetfs(unix.SYS_SETFSGID, 0); errors.Is(err, unix.ENOTSUP) {
		log.Warn("built with cgo: the spool is opened as root, not as " + d.name + " (build with CGO_ENABLED=0)")
		return f(false)
	} else if err != nil {
		return fmt.Errorf("switch to %s to open the spool: %w", d.name, err)
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("switch to %s to open the spool: %w", d.name, err)
	}
	// syscall.Setgroups, not unix.Setgroups: Go's sets the groups of every
	// thread, x/sys/unix's those of the calling thread only.
	if err := syscall.Setgroups(d.groups); err != nil {
		return fmt.Errorf("switch to %s to open the spool: setgroups: %w", d.name, err)
	}
	defer func() {
		if rerr := syscall.Setgroups(groups); rerr != nil {
			err = errors.Join(err, fmt.Errorf("back from %s: setgroups: %w", d.name, rerr))
		}
	}()
	if err := allThreadsSetfs(unix.SYS_SETFSGID, d.gid); err != nil {
		return fmt.Errorf("switch to %s to open the spool: %w", d.name, err)
	}
	defer func() {
		if rerr := allThreadsSetfs(unix.SYS_SETFSGID, 0); rerr != nil {
			err = errors.Join(err, fmt.Errorf("back from %s: %w", d.name, rerr))
		}
	}()
	if err := allThreadsSetfs(unix.SYS_SETFSUID, d.uid); err != nil {
		return fmt.Errorf("switch to %s to open the spool: %w", d.name, err)
	}
	defer func() {
		if rerr := allThreadsSetfs(unix.SYS_SETFSUID, 0); rerr != nil {
			err = errors.Join(err, fmt.Errorf("back from %s: %w", d.name, rerr))
		}
	}()
	return f(true)
}

// allThreadsSetfs sets the file-system uid or gid (nr: SYS_SETFSUID or
// SYS_SETFSGID) of every thread to id and checks that it took: the system
// call reports no error, only the previous id. It returns ENOTSUP in a
// binary built with cgo. Only the syscall package can run a system call
// on every thread (AllThreadsSyscall).
func allThreadsSetfs(nr uintptr, id int) error {
	if _, _, errno := syscall.AllThreadsSyscall(nr, uintptr(id), 0, 0); errno != 0 {
		return errno
	}
	// An invalid id (-1) changes nothing and returns the current one.
	cur, _, errno := syscall.AllThreadsSyscall(nr, uintptr(^uint32(0)), 0, 0)
	if errno != 0 {
		return errno
	}
	if int(cur) != id {
		name := "setfsuid"
		if nr == unix.SYS_SETFSGID {
			name = "setfsgid"
		}
		return fmt.Errorf("%s(%d): still %d", name, id, cur)
	}
	return nil
}

// checkWritable creates and removes a file in dir, as the user when asUser
// (else as the process is, and by the mode bits for the user to drop to).
func (d *dropper) checkWritable(dir string, asUser bool) error {
	who := "stenod"
	switch {
	case d != nil && d.name != "":
		who = "user " + d.name
	case d == nil || !d.root:
		who = "uid " + strconv.Itoa(os.Getuid())
	}
	fail := func(err error) error {
		return fmt.Errorf("spool directory %s: %s cannot create files in it: %w (it needs to own it and write it: chown, chmod u+rwx; "+
			"or a writable file system)", dir, who, err)
	}
	fd, err := openDirNoFollow(dir)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(fd)
	// Named like an interrupted run's temporary file: removed at the next
	// start should it ever be left behind.
	name := ".stenod-write-check-" + strconv.Itoa(os.Getpid()) + ".tmp"
	f, err := unix.Openat(fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		// Full: the disk budget makes room; full is no reason not to start.
	case err != nil:
		return fail(err)
	default:
		unix.Close(f)
		if err := unix.Unlinkat(fd, name, 0); err != nil {
			return fail(err)
		}
	}
	if d != nil && d.root && !asUser {
		// The file above was created as root: look at the bits.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(err)
		}
		if int(st.Uid) != d.uid || st.Mode&0o300 != 0o300 {
			return fail(fmt.Errorf("owner %d, mode %#o", st.Uid, st.Mode&0o7777))
		}
	}
	return nil
}

// removeSpoolLinks removes the symbolic links in dir named like the files
// stenod keeps there (pcap files, indexes, temporary files): stenod never
// creates one, and repairing through one would write wherever it points.
func removeSpoolLinks(dir string, log *slog.Logger) error {
	fd, err := openDirNoFollow(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil // created by spool.Open
	}
	if err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if e.Type()&os.ModeSymlink == 0 || !(strings.HasSuffix(name, ".pcap") || strings.HasSuffix(name, ".idx") || strings.HasSuffix(name, ".tmp")) {
			continue
		}
		target, _ := os.Readlink(filepath.Join(dir, name))
		if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("spool directory %s: remove symbolic link %s: %w", dir, name, err)
		}
		log.Warn("removed a symbolic link from the spool: stenod never creates one, and following it would write outside the spool",
			"link", filepath.Join(dir, name), "target", target)
	}
	return nil
}
