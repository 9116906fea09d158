package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/config"
)

// Least privilege (docs/operations.md, "User and capabilities").
//
// Everything that needs privileges happens at start-up: loading and
// attaching the XDP program, pinning it, creating the AF_XDP or AF_PACKET
// sockets and registering their memory, binding the API's listener. Once
// that is done the running daemon needs no capability at all:
//
//   - reading the sockets, their rings and the BPF maps uses descriptors it
//     already holds (the bpf(2) commands on an open map or link check no
//     capability);
//   - detaching the XDP link at shutdown is BPF_LINK_DETACH on the link's
//     descriptor, which checks none either;
//   - removing the pins is unlink(2) in PinRoot/<iface>/, which the user
//     owns from the drop on;
//   - spool files are written in directories the user owns;
//   - the API's listener is already bound.
//
// So, started as root, stenod ends up as the configured user with empty
// permitted, effective, inheritable, ambient and bounding sets and
// no_new_privs set. Started as that user with ambient capabilities (the
// systemd unit), it clears its capabilities the same way; the bounding set
// is the unit's CapabilityBoundingSet, as dropping it needs CAP_SETPCAP.

// dropper holds what the drop needs, resolved before anything is set up so
// that a missing user is reported before capture starts.
type dropper struct {
	cfg      config.Config
	log      *slog.Logger
	root     bool // started as root: switch users
	uid, gid int
	groups   []int
	name     string
}

// preparePrivileges resolves cfg.User and, when started as root, creates
// the spool directories owned by that user. It returns nil when there is
// nothing to drop: not root and no capabilities, or no user to become.
func preparePrivileges(cfg config.Config, log *slog.Logger) (*dropper, error) {
	d := &dropper{cfg: cfg, log: log, root: os.Geteuid() == 0}
	if !d.root {
		if !hasCapabilities() {
			return nil, nil
		}
		return d, nil
	}
	if cfg.User == "" {
		log.Warn("running as root: no user configured to drop to (user, --user)")
		return nil, nil
	}
	u, err := user.Lookup(cfg.User)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) && cfg.User == config.DefaultUser {
			log.Warn("running as root: user "+cfg.User+" does not exist; create it to run with least privilege "+
				"(useradd --system --user-group --home-dir /var/lib/stenod --shell /usr/sbin/nologin "+cfg.User+")", "err", err)
			return nil, nil
		}
		return nil, fmt.Errorf("user %s: %w", cfg.User, err)
	}
	d.name = u.Username
	if d.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", cfg.User, u.Uid, err)
	}
	if d.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", cfg.User, u.Gid, err)
	}
	if d.uid == 0 {
		return nil, nil // "root": nothing to drop to
	}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			d.groups = append(d.groups, n)
		}
	}
	for _, dir := range cfg.Spool.Dirs {
		if err := d.makeDir(dir); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// stateDir is the parent of the default spool directories: when stenod
// created it as root before, it hands it to the user.
var stateDir = filepath.Dir(config.DefaultSpoolDir)

// makeDir creates dir and its missing parents owned by the user, and checks
// that the user can reach it through the parents that were there.
func (d *dropper) makeDir(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("spool directory: %w", err)
	}
	for _, p := range append(missing, stateDir, dir) {
		if p == stateDir && !strings.HasPrefix(dir, stateDir+"/") {
			continue
		}
		if err := os.Lchown(p, d.uid, d.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool directory: %w", err)
		}
	}
	// Set-group-ID: a file created as root in the moment between the
	// hand-over and the user switch (capture is running) still belongs to
	// the user's group, which may read it (0640). Through a descriptor of
	// the directory itself, never through a symbolic link the user may
	// have put in its place.
	fd, err := openDirNoFollow(dir)
	if err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777|unix.S_ISGID); err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if !d.canSearch(p) {
			return fmt.Errorf("spool directory %s: user %s cannot reach it: %s does not let it through "+
				"(chmod o+x %s, or chown it to %s)", dir, d.name, p, p, d.name)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// canSearch reports whether the user may traverse directory p.
func (d *dropper) canSearch(p string) bool {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return false
	}
	switch {
	case int(st.Uid) == d.uid:
		return st.Mode&0o100 != 0
	case d.inGroup(int(st.Gid)):
		return st.Mode&0o010 != 0
	}
	return st.Mode&0o001 != 0
}

