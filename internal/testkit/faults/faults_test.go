package faults

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// record is one packet record of the undamaged spool.
type record struct {
	file    string // base name of its pcap file
	off     int64
	raw     []byte // header and data, as stored
	ts      int64
	origLen int
	key     flow.Key
}

// template is the undamaged spool every case starts from.
type template struct {
	dir   string
	cfg   spool.Config
	pcaps []string // base names, sorted
	recs  []record
	// byFile: the records of each pcap, in file order.
	byFile map[string][]record
}

var (
	tplOnce sync.Once
	tpl     *template
	tplErr  error
)

// theTemplate builds the spool once per test binary: real captures and
// generated traffic, imported through the spool's writers (the path
// captured packets take) into small files, sealed.
func theTemplate(t *testing.T) *template {
	t.Helper()
	tplOnce.Do(func() { tpl, tplErr = buildTemplate(t) })
	if tplErr != nil {
		t.Fatal(tplErr)
	}
	return tpl
}

func buildTemplate(t *testing.T) (*template, error) {
	dir, err := os.MkdirTemp(scratch(), "stenod-faults-template-")
	if err != nil {
		return nil, err
	}
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{dir}
	cfg.RotateSize = 64 << 10 // many files: damage meets file boundaries
	cfg.WriteBuffer = 16 << 10
	cfg.MinFreePercent = 0
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		return nil, err
	}
	var ws []*spool.Writer
	for i := range 2 {
		w, err := sp.NewWriter(fmt.Sprintf("eth%d-q0", i), fmt.Sprintf("eth%d", i))
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	// Real traffic: a few of the chrissanders captures, enough for a spool
	// of a few dozen files.
	caps := testpcaps.Ethernet(t, "chrissanders-packets")
	n := 0
	for i, c := range caps {
		if n > 2500 {
			break
		}
		f, err := os.Open(c.Path)
		if err != nil {
			return nil, err
		}
		res, _ := spool.Import(context.Background(), ws[i%2], c.Path, f)
		f.Close()
		n += int(res.Packets)
	}
	// Generated traffic: IMIX sizes over many flows, later in time.
	var gen bytes.Buffer
	if err := trafficgen.WritePcap(&gen, 7, 1500); err != nil {
		return nil, err
	}
	if _, err := spool.Import(context.Background(), ws[1], "generated", &gen); err != nil {
		return nil, err
	}
	for _, w := range ws {
		if err := w.Close(); err != nil {
			return nil, err
		}
	}
	if err := sp.Close(); err != nil {
		return nil, err
	}
	tp := &template{dir: dir, cfg: cfg, byFile: map[string][]record{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pcap") {
			continue
		}
		tp.pcaps = append(tp.pcaps, e.Name())
		recs, err := readRecords(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		for i := range recs {
			recs[i].file = e.Name()
		}
		tp.byFile[e.Name()] = recs
		tp.recs = append(tp.recs, recs...)
	}
	slices.Sort(tp.pcaps)
	if len(tp.pcaps) < 10 || len(tp.recs) < 2000 {
		return nil, fmt.Errorf("template spool too small: %d files, %d packets", len(tp.pcaps), len(tp.recs))
	}
	return tp, nil
}

// scratch is where cases build their spools: memory (/dev/shm) where
// there is one, since each case copies a spool and repair fsyncs what it
// writes; else the temporary directory.
func scratch() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func readRecords(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := pcapio.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []record
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r := record{off: p.Offset, raw: slices.Concat(p.Header, p.Data), ts: p.Timestamp, origLen: p.OrigLen}
		flow.Parse(p.Data, &r.key)
		out = append(out, r)
	}
}

// kase is one damage case being run.
type kase struct {
	t    *template
	dir  string
	rng  *rand.Rand
	did  []string          // what was done, for the failure message
	home map[string]string // template pcap name -> the name its bytes now have
	// sealedPcapDamage: only sealed pcaps (with intact indexes) were
	// damaged in place, so the answer itself must count every damaged
	// record.
	sealedPcapDamage bool
	// unchecked: pcaps whose index was lost as well, so their records have
	// no checksums left (see repairUnchecked).
	unchecked map[string]bool
}

func (c *kase) logf(format string, args ...any) { c.did = append(c.did, fmt.Sprintf(format, args...)) }

func (c *kase) path(name string) string { return filepath.Join(c.dir, name) }

func idxName(pcap string) string { return strings.TrimSuffix(pcap, ".pcap") + ".idx" }

