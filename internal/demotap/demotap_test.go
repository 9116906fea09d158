//go:build linux

package demotap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stenod/stenod/pcapio"
)

// TestLoadPackets: by default the built-in samples are replayed, plus the
// captures of the system directory when there are any, and nothing of a
// checkout's testdata; Generated replays generated traffic; a directory
// without captures is an error.
func TestLoadPackets(t *testing.T) {
	// A checkout's captures in the working directory are not read.
	work := t.TempDir()
	t.Chdir(work)
	writeCapture(t, filepath.Join(work, "testdata", "pcaps", "chrissanders-packets", "x.pcap"), 5)
	systemSamplesDir = filepath.Join(work, "missing")
	t.Cleanup(func() { systemSamplesDir = SystemSamplesDir })

	pkts, src, err := loadPackets("")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(src, "built-in") || strings.Contains(src, work) {
		t.Errorf("source %q, want the built-in samples only", src)
	}
	if len(pkts) < 1000 {
		t.Errorf("%d packets from the built-in samples", len(pkts))
	}
	for i, p := range pkts {
		if len(p) < 14 || len(p) > MaxFrame {
			t.Fatalf("packet %d: %d bytes", i, len(p))
		}
	}
	builtin := len(pkts)

	// The system directory adds its captures.
	systemSamplesDir = filepath.Join(work, "share")
	writeCapture(t, filepath.Join(systemSamplesDir, "more.pcap"), 7)
	pkts, src, err = loadPackets("")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != builtin+7 || !strings.Contains(src, systemSamplesDir) {
		t.Errorf("with %s: %d packets from %q, want %d", systemSamplesDir, len(pkts), src, builtin+7)
	}

	// A configured file replaces both.
	pkts, src, err = loadPackets(filepath.Join(systemSamplesDir, "more.pcap"))
	if err != nil || len(pkts) != 7 || src != filepath.Join(systemSamplesDir, "more.pcap") {
		t.Errorf("a configured file: %d packets from %q, %v", len(pkts), src, err)
	}

	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "notes.txt"), []byte("not a capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadPackets(empty); err == nil {
		t.Error("a directory without captures was accepted")
	}

	pkts, src, err = loadPackets(Generated)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != generated || !strings.Contains(src, "generated") {
		t.Errorf("generated: %d packets from %q", len(pkts), src)
	}
}

// TestSamplesSmall: the embedded captures stay small, each has its line in
// the README, and each is Ethernet.
func TestSamplesSmall(t *testing.T) {
	ents, err := samples.ReadDir("samples")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("samples", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, e := range ents {
		b, err := samples.ReadFile("samples/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		if !strings.Contains(string(readme), "| "+e.Name()+" |") {
			t.Errorf("%s is not in samples/README.md", e.Name())
		}
		var r reader
		r.out, r.total = readFile(samples, "samples/"+e.Name(), nil, 0)
		if len(r.out) == 0 {
			t.Errorf("%s: no Ethernet packet", e.Name())
		}
	}
	if total > 2<<20 {
		t.Errorf("the embedded samples take %d bytes, more than 2 MiB", total)
	}
}

// writeCapture writes a pcap of n small Ethernet frames at path.
func writeCapture(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := pcapio.AppendPcapHeader(nil, 65535, linkTypeEthernet)
	for i := range n {
		b = pcapio.AppendRecord(b, int64(i+1), 60, make([]byte, 60))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadCapturesSkipsOtherLinkTypes: a capture of another link type
// contributes nothing.
func TestReadCapturesSkipsOtherLinkTypes(t *testing.T) {
	f := filepath.Join(t.TempDir(), "raw.pcap")
	b := pcapio.AppendPcapHeader(nil, 65535, 101) // LINKTYPE_RAW
	b = pcapio.AppendRecord(b, 1, 40, make([]byte, 40))
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pkts, err := readCaptures(f)
	if err != nil || len(pkts) != 0 {
		t.Errorf("readCaptures = %d packets, %v", len(pkts), err)
	}
}
