package spool_test

import (
	"bufio"
	"context"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/spool"
)

// TestActiveFileWhileWritten: while a writer fills its buffers (direct
// writes of whole blocks in the background), a query sees a prefix of the
// packets, whole, and after Flush all of them; the active file is a valid
// pcap of whole records throughout, with nothing after the last one.
func TestActiveFileWhileWritten(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateSize = 64 << 20 // one active file throughout
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(5)
	seen := 0
	for range 40 {
		g.must(t, w, 97)
		got := answer(t, sp, everything)
		if len(got) < seen {
			t.Fatalf("%d packets visible, %d before", len(got), seen)
		}
		seen = len(got)
		sameAnswer(t, "before Flush", got, g.sent[:seen])
	}
	if seen == 0 {
		t.Fatal("no packet visible before Flush: full buffers were not written")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	sameAnswer(t, "after Flush", answer(t, sp, everything), g.sent)

	// The file on disk while it is active: every record, nothing after.
	files := pcaps(t, dir)
	if len(files) != 1 {
		t.Fatalf("%d pcap files", len(files))
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	onDisk, err := readPcap(f)
	if err != nil {
		t.Fatalf("active file: %v", err)
	}
	sameAnswer(t, "active file", onDisk, g.sent)

	// A second batch after Flush continues the file where it ended.
	g.must(t, w, 500)
	closeAll(t, w, sp)
	sp = open(t, cfg)
	sameAnswer(t, "reopened", answer(t, sp, everything), g.sent)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}

// importChildEnv names the spool directory and the capture of an import
// that TestImportKilled runs in a child process and kills.
const importChildEnv = "STENOD_TEST_IMPORT_CHILD"

// TestImportKilled kills an import (a child process) with SIGKILL at
// several points, with direct writes under way, and checks that Open then
// finds whole files holding the capture's first packets in order, each
// once, and nothing else.
func TestImportKilled(t *testing.T) {
	if dir := os.Getenv(importChildEnv); dir != "" {
		importChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("imports a generated capture several times")
	}
	work := t.TempDir()
	capture := filepath.Join(work, "capture.pcap")
	const n = 150_000
	cf, err := os.Create(capture)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(cf)
	if err := trafficgen.WritePcap(bw, 3, n); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := cf.Close(); err != nil {
		t.Fatal(err)
	}
	cf, err = os.Open(capture)
	if err != nil {
		t.Fatal(err)
	}
	want, err := readPcap(cf)
	cf.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i, killAt := range []int64{300 << 10, 5 << 20, 13 << 20, 29 << 20} {
		dir := filepath.Join(work, "spool", string(rune('a'+i)))
		cmd := exec.Command(os.Args[0], "-test.run=^TestImportKilled$", "-test.v")
		cmd.Env = append(os.Environ(), importChildEnv+"="+dir+","+capture)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for deadline := time.Now().Add(30 * time.Second); stored(dir) < killAt; time.Sleep(100 * time.Microsecond) {
			select {
			case err := <-done:
				t.Fatalf("import ended before it was killed at %d bytes: %v", killAt, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("import did not reach %d bytes within 30 s", killAt)
			}
		}
		if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-done
		cfg := importConfig(dir)
		sp := open(t, cfg)
		got := answer(t, sp, everything)
		t.Logf("killed at %d bytes: %d packets kept, %d files", killAt, len(got), len(pcaps(t, dir)))
		if len(got) == 0 {
			t.Fatalf("killed at %d bytes: nothing kept", killAt)
		}
		sameAnswer(t, "after the kill", got, want[:len(got)])
		if err := sp.Close(); err != nil {
			t.Fatal(err)
		}
		// Open repaired everything: a second one finds the same, and
		// every pcap ends where its index does.
		checkRepaired(t, dir, got)
	}
}

// stored is how many bytes the files in dir hold (0 before it exists).
func stored(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

// importConfig has small files, so that an import rotates and seals, and
// the default write buffer.
func importConfig(dir string) spool.Config {
	cfg := testConfig(dir)
	cfg.RotateSize = 8 << 20
	cfg.WriteBuffer = spool.DefaultConfig().WriteBuffer
	return cfg
}

// importChild imports the capture named in importChildEnv and then waits,
// without closing anything, for the parent to kill it.
func importChild(t *testing.T, env string) {
	dir, capture, _ := strings.Cut(env, ",")
	sp := open(t, importConfig(dir))
	w, err := sp.NewWriter("import", "import")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(capture)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Import(context.Background(), w, capture, f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Hour)
}

// TestLongRecords: records as long as the snap length, which a write buffer
// holds only a few of, so that a full buffer's whole blocks may end inside
// its only record.
func TestLongRecords(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateSize = 64 << 20
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(8)
	rng := rand.New(rand.NewPCG(8, 8))
	var k flow.Key
	for i := range 300 {
		frame, ts := g.g.Next()
		if i%3 != 0 {
			frame = append(frame, make([]byte, rng.IntN(cfg.SnapLen-len(frame)+1))...)
		}
		flow.Parse(frame, &k)
		g.sent = append(g.sent, pkt{ts: ts, origLen: len(frame), capLen: len(frame), sum: crc32.ChecksumIEEE(frame)})
		if err := w.Append(ts, len(frame), frame, &k); err != nil {
			t.Fatal(err)
		}
		if i%25 == 0 {
			got := answer(t, sp, everything)
			sameAnswer(t, "before Flush", got, g.sent[:len(got)])
		}
		if i%7 == 6 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, "after Flush", answer(t, sp, everything), g.sent)
		}
	}
	closeAll(t, w, sp)
	checkRepaired(t, dir, g.sent)
}
