//go:build linux

// Package ifacelock makes sure at most one stenod captures an interface.
//
// A sensor holds an exclusive flock(2) on Dir/<iface>.lock for as long as
// it runs. The kernel releases the lock when the process exits, however it
// exits (kill -9 included), so a lock left by a dead process is no lock: the
// next sensor takes it without any clean-up. The holder writes its pid into
// the file for people (cat /run/stenod/iface/eth0.lock), and once its API
// listens, the API's address on a second line ("api unix:/run/stenod/
// stenod.sock", SetAPI), so that stenod status finds every running sensor
// and asks it for its counters (Held). A refused sensor learns the holder
// from /proc/locks, which the kernel keeps, and falls back to the pid in the
// file. What a file says counts only while its lock is held.
//
// The lock must be taken before anything of the interface is touched (pins,
// XDP link, rings, spool): a second sensor that went ahead would detach the
// first one's XDP program, which then captures nothing while its /healthz
// says ok.
//
// Lock files are never removed: removing a lock file races with a process
// that opened it and is about to lock it. The directory and the files are
// opened without following symbolic links; a symbolic link where a lock file
// should be is removed and replaced (only someone allowed to write the
// directory can put it there, and a link is never a lock).
//
// Ownership: Acquire returns a *Lock whose Close releases the lock; the
// descriptor survives setuid and may be handed to a child process
// (Lock.File, Adopt), which then shares the lock.
package ifacelock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultDir is where stenod keeps the interface locks.
const DefaultDir = "/run/stenod/iface"

// Errors, to test with errors.Is.
var (
	// ErrHeld: another live process holds the interface's lock. The
	// error is a *HeldError naming it.
	ErrHeld = errors.New("captured by another process")
	// ErrBadInterface: the interface name cannot name a lock file.
	ErrBadInterface = errors.New("bad interface name")
)

// HeldError says which process holds an interface's lock.
type HeldError struct {
	Iface string
	Path  string // the lock file
	PID   int    // 0 when unknown
	// Cmdline is the holder's command line, "" when unreadable.
	Cmdline string
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID != 0 {
		who = "process " + strconv.Itoa(e.PID)
		if e.Cmdline != "" {
			who += " (" + e.Cmdline + ")"
		}
	}
	return fmt.Sprintf("interface %s is captured by %s, which holds %s: stop it first, one sensor per interface", e.Iface, who, e.Path)
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is a held interface lock.
type Lock struct {
	f     *os.File
	iface string
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.f.Name() }

// File returns the locked file, to hand to a child process (exec.Cmd's
// ExtraFiles) that then holds the lock too (Adopt). It stays owned by l.
func (l *Lock) File() *os.File { return l.f }

// Close releases the lock (unless a child process still holds the
// descriptor). The file stays.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock interface %s: %w", l.iface, err)
	}
	return nil
}

// Acquire takes the lock of iface in dir (DefaultDir when empty), creating
// dir (mode 0755) and the lock file (mode 0644) as needed, and writes this
// process's pid into it. It fails at once, with a *HeldError, when a live
// process holds the lock.
func Acquire(dir, iface string) (*Lock, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := checkName(iface); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, iface+".lock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: open directory: %w", path, err)
	}
	defer unix.Close(dfd)
	name := iface + ".lock"
	// O_NONBLOCK: a FIFO put there must not hang the start.
	flags := unix.O_RDWR | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := unix.Openat(dfd, name, flags, 0o644)
	if errors.Is(err, unix.ELOOP) {
		// A symbolic link is never a lock: replace it, never follow it.
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("lock %s: remove symbolic link: %w", path, err)
		}
		fd, err = unix.Openat(dfd, name, flags|unix.O_EXCL, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("lock %s: not a regular file (mode %#o): remove it", path, st.Mode)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, holder(f, iface, &st)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &Lock{f: f, iface: iface}
	// The pid is for people; the lock is what counts, so a failed write
	// is reported but the pid in the file is only ever a hint.
	if err := writePID(fd); err != nil {
		l.Close()
		return nil, fmt.Errorf("lock %s: write pid: %w", path, err)
	}
	return l, nil
}

// Adopt takes over the lock of iface held through f, a descriptor inherited
// from the parent that acquired it (Lock.File). It checks that f is the lock
// file of iface in dir (DefaultDir when empty) and that the lock is held
// through it.
func Adopt(f *os.File, dir, iface string) (*Lock, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := checkName(iface); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, iface+".lock")
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return nil, fmt.Errorf("lock %s: inherited descriptor: %w", path, err)
	}
	if err := unix.Lstat(path, &b); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if a.Dev != b.Dev || a.Ino != b.Ino {
		return nil, fmt.Errorf("lock %s: the inherited descriptor is another file", path)
	}
	// Locking again through the same open file description converts the
	// lock in place: it succeeds only if that description holds it.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, holder(f, iface, &a)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f, iface: iface}, nil
}

