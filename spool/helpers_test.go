package spool_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// pkt is one packet as the test knows it, independently of the spool.
type pkt struct {
	ts      int64
	origLen int
	capLen  int
	sum     uint32 // CRC-32 of the captured bytes
}

// gen produces generated traffic and remembers every packet it produced.
type gen struct {
	g    *trafficgen.Generator
	key  flow.Key
	sent []pkt
}

func newGen(seed uint64) *gen { return &gen{g: trafficgen.New(seed, 500)} }

// next appends the next generated packet through w and remembers it.
func (g *gen) next(w *spool.Writer) (pkt, error) {
	frame, ts := g.g.Next()
	flow.Parse(frame, &g.key)
	p := pkt{ts: ts, origLen: len(frame), capLen: len(frame), sum: crc32.ChecksumIEEE(frame)}
	g.sent = append(g.sent, p)
	return p, w.Append(ts, len(frame), frame, &g.key)
}

// must appends n packets and fails the test on any error.
func (g *gen) must(t testing.TB, w *spool.Writer, n int) {
	t.Helper()
	for range n {
		if _, err := g.next(w); err != nil {
			t.Fatal(err)
		}
	}
}

// everything matches every packet a test stores.
const everything = "after 1970-01-01T00:00:00Z"

// answer runs q on sp through the engine and reads the answer back.
func answer(t testing.TB, sp *spool.Spool, q string) []pkt {
	t.Helper()
	out, err := answerErr(sp, q)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func answerErr(sp *spool.Spool, q string) ([]pkt, error) {
	pq, err := query.Parse(q, time.Now())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	pw, err := pcapio.NewPcapWriter(&buf, 65535)
	if err != nil {
		return nil, err
	}
	if _, err := engine.Run(context.Background(), sp, pq, pw, engine.Options{}); err != nil {
		return nil, err
	}
	return readPcap(&buf)
}

// readPcap reads a whole pcap stream.
func readPcap(r io.Reader) ([]pkt, error) {
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return nil, err
	}
	var out []pkt
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, pkt{ts: p.Timestamp, origLen: p.OrigLen, capLen: p.CapLen, sum: crc32.ChecksumIEEE(p.Data)})
	}
}

// sameAnswer fails unless got is exactly want: every packet once, in order.
func sameAnswer(t testing.TB, what string, got, want []pkt) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d packets, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: packet %d is %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// isSubsequence reports whether every packet of got appears in want, in
// the same order, each at most once.
func isSubsequence(got, want []pkt) bool {
	j := 0
	for _, p := range got {
		for j < len(want) && want[j] != p {
			j++
		}
		if j == len(want) {
			return false
		}
		j++
	}
	return true
}

func testConfig(dirs ...string) spool.Config {
	cfg := spool.DefaultConfig()
	cfg.Dirs = dirs
	cfg.RotateSize = 256 << 10
	cfg.WriteBuffer = 64 << 10
	// The direct-I/O path is the intricate one; capture's tests (in
	// capture and cmd/stenod) cover the buffered one.
	cfg.DirectIO = true
	// Test directories share a disk with everything else; only tests of
	// the floor set it.
	cfg.MinFreePercent = 0
	return cfg
}

func open(t testing.TB, cfg spool.Config) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// closeAll closes a writer and its spool, so every index is sealed.
func closeAll(t testing.TB, w *spool.Writer, sp *spool.Spool) {
	t.Helper()
	if err := errors.Join(w.Close(), sp.Close()); err != nil {
		t.Fatal(err)
	}
}

// spoolFiles lists a spool directory: name to size, hidden files included.
func spoolFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted by the budget meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Size()
	}
	return out
}

func glob(t testing.TB, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pcaps returns the spool's pcap files, oldest first.
func pcaps(t testing.TB, dir string) []string { return glob(t, dir, "*.pcap") }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// mountTmpfs mounts a tmpfs of the given size (for example "8m") on a new
// directory and unmounts it when the test ends, whether it passed or not.
func mountTmpfs(t testing.TB, size string) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0750"); err != nil {
		testutil.SkipOrFail(t, "mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		// Lazily: a descriptor the test left open must not keep the
		// mount (and t.TempDir's removal) from going.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// statfs returns a file system's size and available bytes.
func statfs(t testing.TB, dir string) (total, avail int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Frsize, int64(st.Bavail) * st.Frsize
}

// dirBytes sums the sizes of the spool files (pcap, index and temporary
// index files) in dir, and counts the pcap files.
func dirBytes(t testing.TB, dir string) (bytes int64, files int) {
	t.Helper()
	for name, size := range spoolFiles(t, dir) {
		bytes += size
		if strings.HasSuffix(name, ".pcap") {
			files++
		}
	}
	return bytes, files
}

// hookWriter calls hook before each packet of an answer.
type hookWriter struct {
	pcapio.PacketWriter
	hook func()
}

func (h hookWriter) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	h.hook()
	return h.PacketWriter.WritePacket(ts, origLen, data, iface)
}

// answerHook is answerErr with hook called before each packet is written.
func answerHook(sp *spool.Spool, q string, hook func()) ([]pkt, error) {
	pq, err := query.Parse(q, time.Now())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	pw, err := pcapio.NewPcapWriter(&buf, 65535)
	if err != nil {
		return nil, err
	}
	if _, err := engine.Run(context.Background(), sp, pq, hookWriter{pw, hook}, engine.Options{}); err != nil {
		return nil, err
	}
	return readPcap(&buf)
}

// generated returns the first n packets of newGen(seed), without storing
// them anywhere.
func generated(seed uint64, n int) []pkt {
	g := newGen(seed)
	for range n {
		frame, ts := g.g.Next()
		g.sent = append(g.sent, pkt{ts: ts, origLen: len(frame), capLen: len(frame), sum: crc32.ChecksumIEEE(frame)})
	}
	return g.sent
}
