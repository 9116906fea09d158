package api

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/internal/certs"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// tcpdumpLine is the start of a packet line of 'tcpdump -n': a time of day.
// Some protocols print continuation lines; they do not start like this.
var tcpdumpLine = regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d+ `)

// stenocurl runs the pipeline of stenographer's stenocurl and stenoread:
// curl with the client certificate posting the query, into tcpdump -nr -.
// trust is the file curl verifies the server with: stenocurl itself passes
// server_cert.pem (curl accepts a leaf as trust anchor), the documented
// form is ca_cert.pem. It returns tcpdump's output and curl's error.
func stenocurl(t *testing.T, dir, trust, base, text string, limitPackets int) (string, error) {
	t.Helper()
	curlArgs := []string{"-s", "--cert", filepath.Join(dir, certs.ClientCert), "--key", filepath.Join(dir, certs.ClientKey),
		"--cacert", filepath.Join(dir, trust)}
	if limitPackets > 0 {
		curlArgs = append(curlArgs, "-H", HeaderLimitPackets+": "+strconv.Itoa(limitPackets))
	}
	curlArgs = append(curlArgs, "--data-binary", text, base+"/query")
	curl := exec.Command("curl", curlArgs...)
	tcpdump := exec.Command("tcpdump", "-nr", "-")
	pipe, err := curl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tcpdump.Stdin = pipe
	var out, curlErr, tdErr bytes.Buffer
	tcpdump.Stdout, tcpdump.Stderr, curl.Stderr = &out, &tdErr, &curlErr
	if err := tcpdump.Start(); err != nil {
		t.Fatal(err)
	}
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	cerr := curl.Wait()
	if err := tcpdump.Wait(); err != nil && cerr == nil {
		t.Fatalf("tcpdump: %v\n%s", err, tdErr.String())
	}
	if cerr != nil {
		cerr = errors.Join(cerr, errors.New(curlErr.String()+tdErr.String()))
	}
	return out.String(), cerr
}

// TestStenocurlCompatible drives the API exactly as stenographer's stenocurl
// does, over TLS with the certificates of certs init.
func TestStenocurlCompatible(t *testing.T) {
	testutil.RequireCommand(t, "curl")
	testutil.RequireCommand(t, "tcpdump")
	sp := importSpool(t)
	dir := makeCerts(t)
	cfg := DefaultConfig()
	cfg.CertsDir = dir
	base := serve(t, newServer(t, cfg, sp))

	for _, tc := range []struct {
		query string
		limit int
	}{{"port 53", 0}, {"port 53", 3}, {"tcp", 0}, {"ip6", 4}, {"host 1.2.3.4", 0}} {
		_, res := want(t, sp, tc.query, engine.Options{LimitPackets: int64(tc.limit)})
		for _, trust := range []string{certs.CACert, certs.ServerCert} {
			out, err := stenocurl(t, dir, trust, base, tc.query, tc.limit)
			if err != nil {
				t.Fatalf("%q, --cacert %s: curl: %v", tc.query, trust, err)
			}
			if n := len(tcpdumpLine.FindAllString(out, -1)); int64(n) != res.Packets {
				t.Errorf("%q limit %d: tcpdump printed %d packets, want %d:\n%s", tc.query, tc.limit, n, res.Packets, out)
			}
		}
		if tc.limit > 0 && res.Packets != int64(tc.limit) {
			t.Errorf("%q: the test spool has only %d packets, want more than %d", tc.query, res.Packets, tc.limit)
		}
	}

	// A broken answer makes curl fail, as stenoread's pipeline expects.
	sp2, _ := syntheticSpool(t)
	s2 := newServer(t, cfg, sp2)
	breakAnswers(s2, synthPackets)
	base2 := serve(t, s2)
	if _, err := stenocurl(t, dir, certs.CACert, base2, "udp and before "+synthC.Format(time.RFC3339), 0); err == nil {
		t.Error("curl took an aborted answer for whole")
	} else {
		t.Logf("curl on an aborted answer: %v", err)
	}
}

// buildStenod builds cmd/stenod into a temporary directory.
func buildStenod(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	bin := filepath.Join(t.TempDir(), "stenod")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/stenod")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type runResult struct {
	stdout, stderr string
	err            error
}

func runBin(t *testing.T, env []string, bin string, args ...string) runResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return runResult{stdout.String(), stderr.String(), err}
}

// TestStenodRead runs `stenod certs init` and `stenod read` as built
// binaries against a server in this process.
func TestStenodRead(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stenod binary")
	}
	if _, err := exec.LookPath("go"); err != nil {
		testutil.SkipOrFail(t, "needs the go command to build stenod")
	}
	bin := buildStenod(t)
	work := t.TempDir()
	dir := filepath.Join(work, "certs")
	if r := runBin(t, nil, bin, "certs", "init", "--host", "sensor.example", dir); r.err != nil {
		t.Fatalf("certs init: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	for name, mode := range map[string]os.FileMode{certs.ServerKey: 0o600, certs.ClientKey: 0o640, certs.CACert: 0o644} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", name, st.Mode(), err, mode)
		}
	}
	if r := runBin(t, nil, bin, "certs", "init", dir); r.err == nil || !strings.Contains(r.stderr, "exists") {
		t.Errorf("second certs init: %v %s", r.err, r.stderr)
	}

	sp := importSpool(t)
	cfg := DefaultConfig()
	cfg.CertsDir = dir
	base := serve(t, newServer(t, cfg, sp))
	exp, res := want(t, sp, "port 53", engine.Options{})
	noTcpdump := []string{"PATH=" + t.TempDir()}

	t.Run("tcpdump -w", func(t *testing.T) {
		testutil.RequireCommand(t, "tcpdump")
		out := filepath.Join(work, "out.pcap")
		r := runBin(t, nil, bin, "read", "--server", base, "--certs", dir, "port 53", "-w", out)
		if r.err != nil {
			t.Fatalf("stenod read: %v\n%s", r.err, r.stderr)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rd, err := pcapgo.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		n := int64(0)
		for {
			_, _, err := rd.ReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != res.Packets {
			t.Errorf("%s holds %d packets, want %d", out, n, res.Packets)
		}
	})
	t.Run("tcpdump print with limit", func(t *testing.T) {
		testutil.RequireCommand(t, "tcpdump")
		r := runBin(t, nil, bin, "read", "--limit-packets", "2", "--server", base, "--certs", dir, "port 53", "-n")
		if r.err != nil {
			t.Fatalf("stenod read: %v\n%s", r.err, r.stderr)
		}
		if n := len(tcpdumpLine.FindAllString(r.stdout, -1)); n != 2 {
			t.Errorf("printed %d packets, want 2:\n%s", n, r.stdout)
		}
	})
	t.Run("no tcpdump, -w", func(t *testing.T) {
		out := filepath.Join(work, "direct.pcap")
		r := runBin(t, noTcpdump, bin, "read", "--certs", dir, "--server", strings.TrimPrefix(base, "https://"), "port 53", "-w", out)
		if r.err != nil {
			t.Fatalf("stenod read: %v\n%s", r.err, r.stderr)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, exp) {
			t.Errorf("%s: %d bytes (%v), want the engine's %d", out, len(got), err, len(exp))
		}
	})
	t.Run("no tcpdump, no -w", func(t *testing.T) {
		r := runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", dir, "port 53")
		if r.err == nil || !strings.Contains(r.stderr, "tcpdump is not installed") {
			t.Errorf("want a clear refusal: %v %q", r.err, r.stderr)
		}
	})
	t.Run("bad query", func(t *testing.T) {
		r := runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", dir, "host 1.2.3", "-w", filepath.Join(work, "bad.pcap"))
		if r.err == nil || !strings.Contains(r.stderr, "400") || !strings.Contains(r.stderr, "host needs an IPv4 or IPv6 address") {
			t.Errorf("bad query: %v %q", r.err, r.stderr)
		}
	})
	t.Run("wrong certificates", func(t *testing.T) {
		other := makeCerts(t)
		r := runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", other, "port 53", "-w", filepath.Join(work, "x.pcap"))
		if r.err == nil {
			t.Errorf("read with another CA's certificates succeeded")
		}
	})
	t.Run("unix socket", func(t *testing.T) {
		scfg := DefaultConfig()
		scfg.Socket, scfg.SocketGroup = filepath.Join(t.TempDir(), "run", "stenod.sock"), ""
		serveUnix(t, newServer(t, scfg, sp))
		out := filepath.Join(work, "socket.pcap")
		r := runBin(t, noTcpdump, bin, "read", "--socket", scfg.Socket, "port 53", "-w", out)
		if r.err != nil {
			t.Fatalf("stenod read --socket: %v\n%s", r.err, r.stderr)
		}
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, exp) {
			t.Errorf("%s: %d bytes (%v), want the engine's %d", out, len(got), err, len(exp))
		}
		r = runBin(t, noTcpdump, bin, "read", "--socket", filepath.Join(t.TempDir(), "none.sock"), "port 53", "-w", out)
		if r.err == nil || !strings.Contains(r.stderr, "is stenod running?") {
			t.Errorf("read from a missing socket: %v %q", r.err, r.stderr)
		}
		r = runBin(t, noTcpdump, bin, "read", "--socket", scfg.Socket, "--server", base, "port 53", "-w", out)
		if r.err == nil || !strings.Contains(r.stderr, "--socket goes without --server") {
			t.Errorf("read with --socket and --server: %v %q", r.err, r.stderr)
		}
	})
	t.Run("alert", func(t *testing.T) {
		// The DNS answer of dns.pcap, by its Suricata alert (the third
		// line of testdata/alerts/eve.json).
		ev := filepath.Join(work, "alert.json")
		if err := os.WriteFile(ev, append(alertLines(t, "eve.json")[2], '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(work, "alert.pcap")
		r := runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", dir, "--alert", ev, "--window", "1m", "--", "-w", out)
		if r.err != nil || !strings.Contains(r.stderr, "query: community-id 1:") {
			t.Fatalf("read --alert: %v %q", r.err, r.stderr)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if n := countPcap(t, data); n != 1 {
			t.Errorf("read --alert: %d packets, want 1", n)
		}
		two := filepath.Join(work, "two.json")
		if err := os.WriteFile(two, bytes.Join(alertLines(t, "eve.json")[:2], []byte("\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		r = runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", dir, "--alert", two, "--", "-w", out)
		if r.err == nil || !strings.Contains(r.stderr, "2 lines: give one event") {
			t.Errorf("read --alert with two events: %v %q", r.err, r.stderr)
		}
		r = runBin(t, noTcpdump, bin, "read", "--server", base, "--certs", dir, "--alert", ev, "--window", "soon", "--", "-w", out)
		if r.err == nil || !strings.Contains(r.stderr, `window "soon"`) {
			t.Errorf("read --alert --window soon: %v %q", r.err, r.stderr)
		}
	})
	t.Run("damaged records", func(t *testing.T) {
		sp2, files := syntheticSpool(t)
		base2 := serve(t, newServer(t, DefaultConfig(), sp2))
		spoil(t, files["b"], 24+synthPackets/2*(16+600), 4096) // 7 records
		q := "udp and before " + synthC.Format(time.RFC3339)
		out := filepath.Join(work, "damaged.pcap")
		r := runBin(t, noTcpdump, bin, "read", "--server", base2, q, "-w", out)
		if code := exitCode(r.err); code != 3 || !strings.Contains(r.stderr, "7 damaged records left out") {
			t.Errorf("answer without damaged records: exit %d (%v) %q", code, r.err, r.stderr)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if n := countPcap(t, data); n != 2*synthPackets-7 {
			t.Errorf("wrote %d packets, want %d", n, 2*synthPackets-7)
		}
	})
	t.Run("aborted answer", func(t *testing.T) {
		sp2, _ := syntheticSpool(t)
		s2 := newServer(t, DefaultConfig(), sp2)
		breakAnswers(s2, synthPackets)
		base2 := serve(t, s2)
		q := "udp and before " + synthC.Format(time.RFC3339)
		out := filepath.Join(work, "aborted.pcap")
		r := runBin(t, noTcpdump, bin, "read", "--server", base2, q, "-w", out)
		if r.err == nil || !strings.Contains(r.stderr, "broke off") {
			t.Errorf("direct write of an aborted answer: %v %q", r.err, r.stderr)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("aborted answer left %s: %v", out, err)
		}
		if _, err := exec.LookPath("tcpdump"); err == nil {
			r = runBin(t, nil, bin, "read", "--server", base2, q, "-w", out)
			if r.err == nil || !strings.Contains(r.stderr, "broke off") {
				t.Errorf("tcpdump of an aborted answer: %v %q", r.err, r.stderr)
			}
		}
	})
}
