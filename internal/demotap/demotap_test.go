//go:build linux

package demotap

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stenod/stenod/internal/testpcaps"
	"github.com/stenod/stenod/pcapio"
)

// TestLoadPackets: the sample captures give whole Ethernet frames that fit
// the MTU; a directory without captures is an error; no captures at all
// falls back to generated traffic.
func TestLoadPackets(t *testing.T) {
	dir := testpcaps.Dir(t)
	t.Setenv("STENOD_TESTDATA", dir)
	pkts, src, err := loadPackets("")
	if err != nil {
		t.Fatal(err)
	}
	if src != filepath.Join(dir, "chrissanders-packets") {
		t.Errorf("source %q, want the chrissanders-packets folder", src)
	}
	if len(pkts) < 1000 {
		t.Errorf("%d packets from the samples", len(pkts))
	}
	for i, p := range pkts {
		if len(p) < 14 || len(p) > MaxFrame {
			t.Fatalf("packet %d: %d bytes", i, len(p))
		}
	}

	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "notes.txt"), []byte("not a capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadPackets(empty); err == nil {
		t.Error("a directory without captures was accepted")
	}

	t.Setenv("STENOD_TESTDATA", empty)
	t.Chdir(empty)
	pkts, src, err = loadPackets("")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != generated || src == "" {
		t.Errorf("fallback: %d packets from %q", len(pkts), src)
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
