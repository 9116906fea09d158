//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/demotap"
	"github.com/stenod/stenod/internal/ifacelock"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestRunOneSensorPerInterface: a second stenod run on an interface a live
// stenod captures exits at once, non-zero, naming the first one's pid and
// command line, and touches nothing: the first one's XDP program and pins
// stay, its spool is not opened, and it captures every packet sent
// afterwards, counted exactly. Every pair of capture methods; the lock
// survives the first sensor's privilege drop.
func TestRunOneSensorPerInterface(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildStenod(t)
	requireTestUser(t)
	// The first sensor drops to testUser in one case: the lock survives
	// the drop.
	for _, tc := range []struct{ first, second, user string }{
		{"xdp", "xdp", testUser}, {"xdp", "afpacket", ""}, {"afpacket", "xdp", ""},
	} {
		t.Run(tc.first+"-then-"+tc.second, func(t *testing.T) {
			testSecondSensorRefused(t, bin, tc.first, tc.second, tc.user)
		})
	}
}

func testSecondSensorRefused(t *testing.T, bin, first, second, user string) {
	v := testutil.NewVeth(t)
	t.Cleanup(func() { os.Remove(filepath.Join(ifacelock.DefaultDir, v.Host+".lock")) })
	listen := freePort(t)
	base := "http://" + listen
	pinRoot := bpffsDir(t, "stenod-lock-test")
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", first, "--user", user,
		"--listen", listen, "--spool", spoolDir, "--pin-root", pinRoot)
	waitHealthy(t, d, httpClient, base)
	if user != "" && !strings.Contains(d.logText(), "dropped privileges") {
		t.Errorf("the first sensor did not drop privileges")
	}
	pinDir := filepath.Join(pinRoot, v.Host)
	pins := func() []string {
		ents, _ := os.ReadDir(pinDir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	pinsBefore, progBefore := pins(), xdpProgID(t, v.Host)
	if first == "xdp" && (progBefore == 0 || !slices.Contains(pinsBefore, "link")) {
		t.Fatalf("first sensor: XDP program %d, pins %v", progBefore, pinsBefore)
	}

	spool2 := filepath.Join(reachableTempDir(t), "spool2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--iface", v.Host, "--capture", second, "--user", "",
		"--listen", freePort(t), "--spool", spool2, "--pin-root", pinRoot)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("second stenod: %v after %v, want a non-zero exit:\n%s", err, took, out)
	}
	pid := d.cmd.Process.Pid
	for _, want := range []string{"process " + strconv.Itoa(pid) + " (" + bin + " run --iface " + v.Host, v.Host, "one sensor per interface"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("second stenod's message lacks %q:\n%s", want, out)
		}
	}
	if took > 10*time.Second {
		t.Errorf("second stenod took %v to give up", took)
	}
	if _, err := os.Lstat(spool2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused stenod created its spool %s (%v)", spool2, err)
	}
	if got := pins(); !slices.Equal(got, pinsBefore) {
		t.Errorf("pins %v after the refused start, were %v", got, pinsBefore)
	}
	if got := xdpProgID(t, v.Host); got != progBefore {
		t.Errorf("XDP program %d after the refused start, was %d", got, progBefore)
	}

	if first == "xdp" {
		// stenod status names the sensor holding the interface.
		out, err := exec.Command(bin, "status", "--pin-root", pinRoot, v.Host).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "sensor pid") || !strings.Contains(string(out), " "+strconv.Itoa(pid)+" ") {
			t.Errorf("stenod status: %v, want the sensor's pid %d:\n%s", err, pid, out)
		}
	}

	// The first sensor still captures every packet.
	const n = 500
	s := testutil.NewSender(t, v)
	for i := range n {
		s.Send(t, crashFrame(uint32(i)))
	}
	var got int
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = queryPackets(base, "udp and port 7000")
		if err != nil {
			t.Fatal(err)
		}
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != n {
		t.Errorf("the first sensor captured %d of the %d packets sent after the refused start", got, n)
	}
	if txt := d.logText(); strings.Contains(txt, "detached the XDP program of an earlier run") {
		t.Errorf("something detached the first sensor's program:\n%s", txt)
	}
	d.stop(t)
	if first == "xdp" {
		if id := xdpProgID(t, v.Host); id != 0 {
			t.Errorf("XDP program %d still attached after stop", id)
		}
		if _, err := os.Stat(pinDir); err == nil {
			t.Errorf("pins left in %s: %v", pinDir, pins())
		}
	}
}

