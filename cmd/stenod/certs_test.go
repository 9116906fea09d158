package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stenod/stenod/internal/certs"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestCertsInitServiceReadsKey: 'sudo stenod certs init --user U --group G
// DIR' leaves what a server running as U (as the systemd unit runs stenod:
// User=stenod) needs readable by it: the server key, its certificate and
// the CA's. The client key is the analysts' group's, not U's; the CA key is
// root's alone.
func TestCertsInitServiceReadsKey(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []string{"useradd", "groupadd"} {
		testutil.RequireCommand(t, c)
	}
	id := os.Getpid() % 100000
	svc, analysts := fmt.Sprintf("stncrt%d", id), fmt.Sprintf("stncrtg%d", id)
	testutil.Run(t, "groupadd", "--system", analysts)
	t.Cleanup(func() { _ = exec.Command("groupdel", analysts).Run() })
	testutil.Run(t, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", svc)
	t.Cleanup(func() { _ = exec.Command("userdel", svc).Run() })
	u, err := user.Lookup(svc)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	ugid, _ := strconv.Atoi(u.Gid)
	g, err := user.LookupGroup(analysts)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)

	dir := filepath.Join(reachableTempDir(t), "certs")
	code, out, stderr := runCmd(t, "certs", "init", "--user", svc, "--group", analysts, dir)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, stderr)
	}
	if !strings.Contains(out, "server_key.pem belongs to "+svc+" (mode 0600)") || strings.Contains(out, "chmod") {
		t.Errorf("output does not say who reads the server key:\n%s", out)
	}
	for name, want := range map[string][3]int{
		certs.ServerKey:  {int(certs.ModeServerKey), uid, 0},
		certs.ClientKey:  {int(certs.ModeClientKey), 0, gid},
		certs.CAKey:      {int(certs.ModeCAKey), 0, 0},
		certs.ServerCert: {int(certs.ModeCert), 0, 0},
		"":               {int(certs.ModeDir), 0, 0},
	} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if got := [3]int{int(st.Mode().Perm()), int(sys.Uid), int(sys.Gid)}; got != want {
			t.Errorf("%q: mode, uid, gid %#o, want %#o", name, got, want)
		}
	}
	// As the service: its own user and group, not the analysts'.
	read := func(name string) error {
		cmd := exec.Command("cat", filepath.Join(dir, name))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(ugid), Groups: []uint32{}}}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	for _, name := range []string{certs.ServerKey, certs.ServerCert, certs.CACert} {
		if err := read(name); err != nil {
			t.Errorf("the service cannot read %s: %v", name, err)
		}
	}
	for _, name := range []string{certs.CAKey, certs.ClientKey} {
		if err := read(name); err == nil {
			t.Errorf("the service reads %s", name)
		}
	}

	// A directory the service user cannot pass through: said, with the fix.
	closed := filepath.Join(reachableTempDir(t), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := runCmd(t, "certs", "init", "--user", svc, closed); code != 0 || !strings.Contains(out, "chmod o+x "+closed) {
		t.Errorf("exit %d: %s%s", code, out, stderr)
	}
	if code, _, stderr := runCmd(t, "certs", "init", "--user", "stenod-no-such-user", filepath.Join(t.TempDir(), "x")); code != 1 || !strings.Contains(stderr, "--user stenod-no-such-user") {
		t.Errorf("unknown --user: exit %d: %s", code, stderr)
	}
}

// TestCertsInitWithoutUser: with no user to give the server key to, certs
// init prints the command that lets the service read it.
func TestCertsInitWithoutUser(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my certs")
	code, out, stderr := runCmd(t, "certs", "init", "--user", "", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, stderr)
	}
	st, err := os.Stat(filepath.Join(dir, certs.ServerKey))
	if err != nil || st.Mode().Perm() != certs.ModeServerKey || int(st.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
		t.Fatalf("server key: %v %v", st.Mode(), err)
	}
	want := "chown stenod '" + filepath.Join(dir, certs.ServerKey) + "'"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	// The command works as printed, where it can (root, and the user).
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("stenod"); err == nil {
			if b, err := exec.Command("sh", "-c", want).CombinedOutput(); err != nil {
				t.Errorf("%s: %v: %s", want, err, b)
			}
		}
	}
}

// TestCertsUsage: 'stenod certs' without init is a usage error; 'stenod
// certs -h' is the usage of certs init.
func TestCertsUsage(t *testing.T) {
	if code, _, stderr := runCmd(t, "certs"); code != 2 || !strings.Contains(stderr, "want 'stenod certs init") {
		t.Errorf("stenod certs: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "certs", "-h"); code != 2 || !strings.HasPrefix(stderr, "usage: stenod certs init") || strings.Contains(stderr, "want 'stenod") {
		t.Errorf("stenod certs -h: exit %d: %s", code, stderr)
	}
}
