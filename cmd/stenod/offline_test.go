package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(&errb, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = run(ctx, args, e)
	return code, out.String(), errb.String()
}

// TestImportEveryTestCapture: every test capture goes through import
// without a crash or a hang: stored, or refused with a message that names
// the file (and, for a bad record, its offset).
func TestImportEveryTestCapture(t *testing.T) {
	files := testpcaps.Files(t, "")
	stored, refused := 0, 0
	dir := t.TempDir()
	for _, f := range files {
		code, _, stderr := runCmd(t, "import", "--spool", dir, f)
		switch code {
		case 0:
			stored++
		case 1:
			refused++
			if !strings.Contains(stderr, f) {
				t.Errorf("%s: error does not name the file: %s", f, stderr)
			}
			if !strings.Contains(stderr, "offset ") && !strings.Contains(stderr, "not a pcap") {
				t.Errorf("%s: error does not name an offset: %s", f, stderr)
			}
		default:
			t.Errorf("%s: exit %d: %s", f, code, stderr)
		}
	}
	t.Logf("%d files: %d stored whole, %d refused or cut short with a message", len(files), stored, refused)
	// Everything stored is queryable: a time-only query returns it all.
	code, out, stderr := runCmd(t, "query", "--spool", dir, "after", "1970-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("query: exit %d: %s", code, stderr)
	}
	r, err := pcapio.NewReader(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var p pcapio.Packet
	for r.Next(&p) == nil {
		n++
	}
	if n < 15000 {
		t.Fatalf("only %d packets came back", n)
	}
}

func TestImportOtherLinkTypeNamesFileAndOffset(t *testing.T) {
	var file string
	for _, f := range testpcaps.Files(t, "chrissanders-packets") {
		if strings.Contains(f, "80211beacon") {
			file = f
		}
	}
	if file == "" {
		t.Skip("80211beacon.pcapng not among the test captures")
	}
	code, _, stderr := runCmd(t, "import", "--spool", t.TempDir(), file)
	if code != 1 || !strings.Contains(stderr, file) || !strings.Contains(stderr, "offset 48") || !strings.Contains(stderr, "not Ethernet") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestQueryCommand(t *testing.T) {
	dir := t.TempDir()
	caps := testpcaps.Files(t, "chrissanders-packets")
	var eth []string
	for _, f := range caps {
		if strings.Contains(f, "dns") || strings.Contains(f, "http_") {
			eth = append(eth, f)
		}
	}
	if code, _, stderr := runCmd(t, append([]string{"import", "--spool", dir}, eth...)...); code != 0 {
		t.Fatalf("import: %s", stderr)
	}
	// A bad query names the token and where it is.
	code, _, stderr := runCmd(t, "query", "--spool", dir, "host 1.2.3")
	if code != 2 || !strings.Contains(stderr, `"1.2.3"`) || !strings.Contains(stderr, "at 5") {
		t.Fatalf("bad query: exit %d: %s", code, stderr)
	}
	// Query words may be one argument or several.
	_, one, _ := runCmd(t, "query", "--spool", dir, "udp and port 53")
	_, many, _ := runCmd(t, "query", "--spool", dir, "udp", "and", "port", "53")
	if one != many || len(one) <= 24 {
		t.Fatalf("answers differ or are empty: %d and %d bytes", len(one), len(many))
	}
	// -w, pcapng, limits.
	out := filepath.Join(t.TempDir(), "a.pcapng")
	code, stdout, stderr := runCmd(t, "query", "--spool", dir, "--format", "pcapng", "--limit-packets", "3", "-w", out, "port 53")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "limit") {
		t.Fatalf("exit %d, %d bytes on stdout: %s", code, len(stdout), stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d packets, want 3", n)
	}
	// A missing spool directory is an error, not an empty answer.
	if code, _, stderr := runCmd(t, "query", "--spool", filepath.Join(dir, "nope"), "tcp"); code != 1 || !strings.Contains(stderr, "nope") {
		t.Fatalf("missing spool: exit %d: %s", code, stderr)
	}
}

// TestQueryDamagedRecords: a record damaged after its index was sealed is
// left out of stenod query's answer, the count goes to stderr, and the exit
// status is 3; every other packet is still there.
func TestQueryDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	capt := filepath.Join(testpcaps.Dir(t), "chrissanders-packets", "dns_query_response.pcapng")
	if code, _, stderr := runCmd(t, "import", "--spool", dir, capt); code != 0 {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	_, before, _ := runCmd(t, "query", "--spool", dir, "after 1970-01-01T00:00:00Z")
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if len(files) != 1 {
		t.Fatalf("spool files %v", files)
	}
	// A flipped bit in the first record's data.
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 24+16+20); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, 24+16+20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, after, stderr := runCmd(t, "query", "--spool", dir, "after 1970-01-01T00:00:00Z")
	if code != exitDamaged || !strings.Contains(stderr, "1 damaged records left out") || !strings.Contains(stderr, "checksum") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// The answer is the one before, less its first record.
	rb, err := pcapio.NewReader(strings.NewReader(before))
	if err != nil {
		t.Fatal(err)
	}
	var p pcapio.Packet
	if err := rb.Next(&p); err != nil {
		t.Fatal(err)
	}
	first := pcapio.PcapHeaderSize + pcapio.RecordHeaderSize + p.CapLen
	if before[:pcapio.PcapHeaderSize]+before[first:] != after {
		t.Fatalf("answer of %d bytes, want the %d of before less its first record", len(after), len(before)-first+pcapio.PcapHeaderSize)
	}
}

// TestQuerySeveralSpools: stenod query answers from several spool
// directories, given as repeated --spool flags, as a comma list or as the
// spool.dirs of a configuration file, merged in time order; -w - writes to
// standard output, not to a file named "-".
func TestQuerySeveralSpools(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	var inA, inB []string
	for _, f := range testpcaps.Files(t, "chrissanders-packets") {
		switch {
		case strings.Contains(f, "dns"):
			inA = append(inA, f)
		case strings.Contains(f, "http_"):
			inB = append(inB, f)
		}
	}
	for dir, files := range map[string][]string{a: inA, b: inB} {
		if code, _, stderr := runCmd(t, append([]string{"import", "--spool", dir}, files...)...); code != 0 {
			t.Fatalf("import: %s", stderr)
		}
	}
	const q = "tcp or udp"
	packets := func(what, pcap string) []int64 {
		t.Helper()
		r, err := pcapio.NewReader(strings.NewReader(pcap))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var ts []int64
		var p pcapio.Packet
		for r.Next(&p) == nil {
			ts = append(ts, p.Timestamp)
		}
		return ts
	}
	_, onlyA, _ := runCmd(t, "query", "--spool", a, q)
	_, onlyB, _ := runCmd(t, "query", "--spool", b, q)
	code, both, stderr := runCmd(t, "query", "--spool", a, "--spool", b, q)
	if code != 0 {
		t.Fatalf("two --spool: exit %d: %s", code, stderr)
	}
	nA, nB, tsBoth := len(packets("a", onlyA)), len(packets("b", onlyB)), packets("both", both)
	if nA == 0 || nB == 0 || len(tsBoth) != nA+nB {
		t.Fatalf("%d packets from both, want %d + %d", len(tsBoth), nA, nB)
	}
	if !slices.IsSorted(tsBoth) {
		t.Error("the merged answer is not in time order")
	}
	if _, comma, _ := runCmd(t, "query", "--spool", a+","+b, q); comma != both {
		t.Error("--spool A,B answers differently from --spool A --spool B")
	}

	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg, []byte(`{"spool": {"dirs": ["`+a+`", "`+b+`"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, fromConfig, stderr := runCmd(t, "query", "--config", cfg, q); code != 0 || fromConfig != both {
		t.Errorf("--config: exit %d, %d bytes (want %d): %s", code, len(fromConfig), len(both), stderr)
	}
	if code, _, stderr := runCmd(t, "query", "--config", cfg, "--spool", a, q); code != 2 {
		t.Errorf("--config with --spool: exit %d: %s", code, stderr)
	}

	// -w - is standard output.
	t.Chdir(t.TempDir())
	code, stdout, stderr := runCmd(t, "query", "--spool", a, "-w", "-", q)
	if code != 0 || stdout != onlyA {
		t.Errorf("-w -: exit %d, %d bytes on stdout, want %d: %s", code, len(stdout), len(onlyA), stderr)
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error("-w - created a file named -")
	}
	// -w FILE leaves nothing else behind.
	code, stdout, _ = runCmd(t, "query", "--spool", a, "-w", "out.pcap", q)
	if data, err := os.ReadFile("out.pcap"); code != 0 || stdout != "" || err != nil || string(data) != onlyA {
		t.Errorf("-w out.pcap: exit %d, %v", code, err)
	}
	if ents, _ := os.ReadDir("."); len(ents) != 1 {
		t.Errorf("files left: %v", ents)
	}
}

// TestImportBigRecords: records longer than 65,535 bytes (BIG TCP, GRO)
// are stored whole by stenod import and come back whole from stenod query,
// in a pcap whose header admits them; tcpdump reads them at full length.
func TestImportBigRecords(t *testing.T) {
	frame := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i) ^ seed
		}
		copy(b[12:], []byte{0x08, 0x00, 0x45, 0}) // IPv4, so it parses as a frame
		return b
	}
	sizes := []int{100, 100_000, 65_536, spool.MaxSnapLen}
	in := pcapio.AppendPcapHeader(nil, spool.MaxSnapLen, pcapio.LinkTypeEthernet)
	var frames [][]byte
	for i, n := range sizes {
		f := frame(n, byte(i))
		frames = append(frames, f)
		in = pcapio.AppendRecord(in, int64(i+1)*1_000_000_000, n, f)
	}
	file := filepath.Join(t.TempDir(), "big.pcap")
	if err := os.WriteFile(file, in, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if code, _, stderr := runCmd(t, "import", "--spool", dir, file); code != 0 {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	code, out, stderr := runCmd(t, "query", "--spool", dir, "after 1970-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("query: exit %d: %s", code, stderr)
	}
	r, err := pcapio.NewReader(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if snap := r.Interfaces()[0].SnapLen; snap < spool.MaxSnapLen {
		t.Errorf("answer's snap length %d, below its largest record", snap)
	}
	var p pcapio.Packet
	for i, f := range frames {
		if err := r.Next(&p); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if p.CapLen != len(f) || p.OrigLen != len(f) || !bytes.Equal(p.Data, f) {
			t.Errorf("record %d: %d of %d bytes came back, want all %d", i, p.CapLen, p.OrigLen, len(f))
		}
	}
	if tcpdump, err := exec.LookPath("tcpdump"); err == nil {
		ans := filepath.Join(t.TempDir(), "answer.pcap")
		if err := os.WriteFile(ans, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command(tcpdump, "-r", ans, "-nn", "-e").CombinedOutput()
		if err != nil || !strings.Contains(string(got), "length 100000:") || !strings.Contains(string(got), "length 262144:") {
			t.Errorf("tcpdump: %v\n%s", err, got)
		}
	}
}