// TestRunTakesOverStaleLock: a lock file left by a dead process (its pid
// in it), or a symbolic link where the lock file should be, does not keep
// stenod from starting; the link's target is left as it was.
func TestRunTakesOverStaleLock(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildStenod(t)
	for _, kind := range []string{"dead-pid", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			v := testutil.NewVeth(t)
			if err := os.MkdirAll(ifacelock.DefaultDir, 0o755); err != nil {
				t.Fatal(err)
			}
			lockPath := filepath.Join(ifacelock.DefaultDir, v.Host+".lock")
			t.Cleanup(func() { os.Remove(lockPath) })
			target := filepath.Join(t.TempDir(), "precious")
			const content = "not a lock file\n"
			if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if kind == "dead-pid" {
				// A process that has exited: its pid is free.
				c := exec.Command("true")
				if err := c.Run(); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(lockPath, []byte(fmt.Sprintf("%d\n", c.Process.Pid)), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Symlink(target, lockPath); err != nil {
				t.Fatal(err)
			}
			listen := freePort(t)
			d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", "afpacket", "--user", "",
				"--listen", listen, "--spool", filepath.Join(reachableTempDir(t), "spool"))
			waitHealthy(t, d, httpClient, "http://"+listen)
			// The pid, then the API's address (for stenod status).
			want := strconv.Itoa(d.cmd.Process.Pid) + "\napi tcp:" + listen + "\n"
			if b, err := os.ReadFile(lockPath); err != nil || string(b) != want {
				t.Errorf("lock file holds %q (%v), want %q", b, err, want)
			}
			if b, err := os.ReadFile(target); err != nil || string(b) != content {
				t.Errorf("the symlink's target now holds %q (%v)", b, err)
			}
			d.stop(t)
		})
	}
}

// TestRunDemoRefusedTwice: a second demo, or a sensor on the demo's
// interface, is refused while a demo runs, naming the demo's pid, and
// leaves the running demo's tap and capture alone.
func TestRunDemoRefusedTwice(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	bin := buildStenod(t)
	listen := freePort(t)
	base := "http://" + listen
	pinRoot := bpffsDir(t, "stenod-demo-lock-test")
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	d := startStenod(t, bin, "run", "--demo", "--capture", "xdp", "--listen", listen, "--spool", spoolDir, "--pin-root", pinRoot)
	waitFor(t, d, "packets queryable", time.Minute, func() error {
		n, err := queryPackets(base, "after 1m ago")
		if err == nil && n == 0 {
			err = errors.New("no packets yet")
		}
		return err
	})
	progBefore := xdpProgID(t, demotap.HostIface)
	for _, args := range [][]string{
		{"run", "--demo", "--capture", "xdp"},
		{"run", "--iface", demotap.HostIface, "--capture", "afpacket", "--user", ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, append(args, "--listen", freePort(t),
			"--spool", filepath.Join(reachableTempDir(t), "spool"), "--pin-root", pinRoot)...).CombinedOutput()
		cancel()
		want := "process " + strconv.Itoa(d.cmd.Process.Pid) + " (" + bin + " run --demo"
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("%v: %v, want a non-zero exit and %q:\n%s", args, err, want, out)
		}
	}
	if got := xdpProgID(t, demotap.HostIface); got != progBefore || got == 0 {
		t.Errorf("XDP program on %s: %d, was %d", demotap.HostIface, got, progBefore)
	}
	n1, err := queryPackets(base, "after 1m ago")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "the demo to go on capturing", 30*time.Second, func() error {
		n2, err := queryPackets(base, "after 1m ago")
		if err == nil && n2 <= n1 {
			err = fmt.Errorf("%d packets, as before", n2)
		}
		return err
	})
	d.stop(t)
}