// pick returns a random template pcap name.
func (c *kase) pick() string { return c.t.pcaps[c.rng.IntN(len(c.t.pcaps))] }

func (c *kase) size(name string) int64 {
	fi, err := os.Lstat(c.path(name))
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (c *kase) overwrite(name string, off int64, b []byte) error {
	f, err := os.OpenFile(c.path(name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, off)
	return errors.Join(err, f.Close())
}

// A damage does one thing to the spool and says what.
type damage struct {
	name string
	// sealed: it damages a pcap in place and leaves its index alone.
	sealed bool
	do     func(c *kase, file string) error
}

var pcapDamages = []damage{
	{"bit flips", true, func(c *kase, f string) error {
		n := 1 + c.rng.IntN(3)
		for range n {
			off := c.rng.Int64N(c.size(f))
			b := []byte{0}
			if err := readAt(c.path(f), b, off); err != nil {
				return err
			}
			bit := byte(1) << c.rng.IntN(8)
			b[0] ^= bit
			c.logf("%s: flip bit %#x at %d", f, bit, off)
			if err := c.overwrite(f, off, b); err != nil {
				return err
			}
		}
		return nil
	}},
	{"zero block", true, func(c *kase, f string) error {
		n := 1 + c.rng.Int64N(16<<10)
		off := c.rng.Int64N(c.size(f))
		c.logf("%s: %d zero bytes at %d", f, n, off)
		return c.overwrite(f, off, make([]byte, min(n, c.size(f)-off)))
	}},
	{"page of zeros", true, func(c *kase, f string) error {
		// What a power cut leaves: a whole page of the file zeroed.
		off := c.rng.Int64N(c.size(f)) &^ 4095
		c.logf("%s: zero page at %d", f, off)
		return c.overwrite(f, off, make([]byte, min(4096, c.size(f)-off)))
	}},
	{"garbage", true, func(c *kase, f string) error {
		n := 1 + c.rng.Int64N(2048)
		off := c.rng.Int64N(c.size(f))
		b := make([]byte, min(n, c.size(f)-off))
		for i := range b {
			b[i] = byte(c.rng.Uint32())
		}
		c.logf("%s: %d random bytes at %d", f, len(b), off)
		return c.overwrite(f, off, b)
	}},
	{"truncation", true, func(c *kase, f string) error {
		n := c.rng.Int64N(c.size(f))
		c.logf("%s: truncated to %d", f, n)
		return os.Truncate(c.path(f), n)
	}},
	{"caplen", true, func(c *kase, f string) error {
		recs := c.t.byFile[f]
		r := recs[c.rng.IntN(len(recs))]
		b := make([]byte, 4)
		v := uint32(c.rng.IntN(2 * len(r.raw)))
		if c.rng.IntN(2) == 0 {
			v = uint32(len(r.raw)-16) - 1 // one byte less: a cut packet
		}
		b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		c.logf("%s: caplen of the record at %d set to %d (was %d)", f, r.off, v, len(r.raw)-16)
		return c.overwrite(f, r.off+8, b)
	}},
	{"timestamp", true, func(c *kase, f string) error {
		recs := c.t.byFile[f]
		r := recs[c.rng.IntN(len(recs))]
		pos := r.off + c.rng.Int64N(8)
		b := []byte{0}
		if err := readAt(c.path(f), b, pos); err != nil {
			return err
		}
		b[0] ^= 1 << c.rng.IntN(8)
		c.logf("%s: timestamp of the record at %d changed at byte %d", f, r.off, pos)
		return c.overwrite(f, pos, b)
	}},
}

var indexDamages = []damage{
	{"index bit flip", false, func(c *kase, f string) error {
		x := idxName(f)
		off := c.rng.Int64N(c.size(x))
		b := []byte{0}
		if err := readAt(c.path(x), b, off); err != nil {
			return err
		}
		b[0] ^= 1 << c.rng.IntN(8)
		c.logf("%s: index bit flip at %d", x, off)
		return c.overwrite(x, off, b)
	}},
	{"index zero block", false, func(c *kase, f string) error {
		x := idxName(f)
		off := c.rng.Int64N(c.size(x))
		c.logf("%s: index zeroed from %d", x, off)
		return c.overwrite(x, off, make([]byte, min(4096, c.size(x)-off)))
	}},
	{"index truncated", false, func(c *kase, f string) error {
		x := idxName(f)
		n := c.rng.Int64N(c.size(x))
		c.logf("%s: index truncated to %d", x, n)
		return os.Truncate(c.path(x), n)
	}},
	{"index deleted", false, func(c *kase, f string) error {
		c.logf("%s: index deleted", idxName(f))
		return os.Remove(c.path(idxName(f)))
	}},
	{"index is a directory", false, func(c *kase, f string) error {
		x := idxName(f)
		c.logf("%s: index replaced by a directory", x)
		return errors.Join(os.Remove(c.path(x)), os.Mkdir(c.path(x), 0o750))
	}},
	{"index is a symlink", false, func(c *kase, f string) error {
		x := idxName(f)
		// To another file's index: followed, it would describe the
		// wrong packets.
		other := idxName(c.pick())
		c.logf("%s: index replaced by a symlink to %s", x, other)
		return errors.Join(os.Remove(c.path(x)), os.Symlink(other, c.path(x)))
	}},
	{"index sparse and huge", false, func(c *kase, f string) error {
		x := idxName(f)
		c.logf("%s: index extended to 100 GB (sparse)", x)
		return os.Truncate(c.path(x), 100<<30)
	}},
}

// uncheckedDamages damage a pcap whose index is gone too: the file a crash
// leaves being written. Its records have no checksums, so only damage that
// breaks their framing can be told from packets: these are the damages a
// crash or a disk really does to such a file.
var uncheckedDamages = []damage{
	{"unindexed: page of zeros", false, func(c *kase, f string) error {
		off := max(24, c.rng.Int64N(c.size(f))&^4095)
		c.logf("%s: index deleted, zero page at %d", f, off)
		return c.overwrite(f, off, make([]byte, min(4096, c.size(f)-off)))
	}},
	{"unindexed: zero tail", false, func(c *kase, f string) error {
		// Delayed allocation after a crash: the tail reads as zeros.
		off := max(24, c.rng.Int64N(c.size(f)))
		c.logf("%s: index deleted, zeros from %d to the end", f, off)
		return c.overwrite(f, off, make([]byte, c.size(f)-off))
	}},
	{"unindexed: torn tail", false, func(c *kase, f string) error {
		n := c.rng.Int64N(c.size(f))
		c.logf("%s: index deleted, truncated to %d", f, n)
		return os.Truncate(c.path(f), n)
	}},
	{"unindexed: magic bit", false, func(c *kase, f string) error {
		off := c.rng.Int64N(4)
		b := []byte{0}
		if err := readAt(c.path(f), b, off); err != nil {
			return err
		}
		b[0] ^= 1 << c.rng.IntN(8)
		c.logf("%s: index deleted, magic bit flipped at %d", f, off)
		return c.overwrite(f, off, b)
	}},
	{"unindexed: huge caplen", false, func(c *kase, f string) error {
		recs := c.t.byFile[f]
		r := recs[c.rng.IntN(len(recs))]
		c.logf("%s: index deleted, caplen of the record at %d set to 0x7fffffff", f, r.off)
		return c.overwrite(f, r.off+8, []byte{0xff, 0xff, 0xff, 0x7f})
	}},
}

var fileDamages = []damage{
	{"pcap swapped", false, func(c *kase, f string) error {
		g := c.pick()
		if g == f {
			return nil
		}
		c.logf("%s and %s: pcaps swapped", f, g)
		tmp := c.path("swap.tmp")
		if err := errors.Join(os.Rename(c.path(f), tmp), os.Rename(c.path(g), c.path(f)), os.Rename(tmp, c.path(g))); err != nil {
			return err
		}
		for k, v := range c.home {
			switch v {
			case f:
				c.home[k] = g
			case g:
				c.home[k] = f
			}
		}
		return nil
	}},
	{"file duplicated", false, func(c *kase, f string) error {
		// A copy under another (later) name: its packets must not be
		// answered twice.
		name := "20991231T000000.000000000Z-" + strings.SplitN(f, "-", 2)[1]
		c.logf("%s: copied to %s (with its index)", f, name)
		return errors.Join(copyFile(c.path(f), c.path(name)), copyFile(c.path(idxName(f)), c.path(idxName(name))))
	}},
	{"pcap is a directory", false, func(c *kase, f string) error {
		c.logf("%s: pcap replaced by a directory", f)
		delete(c.home, f)
		return errors.Join(os.Remove(c.path(f)), os.Mkdir(c.path(f), 0o750))
	}},
	{"pcap is a symlink", false, func(c *kase, f string) error {
		// To a file outside the spool, which must stay untouched.
		outside := filepath.Join(filepath.Dir(c.dir), filepath.Base(c.dir)+".outside")
		c.logf("%s: pcap replaced by a symlink to %s", f, outside)
		delete(c.home, f)
		return errors.Join(os.WriteFile(outside, []byte("not a capture"), 0o600), os.Remove(c.path(f)), os.Symlink(outside, c.path(f)))
	}},
}

// crashed makes f what a crash leaves of the file being written: its pcap
// and its sums journal, as the writer appends them (docs/formats.md), and
// no index.
func (c *kase) crashed(f string) error {
	c.unchecked[f] = true
	j := []byte("STENODSJ\x01\x00\x00\x00\x00\x00\x00\x00")
	for _, r := range c.t.byFile[f] {
		j = binary.LittleEndian.AppendUint32(j, pcapio.RecordSum(r.raw))
	}
	return errors.Join(os.Remove(c.path(idxName(f))), os.WriteFile(c.path(strings.TrimSuffix(f, ".pcap")+".sums"), j, 0o640))
}

func readAt(path string, b []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	_, err = f.ReadAt(b, off)
	return errors.Join(err, f.Close())
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o640)
}

func copyDir(from, to string) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one random damage, or two on different files.
func (c *kase) apply() error {
	n := 1
	if c.rng.IntN(4) == 0 {
		n = 2
	}
	used := map[string]bool{}
	c.sealedPcapDamage = true
	for range n {
		f := c.pick()
		if used[f] {
			continue
		}
		used[f] = true
		var d damage
		switch k := c.rng.IntN(10); {
		case k < 5:
			d = pcapDamages[c.rng.IntN(len(pcapDamages))]
		case k < 7:
			d = indexDamages[c.rng.IntN(len(indexDamages))]
		case k < 9:
			d = uncheckedDamages[c.rng.IntN(len(uncheckedDamages))]
			if err := c.crashed(f); err != nil {
				return err
			}
		default:
			d = fileDamages[c.rng.IntN(len(fileDamages))]
		}
		if !d.sealed {
			c.sealedPcapDamage = false
		}
		if err := d.do(c, f); err != nil {
			return fmt.Errorf("%s on %s: %w", d.name, f, err)
		}
	}
	return nil
}

// intact reports whether r's bytes are still where its file now is.
func (c *kase) intact(r record) bool {
	name, ok := c.home[r.file]
	if !ok {
		return false
	}
	fi, err := os.Lstat(c.path(name))
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < r.off+int64(len(r.raw)) {
		return false
	}
	b := make([]byte, len(r.raw))
	if err := readAt(c.path(name), b, r.off); err != nil {
		return false
	}
	return bytes.Equal(b, r.raw)
}

type answer struct {
	ts      int64
	origLen int
	data    string
}

func (c *kase) query(sp *spool.Spool, text string) (map[answer]int, engine.Result, error) {
	q, err := query.Parse(text, time.Now())
	if err != nil {
		return nil, engine.Result{}, err
	}
	var buf bytes.Buffer
	pw, err := pcapio.NewPcapWriter(&buf, 262144)
	if err != nil {
		return nil, engine.Result{}, err
	}
	res, err := engine.Run(context.Background(), sp, q, pw, engine.Options{})
	if err != nil {
		return nil, res, fmt.Errorf("query %q: %w", text, err)
	}
	rd, err := pcapio.NewReader(&buf)
	if err != nil {
		return nil, res, err
	}
	got := map[answer]int{}
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return got, res, nil
		}
		if err != nil {
			return nil, res, err
		}
		got[answer{p.Timestamp, p.OrigLen, string(p.Data)}]++
	}
}