func (d *dropper) inGroup(gid int) bool {
	if gid == d.gid {
		return true
	}
	for _, g := range d.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// socketOwner is who the API's Unix socket is given to: the user a root
// start drops to, so that the unprivileged daemon can remove the socket
// when it stops; otherwise whoever creates it.
func (d *dropper) socketOwner() api.SocketOwner {
	if d == nil || !d.root {
		return api.KeepOwner()
	}
	return api.SocketOwner{UID: d.uid, GID: d.gid}
}

// drop switches to cfg.User and clears every capability, once
// capture and the API listener are set up. See the comment at the top.
func (d *dropper) drop() error {
	if d == nil {
		return nil
	}
	if !d.root {
		return d.clearCapabilities()
	}
	// The user takes over the spool (files created as root at start-up:
	// the active files, repaired indexes) and the pin directories.
	for _, dir := range d.cfg.Spool.Dirs {
		if err := chownTree(dir, d.uid, d.gid); err != nil {
			return fmt.Errorf("drop privileges: %w", err)
		}
	}
	if err := d.handOverPins(); err != nil {
		return fmt.Errorf("drop privileges: %w", err)
	}

	allThreads := true
	// The bounding set needs CAP_SETPCAP: before the user switch.
	if err := dropBoundingSet(); errors.Is(err, unix.ENOTSUP) {
		allThreads = false
	} else if err != nil {
		return fmt.Errorf("drop privileges: %w", err)
	}
	// Go applies these to every thread of the process; from root to a
	// non-root uid the kernel clears the permitted, effective and ambient
	// capability sets. They must be the syscall package's: unix.Setgroups
	// changes the calling thread only.
	if err := syscall.Setgroups(d.groups); err != nil {
		return fmt.Errorf("drop privileges: setgroups: %w", err)
	}
	if err := syscall.Setgid(d.gid); err != nil {
		return fmt.Errorf("drop privileges: setgid %d: %w", d.gid, err)
	}
	if err := syscall.Setuid(d.uid); err != nil {
		return fmt.Errorf("drop privileges: setuid %d: %w", d.uid, err)
	}
	if allThreads {
		if err := clearCapSets(); err != nil {
			return fmt.Errorf("drop privileges: %w", err)
		}
		if err := allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
			return fmt.Errorf("drop privileges: no_new_privs: %w", err)
		}
	} else {
		d.log.Warn("built with cgo: the capability bounding set and no_new_privs stay as they were (build with CGO_ENABLED=0)")
	}
	d.log.Info("dropped privileges", "user", d.name, "uid", d.uid, "gid", d.gid, "capabilities", "none")
	return nil
}

// clearCapabilities drops the capabilities a non-root start was given
// (AmbientCapabilities of the systemd unit) from every thread.
func (d *dropper) clearCapabilities() error {
	if err := allThreadsPrctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			d.log.Warn("built with cgo: capabilities cannot be cleared on every thread and stay (build with CGO_ENABLED=0)")
			return nil
		}
		return fmt.Errorf("drop capabilities: ambient: %w", err)
	}
	if err := dropBoundingSet(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	if err := clearCapSets(); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	if err := allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return fmt.Errorf("drop capabilities: no_new_privs: %w", err)
	}
	d.log.Info("dropped capabilities", "uid", os.Getuid(), "capabilities", "none")
	return nil
}

