//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/config"
	"github.com/stenod/stenod/internal/demotap"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/pcapio"
)

// TestRunConfigAndFlags: the file's values apply, a flag given on the
// command line overrides its key, a flag not given leaves the file alone,
// and bad files and flags are refused with the key (or flag) named.
func TestRunConfigAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"capture": {"interfaces": ["eth9"], "drop_rules": ["udp and port 53"]},
	        "spool": {"dirs": ["/srv/a"], "max_bytes": "3GiB"},
	        "api": {"listen": "127.0.0.1:4000"}}`)
	code, out, stderr := runCmd(t, "run", "--config", file, "--print-config", "--spool", "/srv/b,/srv/c", "--max-files", "7")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	c, err := config.Parse([]byte(out), "printed")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := c.Spool.Dirs; strings.Join(got, ",") != "/srv/b,/srv/c" {
		t.Errorf("spool dirs %v: the flag should override the file", got)
	}
	if c.Spool.MaxFiles != 7 {
		t.Errorf("max files %d, want the flag's 7", c.Spool.MaxFiles)
	}
	if c.API.Listen != "127.0.0.1:4000" || c.Spool.MaxBytes != 3<<30 || c.Capture.Interfaces[0] != "eth9" || len(c.Capture.DropRules) != 1 {
		t.Errorf("file values lost: %+v", c)
	}
	// The cutoff flags set the cutoff; the rules replace the file's.
	write(`{"capture": {"interfaces": ["eth9"], "cutoff_rules": ["udp => 1p"]}}`)
	code, out, stderr = runCmd(t, "run", "--config", file, "--print-config", "--cutoff", "20KB", "--cutoff-jitter", "10",
		"--cutoff-rules", "host 10.0.0.5 => never; tcp and port 22 => 5p")
	if code != 0 || !strings.Contains(out, `"cutoff": "20kB"`) || !strings.Contains(out, `"cutoff_jitter": 10`) ||
		!strings.Contains(out, `"cutoff_rules": ["host 10.0.0.5 => never", "tcp and port 22 => 5p"]`) {
		t.Errorf("cutoff flags: exit %d %s\n%s", code, stderr, out)
	}
	write(`{"capture": {"interfaces": ["eth9"], "drop_rules": ["udp and port 53"]},
	        "spool": {"dirs": ["/srv/a"], "max_bytes": "3GiB"},
	        "api": {"listen": "127.0.0.1:4000"}}`)

	// A flag at its default value still overrides when given.
	code, out, _ = runCmd(t, "run", "--config", file, "--print-config", "--listen", "127.0.0.1:1234")
	if code != 0 || !strings.Contains(out, `"listen": "127.0.0.1:1234"`) {
		t.Errorf("--listen at its default did not override the file: exit %d\n%s", code, out)
	}

	// A boolean flag alone sets its key; --flag=false clears it.
	code, out, _ = runCmd(t, "run", "--config", file, "--print-config", "--pprof", "--socket", "/run/x/s.sock")
	if code != 0 || !strings.Contains(out, `"pprof": true`) || !strings.Contains(out, `"socket": "/run/x/s.sock"`) {
		t.Errorf("--pprof --socket: exit %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "run", "--config", file, "--print-config", "--pprof=false")
	if code != 0 || !strings.Contains(out, `"pprof": false`) {
		t.Errorf("--pprof=false: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		name, file string
		args       []string
		want       string
	}{
		{"unknown key", `{"spool": {"budgt": 1}}`, nil, `config ` + file + `: unknown key "spool.budgt"`},
		{"bad value", `{"capture": {"interfaces": ["eth9"], "umem_frames": 3}}`, nil, `key "capture.umem_frames"`},
		{"bad flag", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--max-bytes", "lots"}, `--max-bytes: size "lots"`},
		{"flag out of range", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--snaplen", "5"}, `--snaplen: spool: snap length 5`},
		{"no interface", `{}`, nil, `key "capture.interfaces"`},
		{"unsafe listen", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--listen", "0.0.0.0:1234"}, `--listen: api: refusing to listen`},
		{"relative socket", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--socket", "stenod.sock"}, `--socket: api: socket "stenod.sock": want an absolute path`},
		{"bad cutoff", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--cutoff", "20 parsecs"}, `--cutoff: limit "20 parsecs": want a size`},
		{"bad cutoff rule", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--cutoff-rules", "port 443 => 20KB; portt 22 => 5p"},
			`--cutoff-rules: cutoff rule "portt 22 => 5p": query: at 0 ("portt")`},
		{"cutoff jitter out of range", `{"capture": {"interfaces": ["eth9"]}}`, []string{"--cutoff-jitter", "101"}, `--cutoff-jitter: cutoff jitter 101%: want a percent from 0 to 100`},
		{"bad cutoff rule in the file", `{"capture": {"interfaces": ["eth9"], "cutoff_rules": ["port 22 => 5 packets"]}}`, nil,
			`key "capture.cutoff_rules[0]": cutoff rule "port 22 => 5 packets": limit "5 packets"`},
	} {
		write(tc.file)
		code, _, stderr := runCmd(t, append([]string{"run", "--config", file, "--print-config"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q, want exit 2 and %q", tc.name, code, stderr, tc.want)
		}
	}
	code, _, stderr = runCmd(t, "run", "--config", filepath.Join(dir, "missing.json"))
	if code != 1 || !strings.Contains(stderr, "missing.json") {
		t.Errorf("missing file: exit %d: %s", code, stderr)
	}
}

// buildStenod builds the binary as the Makefile does, without cgo, so the
// privilege drop reaches every thread.
func buildStenod(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "stenod")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemon is a stenod process started by a test, its log collected.
type daemon struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan error
}

func startStenod(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	// Killed with the test binary, should it die (a test timeout).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Wait returns even if a process it started keeps the output open.
	d.cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.log.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
	}()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := d.cmd.Wait()
		pw.Close()
		d.done <- err
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			// Gently first: a demo removes its tap on SIGTERM.
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(60 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.done
			}
		}
		if t.Failed() {
			t.Logf("stenod log:\n%s", d.logText())
		}
	})
	return d
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("stenod exited with %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("stenod did not stop within 90s of SIGTERM")
	}
}

// waitFor polls f until it returns nil or the time is up.
// waitHealthy waits until the daemon's API at base answers /healthz.
func waitHealthy(t *testing.T, d *daemon, c *http.Client, base string) {
	t.Helper()
	waitFor(t, d, "the API", time.Minute, func() error {
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
}

func waitFor(t *testing.T, d *daemon, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case e := <-d.done:
			d.done <- e
			t.Fatalf("stenod exited (%v) while waiting for %s", e, what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// reachableTempDir is a temporary directory an unprivileged user can reach
// (t.TempDir's are 0700).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// bpffsDir returns a fresh pin root on /sys/fs/bpf, removed afterwards.
func bpffsDir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join("/sys/fs/bpf", fmt.Sprintf("%s-%d", name, os.Getpid()))
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// httpClient bounds every request of the tests: a hung daemon fails the
// test instead of hanging it.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// queryPackets POSTs q to /query and returns the packets of the answer.
func queryPackets(base, q string) (int, error) { return queryPacketsWith(httpClient, base, q) }

func queryPacketsWith(c *http.Client, base, q string) (int, error) {
	resp, err := c.Post(base+"/query", "text/plain", strings.NewReader(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("POST /query %q: %s: %s", q, resp.Status, b)
	}
	r, err := pcapio.NewReader(resp.Body)
	if err != nil {
		return 0, err
	}
	n := 0
	var p pcapio.Packet
	for {
		err := r.Next(&p)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// processesOf lists the processes running the executable bin.
func processesOf(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.TrimSuffix(exe, " (deleted)") == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

// xdpProgID returns the id of the XDP program attached to iface, 0 if none.
func xdpProgID(t *testing.T, iface string) int {
	t.Helper()
	out, err := exec.Command("ip", "-j", "link", "show", "dev", iface).Output()
	if err != nil {
		return 0
	}
	var links []struct {
		XDP *struct {
			Prog *struct {
				ID int `json:"id"`
			} `json:"prog"`
			Attached []struct {
				Prog *struct {
					ID int `json:"id"`
				} `json:"prog"`
			} `json:"attached"`
		} `json:"xdp"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) == 0 || links[0].XDP == nil {
		return 0
	}
	if x := links[0].XDP; x.Prog != nil {
		return x.Prog.ID
	} else if len(x.Attached) > 0 && x.Attached[0].Prog != nil {
		return x.Attached[0].Prog.ID
	}
	return 0
}

