//go:build linux

package ifacelock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAcquireHeld: a second Acquire of the same interface fails with a
// HeldError naming the holder's pid and command line (here: this process,
// whose two descriptors conflict like two processes); after Close it
// succeeds; another interface is independent.
func TestAcquireHeld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "iface")
	l, err := Acquire(dir, "eth9")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "eth9.lock"))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q (%v), want our pid %d", b, err, os.Getpid())
	}
	_, err = Acquire(dir, "eth9")
	var he *HeldError
	if !errors.Is(err, ErrHeld) || !errors.As(err, &he) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	if he.PID != os.Getpid() || !strings.Contains(he.Cmdline, os.Args[0]) {
		t.Errorf("holder %d %q, want %d and %q", he.PID, he.Cmdline, os.Getpid(), os.Args[0])
	}
	if msg := err.Error(); !strings.Contains(msg, "process "+strconv.Itoa(os.Getpid())) || !strings.Contains(msg, "eth9") {
		t.Errorf("message %q names neither the pid nor the interface", msg)
	}
	other, err := Acquire(dir, "eth8")
	if err != nil {
		t.Fatalf("another interface: %v", err)
	}
	if err := errors.Join(l.Close(), other.Close()); err != nil {
		t.Fatal(err)
	}
	l, err = Acquire(dir, "eth9")
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	l.Close()
}

// TestAcquireStale: a lock file left by a dead process (its pid still in
// it) does not block.
func TestAcquireStale(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "eth9.lock"), []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "eth9")
	if err != nil {
		t.Fatalf("stale lock file: %v", err)
	}
	defer l.Close()
	b, _ := os.ReadFile(filepath.Join(dir, "eth9.lock"))
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid", b)
	}
}

// TestAcquireSymlink: a symbolic link in place of the lock file is
// replaced, and the file it points to is left as it was.
func TestAcquireSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	const content = "do not truncate me\n"
	if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "eth9.lock")); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "eth9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b, err := os.ReadFile(target); err != nil || string(b) != content {
		t.Errorf("symlink target now %q (%v), want %q", b, err, content)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "eth9.lock")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("lock file: %v %v, want a regular file", fi, err)
	}
	// A symlinked directory is refused.
	linkDir := filepath.Join(t.TempDir(), "linked")
	if err := os.Symlink(dir, linkDir); err != nil {
		t.Fatal(err)
	}
	if l2, err := Acquire(linkDir, "eth7"); err == nil {
		l2.Close()
		t.Errorf("Acquire through a symlinked directory succeeded")
	}
}

// TestAdopt: a descriptor of the held lock is adopted; one of another
// interface's lock file is refused.
func TestAdopt(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "eth9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Adopt(l.File(), dir, "eth9"); err != nil {
		t.Errorf("Adopt: %v", err)
	}
	if _, err := Adopt(l.File(), dir, "eth8"); err == nil {
		t.Errorf("Adopt of another interface's lock file succeeded")
	}
}

func TestBadName(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "averyveryverylongname"} {
		if _, err := Acquire(t.TempDir(), name); !errors.Is(err, ErrBadInterface) {
			t.Errorf("%q: %v, want ErrBadInterface", name, err)
		}
	}
}

// TestHolder: the holder of any flock is found in /proc/locks.
func TestHolder(t *testing.T) {
	l, err := Acquire(t.TempDir(), "eth9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if pid, cmd := Holder(l.File()); pid != os.Getpid() || !strings.Contains(cmd, os.Args[0]) {
		t.Errorf("Holder: %d %q, want %d and %q", pid, cmd, os.Getpid(), os.Args[0])
	}
	dir := filepath.Dir(l.Path())
	if pid, _, err := HolderOf(dir, "eth9"); err != nil || pid != os.Getpid() {
		t.Errorf("HolderOf: %d %v, want %d", pid, err, os.Getpid())
	}
	if pid, _, err := HolderOf(dir, "eth8"); err != nil || pid != 0 {
		t.Errorf("HolderOf of a free interface: %d %v, want 0", pid, err)
	}
}

// TestHeldAndSetAPI: Held lists the held locks with the API address their
// holder wrote; a lock nobody holds (a dead sensor's file) is left out; the
// pid stays on the first line, for people and for HeldError.
func TestHeldAndSetAPI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "iface")
	if got, err := Held(dir); err != nil || len(got) != 0 {
		t.Fatalf("Held of a missing directory: %v, %v", got, err)
	}
	l, err := Acquire(dir, "eth9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(filepath.Join(dir, "eth8.lock"), []byte("999999999\napi unix:/run/old.sock\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.SetAPI("unix:/run/stenod/stenod.sock"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "eth9.lock"))
	if want := strconv.Itoa(os.Getpid()) + "\napi unix:/run/stenod/stenod.sock\n"; string(b) != want {
		t.Errorf("lock file %q, want %q", b, want)
	}
	got, err := Held(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Iface != "eth9" || got[0].PID != os.Getpid() || got[0].API != "unix:/run/stenod/stenod.sock" {
		t.Errorf("Held = %+v, want eth9 with our pid and API", got)
	}
	// A shorter address leaves no tail of the longer one.
	if err := l.SetAPI("tcp:127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := Held(dir); len(got) != 1 || got[0].API != "tcp:127.0.0.1:1" {
		t.Errorf("after a second SetAPI: %+v", got)
	}
	// A second sensor is still told who holds it.
	var he *HeldError
	if _, err := Acquire(dir, "eth9"); !errors.As(err, &he) || he.PID != os.Getpid() {
		t.Errorf("second Acquire: %v", err)
	}
	if err := l.SetAPI("bad\nline"); err == nil {
		t.Error("an address with a newline was written")
	}
}