// handOverPins gives the user the pin directories, so that it can remove
// its pins at shutdown, and makes sure it can reach them.
func (d *dropper) handOverPins() error {
	root := d.cfg.Capture.PinRoot
	if root == "" {
		return nil
	}
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil // no XDP program (AF_PACKET capture)
	}
	for _, iface := range d.cfg.Capture.Interfaces {
		if err := os.Lchown(filepath.Join(root, iface), d.uid, d.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pin directory: %w", err)
		}
	}
	// The root directory itself, unless it is the bpffs mount point: the
	// interface directories are removed from it.
	if !isMountPoint(root) {
		if err := os.Lchown(root, d.uid, d.gid); err != nil {
			return fmt.Errorf("pin directory: %w", err)
		}
	}
	// systemd mounts /sys/fs/bpf with mode 0700: let the user through
	// (search only: the pins themselves stay 0600 root).
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		var fsst unix.Statfs_t
		if err := unix.Statfs(p, &fsst); err != nil || fsst.Type != unix.BPF_FS_MAGIC {
			break
		}
		if !d.canSearch(p) {
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			mode := st.Mode().Perm() | 0o001
			if err := os.Chmod(p, mode|st.Mode()&os.ModeSticky); err != nil {
				return fmt.Errorf("let %s through %s: %w", d.name, p, err)
			}
			d.log.Info("made the bpffs directory traversable, so the unprivileged daemon can remove its pins", "dir", p, "mode", fmt.Sprintf("%#o", mode))
		}
		if isMountPoint(p) || filepath.Dir(p) == p {
			break
		}
	}
	return nil
}

func isMountPoint(p string) bool {
	var a, b unix.Stat_t
	if unix.Stat(p, &a) != nil || unix.Stat(filepath.Dir(p), &b) != nil {
		return false
	}
	return a.Dev != b.Dev || filepath.Dir(p) == p
}

// errSymlinkDir: a spool directory is a symbolic link.
var errSymlinkDir = errors.New("a symbolic link: configure the directory it points to")

// openDirNoFollow opens directory dir without following a symbolic link in
// its last element (errSymlinkDir).
func openDirNoFollow(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return -1, errSymlinkDir
		}
	}
	return fd, err
}

// maxChownDepth bounds how deep chownTree descends: a spool directory has
// no subdirectories of stenod's.
const maxChownDepth = 16

// chownTree gives dir and everything below it to uid:gid, as root, in a
// tree the user may have written: it never follows a symbolic link (it
// changes the link itself), and it walks through directory descriptors
// (openat, fchownat), so a directory swapped for a link during the walk
// leads nowhere outside the tree.
func chownTree(dir string, uid, gid int) error {
	fd, err := openDirNoFollow(dir)
	if err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	return chownAt(fd, dir, uid, gid, 0)
}

// chownAt gives the directory open as fd (path, for messages) and what is
// below it to uid:gid, and closes fd.
func chownAt(fd int, path string, uid, gid, depth int) error {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if depth > maxChownDepth {
		return fmt.Errorf("chown %s: deeper than %d directories", path, maxChownDepth)
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	ents, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	for _, e := range ents {
		p := filepath.Join(path, e.Name())
		if e.IsDir() {
			sub, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			switch {
			case err == nil:
				if err := chownAt(sub, p, uid, gid, depth+1); err != nil {
					return err
				}
				continue
			case errors.Is(err, unix.ENOENT):
				continue // removed meanwhile
			case !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR):
				return fmt.Errorf("chown %s: %w", p, err)
			}
			// Swapped for a link or a file meanwhile: change it, not
			// what it points to.
		}
		if err := unix.Fchownat(fd, e.Name(), uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

// allThreadsPrctl runs prctl on every thread of the process (only the
// syscall package can: AllThreadsSyscall). It returns ENOTSUP in a binary
// built with cgo.
func allThreadsPrctl(option, arg2, arg3 uintptr) error {
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, option, arg2, arg3); errno != 0 {
		return errno
	}
	return nil
}

// dropBoundingSet empties the bounding set of every thread.
func dropBoundingSet() error {
	for c := 0; c <= lastCap(); c++ {
		if err := allThreadsPrctl(unix.PR_CAPBSET_DROP, uintptr(c), 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // beyond what this kernel knows
			}
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// clearCapSets empties the permitted, effective and inheritable sets of
// every thread.
func clearCapSets() error {
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := new([2]unix.CapUserData)
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(data)
	if errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	return nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 63
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 63
	}
	return n
}

// hasCapabilities reports whether the process holds any capability in its
// permitted or ambient set.
func hasCapabilities() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && (k == "CapPrm" || k == "CapAmb") {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && n != 0 {
				return true
			}
		}
	}
	return false
}