// run runs case seed and returns what went wrong, "" if nothing.
func run(t *testing.T, tp *template, seed uint64, setup func(c *kase) error) string {
	dir, err := os.MkdirTemp(scratch(), "stenod-fault-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.RemoveAll(dir)
		os.Remove(dir + ".outside")
	}()
	if err := copyDir(tp.dir, dir); err != nil {
		t.Fatal(err)
	}
	c := &kase{t: tp, dir: dir, rng: rand.New(rand.NewPCG(seed, 0xfa17)), home: map[string]string{}, unchecked: map[string]bool{}}
	for _, f := range tp.pcaps {
		c.home[f] = f
	}
	if err := setup(c); err != nil {
		t.Fatalf("seed %d: damage: %v", seed, err)
	}
	// What is intact is decided before stenod touches the spool.
	want := map[answer]int{}
	wantTCP := map[answer]int{}
	damaged := 0
	tcp, _ := query.Parse("tcp", time.Now())
	for _, r := range tp.recs {
		if !c.intact(r) {
			damaged++
			continue
		}
		a := answer{r.ts, r.origLen, string(r.raw[16:])}
		want[a]++
		if tcp.MatchPacket(&r.key, r.ts) {
			wantTCP[a]++
		}
	}
	var logs bytes.Buffer
	fail := func(format string, args ...any) string {
		return fmt.Sprintf("seed %d (%s): %s\n%s", seed, strings.Join(c.did, "; "), fmt.Sprintf(format, args...), logs.String())
	}
	cfg := tp.cfg
	cfg.Dirs = []string{dir}
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sp, err := spool.Open(cfg, log)
	if err != nil {
		return fail("open: %v", err)
	}
	defer sp.Close()
	got, res, err := c.query(sp, "after 1970-01-01T00:00:00Z")
	if err != nil {
		return fail("%v", err)
	}
	if msg := compare(got, want); msg != "" {
		return fail("every packet: %s (damaged %d, answer counted %d)", msg, damaged, res.Damaged)
	}
	gotTCP, _, err := c.query(sp, "tcp")
	if err != nil {
		return fail("%v", err)
	}
	if msg := compare(gotTCP, wantTCP); msg != "" {
		return fail("tcp: %s", msg)
	}
	ctr := sp.Counters()
	switch {
	case c.sealedPcapDamage && res.Damaged+int64(ctr.RecordsMissing) != int64(damaged) && ctr.DamagedRegions == 0:
		return fail("%d records damaged, the answer counted %d", damaged, res.Damaged)
	case damaged > 0 && res.Damaged == 0 && !repairCounted(ctr):
		return fail("%d records damaged and nothing counted: %+v", damaged, ctr)
	}
	if fi, err := os.Stat(dir + ".outside"); err == nil && fi.Size() != int64(len("not a capture")) {
		return fail("the file outside the spool was changed")
	}
	return ""
}

