//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestRunRefusesUnwritableSpool: started as root to drop to a user that
// cannot create files in the spool directory (here: it owns it, mode
// 0555), stenod exits at start, naming the directory and the user, before
// any capture is set up, instead of losing every packet while /healthz
// says ok.
func TestRunRefusesUnwritableSpool(t *testing.T) {
	testutil.RequireRoot(t)
	requireTestUser(t)
	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	pinRoot := bpffsDir(t, "stenod-unwritable-test")
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	if err := os.Mkdir(spoolDir, 0o555); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "run", "--iface", v.Host, "--capture", "xdp", "--user", testUser,
		"--listen", freePort(t), "--spool", spoolDir, "--pin-root", pinRoot).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("stenod on an unwritable spool: %v, want a non-zero exit:\n%s", err, out)
	}
	for _, want := range []string{"spool directory " + spoolDir, "user " + testUser, "cannot create files in it"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "xdp program attached") {
		t.Errorf("capture was set up before the check:\n%s", out)
	}
	if id := xdpProgID(t, v.Host); id != 0 {
		t.Errorf("XDP program %d left attached", id)
	}
}

// tornPcap is a nanosecond pcap file with one whole packet and a torn
// second record: what repair cuts back to the first packet.
func tornPcap() []byte {
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(b[4:], 2)
	binary.LittleEndian.PutUint16(b[6:], 4)
	binary.LittleEndian.PutUint32(b[16:], 262144)
	binary.LittleEndian.PutUint32(b[20:], 1)
	for i, frame := range [][]byte{crashFrame(1), crashFrame(2)} {
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], 1700000000)
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(frame)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
		b = append(b, rec...)
		if i == 1 {
			frame = frame[:10] // torn
		}
		b = append(b, frame...)
	}
	return b
}

// TestRunSpoolSymlinks: symbolic links the spool's user put in the spool,
// named like a spool file (which repair would truncate) and like a
// directory, point to root's files outside the spool. Started as root,
// stenod removes the first, leaves the second alone, and starts; the files
// they point to keep their content, size and owner.
func TestRunSpoolSymlinks(t *testing.T) {
	testutil.RequireRoot(t)
	requireTestUser(t)
	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	content := tornPcap()
	if err := os.WriteFile(victim, content, 0o644); err != nil {
		t.Fatal(err)
	}
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	if err := os.Mkdir(spoolDir, 0o750); err != nil {
		t.Fatal(err)
	}
	pcapLink := filepath.Join(spoolDir, "20231114T221320.000000000Z-"+v.Host+"-q0.pcap")
	for link, target := range map[string]string{pcapLink: victim, filepath.Join(spoolDir, "sub"): outside} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	listen := freePort(t)
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", "afpacket", "--user", testUser,
		"--listen", listen, "--spool", spoolDir)
	waitHealthy(t, d, httpClient, "http://"+listen)
	if _, err := os.Lstat(pcapLink); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link named like a spool file is still there (%v)", err)
	}
	if !strings.Contains(d.logText(), "removed a symbolic link from the spool") {
		t.Errorf("the removal was not logged")
	}
	d.stop(t)
	for _, p := range []string{victim, outside} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s now owned by %d:%d, want root's", p, st.Uid, st.Gid)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != string(content) {
		t.Errorf("the link's target changed: %d bytes (%v), was %d", len(b), err, len(content))
	}
}

// TestChownTree: chownTree changes the tree's files, directories and links
// but nothing a link points to.
func TestChownTree(t *testing.T) {
	testutil.RequireRoot(t)
	dir, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	for _, p := range []string{filepath.Join(dir, "f"), victim} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	links := []string{filepath.Join(dir, "sub", "file-link"), filepath.Join(dir, "dir-link")}
	if err := errors.Join(os.Symlink(victim, links[0]), os.Symlink(outside, links[1])); err != nil {
		t.Fatal(err)
	}
	const id = 54321
	if err := chownTree(dir, id, id); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) uint32 {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	for _, p := range append([]string{dir, filepath.Join(dir, "f"), filepath.Join(dir, "sub")}, links...) {
		if owner(p) != id {
			t.Errorf("%s owned by %d, want %d", p, owner(p), id)
		}
	}
	for _, p := range []string{outside, victim} {
		if owner(p) != 0 {
			t.Errorf("%s (outside, behind a link) owned by %d, want 0", p, owner(p))
		}
	}
	// A symlinked top directory is refused.
	link := filepath.Join(t.TempDir(), "spool")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := chownTree(link, 0, 0); !errors.Is(err, errSymlinkDir) {
		t.Errorf("chownTree of a symlink: %v, want errSymlinkDir", err)
	}
}

// TestRunSpoolInUse: a sensor whose spool directory another running
// sensor writes is refused, naming that sensor's pid, and leaves the
// other sensor's files as they were (their owner included: the hand-over
// to the user does not happen).
func TestRunSpoolInUse(t *testing.T) {
	testutil.RequireRoot(t)
	requireTestUser(t)
	v1, v2 := testutil.NewVeth(t), testutil.NewVeth(t)
	bin := buildStenod(t)
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	listen := freePort(t)
	d := startStenod(t, bin, "run", "--iface", v1.Host, "--capture", "afpacket", "--user", "",
		"--listen", listen, "--spool", spoolDir)
	waitHealthy(t, d, httpClient, "http://"+listen)
	s := testutil.NewSender(t, v1)
	waitFor(t, d, "a packet in the spool", 30*time.Second, func() error {
		s.Send(t, crashFrame(1))
		n, err := queryPackets("http://"+listen, "udp and port 7000")
		if err == nil && n == 0 {
			err = errors.New("not yet")
		}
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "run", "--iface", v2.Host, "--capture", "afpacket", "--user", testUser,
		"--listen", freePort(t), "--spool", spoolDir).CombinedOutput()
	want := "in use by another process (a running stenod, or an import): process " + strconv.Itoa(d.cmd.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("second sensor on the same spool: %v, want a non-zero exit and %q:\n%s", err, want, out)
	}
	ents, err := os.ReadDir(spoolDir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("spool: %v %v", ents, err)
	}
	for _, e := range ents {
		fi, err := os.Lstat(filepath.Join(spoolDir, e.Name()))
		if err != nil {
			continue
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
			t.Errorf("%s: owner changed to %d by the refused sensor", e.Name(), st.Uid)
		}
	}
	d.stop(t)
}

// TestRunMissingInterface: a typo in the interface's name is reported with
// the name, as a missing interface, before any capture method is tried
// (no AF_XDP or zero-copy message), and nothing is locked or created.
func TestRunMissingInterface(t *testing.T) {
	spoolDir := filepath.Join(t.TempDir(), "spool")
	code, _, stderr := runCmd(t, "run", "--iface", "lo,eht1", "--spool", spoolDir, "--user", "", "--listen", "127.0.0.1:1")
	if code != 1 || !strings.Contains(stderr, `stenod run: interface "eht1": no such network interface (this host has `) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and the interface named", code, stderr)
	}
	for _, bad := range []string{"zero-copy", "AF_XDP", "route ip+net", "capture method"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr mentions %q:\n%s", bad, stderr)
		}
	}
	if _, err := os.Stat(spoolDir); err == nil {
		t.Errorf("the spool %s was created", spoolDir)
	}
	if _, err := os.Stat("/run/stenod/iface/eht1.lock"); err == nil {
		t.Error("a lock file was created for the missing interface")
	}
}
