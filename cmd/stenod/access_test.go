//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/pcapio"
)

// countAnswer counts the packets of a pcap answer.
func countAnswer(r io.Reader) (int, error) {
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return 0, err
	}
	n := 0
	var p pcapio.Packet
	for {
		if err := rd.Next(&p); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
		n++
	}
}

// TestRunSocketAccess starts stenod as root, without certificates or a
// listen address, so that the API is its Unix socket, and checks who reads
// packets through it: root and a member of the socket's group do, another
// local user is refused by the kernel (permission denied on the socket's
// directory) and gets nothing. It also checks the socket's owner (the user
// the daemon dropped to, so that it can remove the socket), mode and group,
// that pprof is off, and that the socket goes when the daemon stops.
func TestRunSocketAccess(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []string{"curl", "runuser", "useradd", "groupadd"} {
		testutil.RequireCommand(t, c)
	}
	if _, err := user.Lookup("nobody"); err != nil {
		testutil.SkipOrFail(t, "needs the user nobody: %v", err)
	}
	// Names of this process's own, as other test runs on the machine may
	// create and remove theirs meanwhile: the daemon's user, the socket's
	// group and an analyst in it.
	id := os.Getpid() % 100000
	daemonUser, group, analyst := fmt.Sprintf("stnd%d", id), fmt.Sprintf("stnapi%d", id), fmt.Sprintf("stnan%d", id)
	testutil.Run(t, "groupadd", "--system", group)
	t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
	for _, u := range [][]string{{daemonUser}, {"--groups", group, analyst}} {
		testutil.Run(t, "useradd", append([]string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"}, u...)...)
		name := u[len(u)-1]
		t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	}
	du, err := user.Lookup(daemonUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(du.Uid)
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)

	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	work := reachableTempDir(t)
	sock := filepath.Join(work, "run", "stenod.sock")
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", "afpacket", "--user", daemonUser,
		"--socket", sock, "--socket-group", group, "--spool", filepath.Join(work, "spool"), "--pin-root", bpffsDir(t, "stenod-sock-test"))
	tr := api.UnixTransport(sock)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	waitFor(t, d, "the API socket", time.Minute, func() error {
		resp, err := client.Get("http://stenod/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})

	for p, want := range map[string]os.FileMode{filepath.Dir(sock): 0o750 | os.ModeDir, sock: 0o660 | os.ModeSocket} {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := st.Sys().(*syscall.Stat_t)
		if st.Mode() != want || int(s.Uid) != uid || int(s.Gid) != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", p, st.Mode(), s.Uid, s.Gid, want, uid, gid)
		}
	}
	resp, err := client.Get("http://stenod/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %s, want 404", resp.Status)
	}

	// A datagram to read.
	v.InNS(t, "ip", "addr", "add", "10.78.0.2/24", "dev", v.Peer)
	v.InNS(t, "ip", "neigh", "add", "10.78.0.1", "lladdr", "02:00:00:00:78:01", "dev", v.Peer)
	const q = "udp and port 9998"
	waitFor(t, d, "a datagram to be queryable as root", 30*time.Second, func() error {
		v.InNS(t, "bash", "-c", "echo stenod > /dev/udp/10.78.0.1/9998")
		resp, err := client.Post("http://stenod/query", "text/plain", strings.NewReader(q))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := countAnswer(resp.Body)
		if err == nil && n == 0 {
			err = errors.New("not found")
		}
		return err
	})

	curlAs := func(who string) (stdout []byte, stderr string, err error) {
		cmd := exec.Command("runuser", "-u", who, "--", "curl", "-v", "-sS", "--max-time", "20", "--unix-socket", sock,
			"--data-binary", q, "http://stenod/query")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err = cmd.Run()
		return out.Bytes(), errb.String(), err
	}
	out, stderr, err := curlAs(analyst)
	if err != nil {
		t.Fatalf("curl as %s, a member of %s: %v: %s", analyst, group, err, stderr)
	}
	if n, err := countAnswer(bytes.NewReader(out)); err != nil || n == 0 {
		t.Errorf("curl as %s, a member of %s: %d packets (%v)", analyst, group, n, err)
	}
	out, stderr, err = curlAs("nobody")
	if err == nil || len(out) != 0 {
		t.Errorf("curl as nobody: %v, %d bytes of answer: the socket let an outsider in", err, len(out))
	}
	if !strings.Contains(stderr, "Permission denied") {
		t.Errorf("curl as nobody failed, but not with permission denied: %s", stderr)
	}
	// curl only says it could not connect; connect(2) needs search
	// permission on the socket's directory and write permission on the
	// socket, which nobody lacks.
	t.Logf("curl as nobody: %v: %s", err, lastLines(stderr, 3))
	probe := exec.Command("runuser", "-u", "nobody", "--", "bash", "-c", "test -w "+sock+" || echo denied")
	if b, _ := probe.CombinedOutput(); !strings.Contains(string(b), "denied") {
		t.Errorf("nobody may write the socket: %s", b)
	}

	d.stop(t)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}
	if strings.Contains(d.logText(), "any local user") {
		t.Errorf("the socket daemon warned about loopback TCP")
	}
}

// setNoPortBind lets many connections from one local address share the
// ephemeral port range: the port is chosen at connect, per destination,
// not at bind.
func setNoPortBind(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return errors.Join(err, serr)
}

// TestRunConnectionFlood: 20,000 idle TCP connections to the API of a
// sensor that has 4,096 file descriptors (without the caps, the flood
// would take them all, and the next spool rotation would fail) while it
// captures from a veth, rotating its files every second: every packet sent
// is stored and queryable, no write fails, and an authenticated query is
// answered during the flood.
func TestRunConnectionFlood(t *testing.T) {
	testutil.RequireRoot(t)
	prlimit := testutil.RequireCommand(t, "prlimit")
	const (
		sources = 8 // flooding addresses, 127.0.0.2 and on
		packets = 3000
		fdLimit = 4096
		// headroom is what this process keeps for itself beside the
		// flood's client ends.
		headroom = 1024
	)
	conns := 20000
	// This process holds the flood's client ends.
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if need := uint64(conns + headroom); orig.Cur < need {
		raised := syscall.Rlimit{Cur: need, Max: max(orig.Max, need)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			// Root without CAP_SYS_RESOURCE (a container): as many as the
			// hard limit allows.
			raised = syscall.Rlimit{Cur: orig.Max, Max: orig.Max}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
				t.Fatal(err)
			}
			conns = int(orig.Max) - headroom
			t.Logf("cannot raise RLIMIT_NOFILE to %d (%v): %d connections", need, err, conns)
			if conns < 4*fdLimit {
				testutil.SkipOrFail(t, "the open files limit %d allows only %d connections", orig.Max, conns)
			}
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	}
	minFlood := conns / 2 // the dials that must succeed for the test to mean anything

	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	work := t.TempDir()
	certsDir := filepath.Join(work, "certs")
	testutil.Run(t, bin, "certs", "init", certsDir)
	listen := freePort(t)
	spoolDir := filepath.Join(work, "spool")
	d := startStenod(t, prlimit, fmt.Sprintf("--nofile=%d:%d", fdLimit, fdLimit), "--", bin, "run",
		"--iface", v.Host, "--capture", "afpacket", "--user", "", "--listen", listen, "--certs", certsDir,
		"--spool", spoolDir, "--rotate-age", "1s", "--pin-root", bpffsDir(t, "stenod-flood-test"))
	tc, err := api.ClientTLSConfig(certsDir)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "https://" + listen
	waitHealthy(t, d, client, base)
	if m := regexp.MustCompile(`msg="API listening".* max_connections=(\d+) max_connections_per_client=(\d+) fd_limit=(\d+)`).FindStringSubmatch(d.logText()); m == nil || m[3] != strconv.Itoa(fdLimit) {
		t.Errorf("the start-up log does not give the caps and the limit %d: %v", fdLimit, m)
	} else {
		t.Logf("caps: %s in total, %s per client, from a limit of %s files", m[1], m[2], m[3])
	}

	// The flood: idle connections that never start TLS, from several
	// loopback addresses, all to the API.
	var (
		mu     sync.Mutex
		flood  []net.Conn
		reset  int // refused so fast that the reset beat the dial's return
		failed int
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range flood {
			c.Close()
		}
	})
	// Halfway, the flood waits for the query that must be answered during
	// it.
	floodDone, halfway, resume := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var resumeOnce sync.Once
	resumeFlood := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(resumeFlood)
	start := time.Now()
	go func() {
		defer close(floodDone)
		for i := range conns {
			if i == conns/2 {
				close(halfway)
				<-resume
			}
			dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sources))},
				Timeout: 2 * time.Second, Control: setNoPortBind}
			c, err := dl.Dial("tcp", listen)
			mu.Lock()
			switch {
			case errors.Is(err, syscall.ECONNRESET):
				reset++
			case err != nil:
				failed++
			default:
				flood = append(flood, c)
			}
			mu.Unlock()
		}
	}()

	// Packets through the veth meanwhile, spread over the flood.
	sender := testutil.NewSender(t, v)
	sent := map[uint32]bool{}
	for seq := range uint32(packets) {
		sender.Send(t, crashFrame(seq))
		sent[seq] = true
		if seq%100 == 99 {
			// 3 s in all: the spool rotates a few times meanwhile.
			time.Sleep(100 * time.Millisecond)
		}
		if seq == packets/2 {
			// An authenticated query during the flood: the flood holds its
			// own addresses' slots, not this client's.
			select {
			case <-halfway:
			case <-time.After(time.Minute):
				t.Fatal("the flood did not get halfway within a minute")
			}
			tr.CloseIdleConnections() // a new connection, as a client's
			resp, err := client.Post(base+"/query", "text/plain", strings.NewReader("udp and port 7000"))
			if err != nil {
				t.Fatalf("query during the flood: %v", err)
			}
			n, err := countAnswer(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || n == 0 {
				t.Fatalf("query during the flood: %s, %d packets, %v", resp.Status, n, err)
			}
			t.Logf("query during the flood: %d packets", n)
			resumeFlood()
		}
	}
	<-floodDone
	mu.Lock()
	t.Logf("flood: %d connections open from this side, %d reset before the dial returned, %d dials failed, in %v",
		len(flood), reset, failed, time.Since(start).Round(time.Millisecond))
	if len(flood)+reset < minFlood {
		t.Errorf("only %d of %d connections were made: the flood did not happen", len(flood)+reset, conns)
	}
	made := len(flood) + reset
	mu.Unlock()

	// Nothing lost: every packet is queryable, each once and intact.
	var got map[uint32]int
	waitFor(t, d, "every packet queryable", 30*time.Second, func() error {
		var err error
		if got, err = floodAnswer(client, base, sent); err == nil && len(got) != packets {
			err = fmt.Errorf("%d of %d packets", len(got), packets)
		}
		return err
	})
	for seq, k := range got {
		if k != 1 {
			t.Errorf("packet %d answered %d times", seq, k)
		}
	}

	// The capture's own counters agree: everything received was stored,
	// no write failed, the ring dropped nothing.
	var st struct {
		Capture struct {
			Interfaces []struct {
				Queues []struct {
					Packets          uint64 `json:"packets"`
					Stored           uint64 `json:"stored"`
					SpoolWriteErrors uint64 `json:"spool_write_errors"`
					SpoolWriteLost   uint64 `json:"spool_write_lost"`
					Ring             *struct {
						Drops uint64 `json:"drops"`
					} `json:"ring"`
				} `json:"queues"`
			} `json:"interfaces"`
		} `json:"capture"`
	}
	resp, err := client.Get(base + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var received, stored, writeErrors, lost, drops uint64
	for _, ifc := range st.Capture.Interfaces {
		for _, q := range ifc.Queues {
			received += q.Packets
			stored += q.Stored
			writeErrors += q.SpoolWriteErrors
			lost += q.SpoolWriteLost
			if q.Ring != nil {
				drops += q.Ring.Drops
			}
		}
	}
	if received != packets || stored != packets || writeErrors != 0 || lost != 0 || drops != 0 {
		t.Errorf("capture counters: received %d stored %d write errors %d lost %d ring drops %d, want %d, %d, 0, 0, 0",
			received, stored, writeErrors, lost, drops, packets, packets)
	}
	files, _ := filepath.Glob(filepath.Join(spoolDir, "*.pcap"))
	t.Logf("%d spool files (rotated every second)", len(files))

	// The caps did the refusing, and are what the API holds.
	resp, err = client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metric := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(metrics)
		if m == nil {
			t.Errorf("/metrics lacks %s", name)
			return 0
		}
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		return f
	}
	refused := metric(`stenod_api_connections_refused_total{reason="per_client"}`) + metric(`stenod_api_connections_refused_total{reason="total"}`)
	accepted := metric("stenod_api_connections_accepted_total")
	limit := metric(`stenod_api_connections_limit{scope="total"}`)
	// Every connection made was accepted within the caps or refused; with
	// 8 addresses of at most 64 slots each, most were refused (idle ones
	// give their slot back after the header timeout, so a slow flood has
	// a few more accepted).
	if accepted+refused < float64(made) || refused < float64(made)/2 {
		t.Errorf("%v accepted and %v refused of the %d connections made", accepted, refused, made)
	}
	if open := metric("stenod_api_connections_open"); open > limit {
		t.Errorf("%v connections open, above the cap %v", open, limit)
	}
	t.Logf("%v connections accepted, %v refused; total cap %v", accepted, refused, limit)
	if strings.Contains(d.logText(), "level=ERROR") {
		t.Errorf("errors logged")
	}
	d.stop(t)
}

// floodAnswer queries every test frame over TLS and counts each sequence
// number; a packet that is not one of ours is an error.
func floodAnswer(client *http.Client, base string, sent map[uint32]bool) (map[uint32]int, error) {
	resp, err := client.Post(base+"/query", "text/plain", strings.NewReader("udp and port 7000"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("query: %s: %s", resp.Status, b)
	}
	rd, err := pcapio.NewReader(resp.Body)
	if err != nil {
		return nil, err
	}
	got := map[uint32]int{}
	var p pcapio.Packet
	for {
		if err := rd.Next(&p); err == io.EOF {
			return got, nil
		} else if err != nil {
			return nil, err
		}
		if len(p.Data) < 46 {
			return nil, fmt.Errorf("short packet %x", p.Data)
		}
		seq := binary.BigEndian.Uint32(p.Data[42:])
		if !sent[seq] || !bytes.Equal(p.Data, crashFrame(seq)) {
			return nil, fmt.Errorf("corrupt or unknown packet (seq %d): %x", seq, p.Data)
		}
		got[seq]++
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