// repairCounted reports whether the spool counted damage it repaired.
func repairCounted(ctr spool.Counters) bool {
	return ctr.DamagedRecordsSkipped > 0 || ctr.FilesRepaired > 0 || ctr.DamagedRegions > 0 || ctr.FilesQuarantined > 0 || ctr.RecordsMissing > 0
}

// compare says how got differs from want, "" if not at all.
func compare(got, want map[answer]int) string {
	var missing, extra, dup int
	for a, n := range want {
		switch g := got[a]; {
		case g < n:
			missing += n - g
		case g > n:
			dup += g - n
		}
	}
	for a, n := range got {
		if _, ok := want[a]; !ok {
			extra += n
		}
	}
	if missing+extra+dup == 0 {
		return ""
	}
	return fmt.Sprintf("%d intact packets missing, %d packets returned that are damaged or not in the spool, %d returned twice", missing, extra, dup)
}

func cases() int {
	if s := os.Getenv("STENOD_FAULT_CASES"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return 1000
}

// TestNamedDamage: one case per damage, on a file of its own.
func TestNamedDamage(t *testing.T) {
	tp := theTemplate(t)
	all := slices.Concat(pcapDamages, indexDamages, uncheckedDamages, fileDamages)
	for i, d := range all {
		t.Run(d.name, func(t *testing.T) {
			for seed := uint64(0); seed < 5; seed++ {
				msg := run(t, tp, uint64(i)<<32|seed, func(c *kase) error {
					f := c.pick()
					c.sealedPcapDamage = d.sealed
					if strings.HasPrefix(d.name, "unindexed") {
						if err := c.crashed(f); err != nil {
							return err
						}
					}
					return d.do(c, f)
				})
				if msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

// TestRandomDamage runs STENOD_FAULT_CASES random cases (1,000 by
// default); STENOD_FAULT_SEED runs one.
func TestRandomDamage(t *testing.T) {
	tp := theTemplate(t)
	first, n := uint64(1), uint64(cases())
	if s := os.Getenv("STENOD_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STENOD_FAULT_SEED=%q: %v", s, err)
		}
		first, n = v, 1
	}
	failures := 0
	start := time.Now()
	for seed := first; seed < first+n; seed++ {
		if msg := run(t, tp, seed, (*kase).apply); msg != "" {
			t.Error(msg)
			if failures++; failures == 10 {
				t.Fatalf("stopping after %d failures", failures)
			}
		}
	}
	t.Logf("%d cases in %v", n, time.Since(start).Round(time.Millisecond))
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tpl != nil {
		os.RemoveAll(tpl.dir)
	}
	os.Exit(code)
}