// TestRunDemo starts stenod run --demo as make run does, queries it through
// the API, stops it with SIGTERM and checks that nothing is left: no
// namespace, no interface, no pins, no XDP program, no process.
func TestRunDemo(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	bin := buildStenod(t)
	for _, method := range []string{"auto", "xdp"} {
		t.Run(method, func(t *testing.T) {
			// auto on loopback TCP, as an operator may choose; xdp on the
			// Unix socket, the default.
			work := reachableTempDir(t)
			client, base, curl := httpClient, "", "curl -s"
			var apiArgs []string
			if method == "auto" {
				listen := freePort(t)
				base, apiArgs = "http://"+listen, []string{"--listen", listen}
			} else {
				sock := filepath.Join(work, "run", "demo.sock")
				tr := api.UnixTransport(sock)
				t.Cleanup(tr.CloseIdleConnections)
				client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
				base, curl, apiArgs = "http://stenod", "curl -s --unix-socket "+sock, []string{"--socket", sock}
			}
			pinRoot := bpffsDir(t, "stenod-demo-test")
			spoolDir := filepath.Join(work, "spool")
			d := startStenod(t, bin, append([]string{"run", "--demo", "--capture", method, "--spool", spoolDir, "--pin-root", pinRoot}, apiArgs...)...)

			waitFor(t, d, "packets queryable through POST /query", time.Minute, func() error {
				n, err := queryPacketsWith(client, base, "tcp or udp")
				if err == nil && n == 0 {
					err = errors.New("no packets yet")
				}
				return err
			})
			var progID int
			if method == "xdp" {
				if progID = xdpProgID(t, demotap.HostIface); progID == 0 {
					t.Errorf("no XDP program attached to %s", demotap.HostIface)
				}
			}
			resp, err := client.Get(base + "/v1/flows?q=" + url.QueryEscape("tcp or udp"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"packets"`)) {
				t.Errorf("GET /v1/flows: %s: %.300s", resp.Status, body)
			}
			waitFor(t, d, "the demo to say how to query it", 10*time.Second, func() error {
				if !strings.Contains(d.logText(), curl+" --data-binary 'tcp' "+base+"/query | tcpdump -nr -") {
					return errors.New("not said")
				}
				return nil
			})

			d.stop(t)
			if _, err := os.Stat("/run/netns/" + demotap.Namespace); err == nil {
				t.Errorf("namespace %s left behind", demotap.Namespace)
			}
			if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte(demotap.Namespace+" ")) || bytes.Contains(out, []byte(demotap.Namespace+"\n")) {
				t.Errorf("ip netns list still shows %s:\n%s", demotap.Namespace, out)
			}
			if _, err := os.Lstat("/sys/class/net/" + demotap.HostIface); err == nil {
				t.Errorf("interface %s left behind", demotap.HostIface)
			}
			if ents, err := os.ReadDir(pinRoot); err == nil && len(ents) > 0 {
				t.Errorf("pins left under %s: %v", pinRoot, ents)
			}
			if progID != 0 {
				if out, err := exec.Command("bpftool", "prog", "show", "id", strconv.Itoa(progID)).CombinedOutput(); err == nil {
					t.Errorf("XDP program %d still loaded:\n%s", progID, out)
				}
			}
			if pids := processesOf(bin); len(pids) > 0 {
				t.Errorf("processes of %s left: %v", bin, pids)
			}
		})
	}
}

// testUser is the account TestRunDropsPrivileges runs stenod as.
const testUser = "stenod-test"

// requireTestUser creates testUser for the test when it is missing and
// removes it afterwards.
func requireTestUser(t *testing.T) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		testutil.RequireCommand(t, "useradd")
		testutil.Run(t, "useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", testUser)
		t.Cleanup(func() { _ = exec.Command("userdel", testUser).Run() })
		if u, err = user.Lookup(testUser); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// procStatus reads the fields of /proc/PID[/task/TID]/status.
func procStatus(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m, nil
}

// TestRunDropsPrivileges starts stenod run as root on a veth and checks,
// from /proc, that once started it runs as the unprivileged user with no
// capability at all (docs/operations.md), on every thread; that capture
// still works; and that the unprivileged daemon still detaches and unpins
// everything at shutdown.
func TestRunDropsPrivileges(t *testing.T) {
	testutil.RequireRoot(t)
	for _, method := range []string{"xdp", "afpacket"} {
		t.Run(method, func(t *testing.T) {
			testDropsPrivileges(t, method)
		})
	}
}

func testDropsPrivileges(t *testing.T, method string) {
	uid, gid := requireTestUser(t)
	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	listen := freePort(t)
	base := "http://" + listen
	pinRoot := bpffsDir(t, "stenod-priv-test")
	spoolDir := filepath.Join(reachableTempDir(t), "spool")
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", method, "--user", testUser,
		"--listen", listen, "--spool", spoolDir, "--pin-root", pinRoot)
	waitHealthy(t, d, httpClient, base)

	pid := d.cmd.Process.Pid
	ids := fmt.Sprintf("%d %d %d %d", uid, uid, uid, uid)
	gids := fmt.Sprintf("%d %d %d %d", gid, gid, gid, gid)
	want := map[string]string{
		"Uid": ids, "Gid": gids, "Groups": strconv.Itoa(gid),
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1",
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range append([]os.DirEntry{nil}, tasks...) {
		path := fmt.Sprintf("/proc/%d/status", pid)
		if task != nil {
			path = fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name())
		}
		st, err := procStatus(path)
		if err != nil {
			t.Fatal(err)
		}
		for k, w := range want {
			if st[k] != w {
				t.Errorf("%s: %s %q, want %q", path, k, st[k], w)
			}
		}
	}
	if method == "xdp" {
		if xdpProgID(t, v.Host) == 0 {
			t.Errorf("no XDP program attached to %s", v.Host)
		}
		st, err := os.Stat(filepath.Join(pinRoot, v.Host))
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != uid {
			t.Errorf("pin directory owned by %d, want %d", s.Uid, uid)
		}
	}

	// Capture works after the drop: a datagram sent now is queryable.
	v.InNS(t, "ip", "addr", "add", "10.77.0.2/24", "dev", v.Peer)
	v.InNS(t, "ip", "neigh", "add", "10.77.0.1", "lladdr", "02:00:00:00:77:01", "dev", v.Peer)
	waitFor(t, d, "a datagram sent after the drop to be queryable", 30*time.Second, func() error {
		v.InNS(t, "bash", "-c", "echo stenod > /dev/udp/10.77.0.1/9999")
		n, err := queryPackets(base, "udp and port 9999")
		if err == nil && n == 0 {
			err = errors.New("not found")
		}
		return err
	})
	ents, err := os.ReadDir(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if s := info.Sys().(*syscall.Stat_t); int(s.Uid) != uid || int(s.Gid) != gid || info.Mode().Perm()&0o027 != 0 {
			t.Errorf("spool file %s: owner %d:%d mode %v, want %d:%d and no group write or other access", e.Name(), s.Uid, s.Gid, info.Mode().Perm(), uid, gid)
		}
	}

	// --listen on loopback without certificates is the operator's choice,
	// said out loud.
	if !strings.Contains(d.logText(), "any local user can read every captured packet") {
		t.Errorf("no warning about the API on loopback TCP without certificates")
	}

	d.stop(t)
	if id := xdpProgID(t, v.Host); id != 0 {
		t.Errorf("XDP program %d still attached to %s after stop", id, v.Host)
	}
	if ents, err := os.ReadDir(pinRoot); err == nil && len(ents) > 0 {
		t.Errorf("pins left under %s: %v", pinRoot, ents)
	}
	if strings.Contains(d.logText(), "level=ERROR") {
		t.Errorf("errors logged")
	}
}

// TestRunDemoAfterCrash: a demo killed with kill -9 takes its daemon with
// it (the daemon unpins and detaches on its own), and the next demo removes
// the tap the killed one left and runs.
func TestRunDemoAfterCrash(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	bin := buildStenod(t)
	pinRoot := bpffsDir(t, "stenod-demo-crash-test")
	start := func() (*daemon, string) {
		listen := freePort(t)
		spoolDir := filepath.Join(reachableTempDir(t), "spool")
		d := startStenod(t, bin, "run", "--demo", "--capture", "xdp", "--listen", listen, "--spool", spoolDir, "--pin-root", pinRoot)
		waitFor(t, d, "packets queryable", time.Minute, func() error {
			n, err := queryPackets("http://"+listen, "after 1m ago")
			if err == nil && n == 0 {
				err = errors.New("no packets yet")
			}
			return err
		})
		return d, listen
	}

	d, _ := start()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	d.done <- nil
	deadline := time.Now().Add(time.Minute)
	for len(processesOf(bin)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon outlived its killed supervisor: %v", processesOf(bin))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ents, err := os.ReadDir(pinRoot); err == nil && len(ents) > 0 {
		t.Errorf("pins left under %s by the orphaned daemon: %v", pinRoot, ents)
	}
	if _, err := os.Lstat("/sys/class/net/" + demotap.HostIface); err != nil {
		t.Fatalf("expected the killed demo's tap to be left: %v", err)
	}

	d, _ = start()
	if !strings.Contains(d.logText(), "removing the namespace of an earlier demo") {
		t.Errorf("the second demo did not say it removed the first one's tap")
	}
	d.stop(t)
	if _, err := os.Lstat("/sys/class/net/" + demotap.HostIface); err == nil {
		t.Errorf("interface %s left behind", demotap.HostIface)
	}
	if _, err := os.Stat("/run/netns/" + demotap.Namespace); err == nil {
		t.Errorf("namespace %s left behind", demotap.Namespace)
	}
	if ents, err := os.ReadDir(pinRoot); err == nil && len(ents) > 0 {
		t.Errorf("pins left under %s: %v", pinRoot, ents)
	}
}