// checkName refuses names that are not one path element. Linux interface
// names never contain '/' or whitespace and are at most 15 bytes.
func checkName(iface string) error {
	if iface == "" || iface == "." || iface == ".." || len(iface) > unix.IFNAMSIZ-1 ||
		strings.ContainsAny(iface, "/ \t\n\x00") {
		return fmt.Errorf("interface %q: %w", iface, ErrBadInterface)
	}
	return nil
}

func writePID(fd int) error {
	if err := unix.Ftruncate(fd, 0); err != nil {
		return err
	}
	b := []byte(strconv.Itoa(os.Getpid()) + "\n")
	n, err := unix.Pwrite(fd, b, 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return err
}

// holder builds the HeldError for the lock file f: the pid from
// /proc/locks, else the one written in the file.
func holder(f *os.File, iface string, st *unix.Stat_t) error {
	e := &HeldError{Iface: iface, Path: f.Name()}
	e.PID = lockHolder(st)
	if e.PID == 0 {
		buf := make([]byte, 32)
		n, _ := unix.Pread(int(f.Fd()), buf, 0)
		if pid := parseInfo(buf[:max(n, 0)]).PID; pid > 0 {
			e.PID = pid
		}
	}
	if e.PID != 0 {
		e.Cmdline = cmdlineOf(e.PID)
	}
	return e
}

// Holder returns the process holding an exclusive flock on the open file
// f (any file: the spool's directory locks too), from /proc/locks, and its
// command line ("" when unreadable); pid 0 when none is found.
func Holder(f *os.File) (pid int, cmdline string) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, ""
	}
	if pid = lockHolder(&st); pid != 0 {
		cmdline = cmdlineOf(pid)
	}
	return pid, cmdline
}

// HolderOf returns the process holding the lock of iface in dir
// (DefaultDir when empty), for status displays; pid 0 when none does. It
// takes no lock.
func HolderOf(dir, iface string) (pid int, cmdline string, err error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := checkName(iface); err != nil {
		return 0, "", err
	}
	path := filepath.Join(dir, iface+".lock")
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("lock %s: %w", path, err)
	}
	defer f.Close()
	pid, cmdline = Holder(f)
	return pid, cmdline, nil
}

// lockHolder returns the pid of the process holding a flock on the file
// st describes, from /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234
// 00:19:5678 0 EOF"), or 0.
func lockHolder(st *unix.Stat_t) int {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A blocked waiter's line starts with "->": skip it.
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// cmdlineOf returns pid's command line, arguments separated by spaces, or
// "" when it cannot be read.
func cmdlineOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// Info is what an interface's lock file says about the sensor holding it.
type Info struct {
	Iface string
	// PID is the holder's, from /proc/locks (the pid in the file when the
	// kernel's table does not say).
	PID     int
	Cmdline string
	// API is where the sensor's API listens, as SetAPI wrote it; "" when
	// the sensor has not said (not listening yet, or an older stenod).
	API string
}

// maxInfo bounds what is read of a lock file.
const maxInfo = 4096

// SetAPI writes the holder's pid and api, the address its API listens on
// ("unix:PATH", "tcp:HOST:PORT" or "tls:HOST:PORT"), into the lock file. The
// file never reads empty meanwhile: the new text is written over the old
// one, which it only extends, and the rest is cut off after.
func (l *Lock) SetAPI(api string) error {
	if strings.ContainsAny(api, "\n\x00") {
		return fmt.Errorf("lock %s: API address %q: not one line", l.f.Name(), api)
	}
	b := []byte(strconv.Itoa(os.Getpid()) + "\napi " + api + "\n")
	fd := int(l.f.Fd())
	n, err := unix.Pwrite(fd, b, 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	if err == nil {
		err = unix.Ftruncate(fd, int64(len(b)))
	}
	if err != nil {
		return fmt.Errorf("lock %s: write API address: %w", l.f.Name(), err)
	}
	return nil
}

// parseInfo reads a lock file's text: the pid on the first line, then
// "key value" lines.
func parseInfo(b []byte) Info {
	var in Info
	lines := strings.Split(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(lines[0])); err == nil && pid > 0 {
		in.PID = pid
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, " "); ok && k == "api" {
			in.API = strings.TrimSpace(v)
		}
	}
	return in
}

// Held returns, for every interface whose lock in dir (DefaultDir when
// empty) a live process holds, what its lock file says, sorted by
// interface. A missing dir holds no lock. It takes no lock and needs no
// privilege beyond reading dir (lock files are mode 0644).
func Held(dir string) ([]Info, error) {
	if dir == "" {
		dir = DefaultDir
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("interface locks %s: %w", dir, err)
	}
	var out []Info
	for _, e := range ents {
		iface, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || !e.Type().IsRegular() || checkName(iface) != nil {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		pid, cmdline := Holder(f)
		buf := make([]byte, maxInfo)
		n, _ := unix.Pread(int(f.Fd()), buf, 0)
		f.Close()
		if pid == 0 {
			continue // nobody holds it: whatever the file says is stale
		}
		in := parseInfo(buf[:max(n, 0)])
		in.Iface, in.PID, in.Cmdline = iface, pid, cmdline
		out = append(out, in)
	}
	return out, nil
}
