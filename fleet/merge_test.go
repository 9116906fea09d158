package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/pcapio"
)

// pkt is a packet of a test stream: its time, interface and a payload that
// says where it came from.
type pkt struct {
	ts    int64
	iface string
	data  string
}

// pcapng writes pkts as a sensor's answer does.
func pcapng(t testing.TB, pkts []pkt) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapio.NewPcapngWriter(&b, 65535)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		if err := w.WritePacket(p.ts, len(p.data), []byte(p.data), p.iface); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// series makes n packets of sensor name on iface, from ts0 every step ns.
func series(name, iface string, n int, ts0, step int64) []pkt {
	out := make([]pkt, n)
	for i := range out {
		out[i] = pkt{ts: ts0 + int64(i)*step, iface: iface, data: fmt.Sprintf("%s/%s#%d", name, iface, i)}
	}
	return out
}

// got is a packet of the merged answer.
type got struct {
	ts    int64
	iface string
	data  string
}

func readAll(t *testing.T, b []byte) []got {
	t.Helper()
	r, err := pcapio.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []got
	var p pcapio.Packet
	for {
		err := r.Next(&p)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got{p.Timestamp, r.Interfaces()[p.Interface].Name, string(p.Data)})
	}
}

// runMerge merges the answers read from rs (sensor i is "s<i>") as Query
// does, without HTTP.
// A reader that is a ctxReader is told its sensor's context, which ends
// its reads as it ends an HTTP body's.
func runMerge(t *testing.T, ctx context.Context, rs []io.Reader, o mergeOptions) ([]got, []SensorResult, mergeResult, error) {
	t.Helper()
	var out bytes.Buffer
	w, err := pcapio.NewPcapngWriter(&out, 65535)
	if err != nil {
		t.Fatal(err)
	}
	res := make([]SensorResult, len(rs))
	srcs := make([]*source, len(rs))
	done := make(chan struct{}, len(rs))
	start := time.Now()
	for i, r := range rs {
		res[i].Name = fmt.Sprintf("s%d", i)
		pctx, cancel := context.WithCancelCause(ctx)
		src, ch := newSource(i, &res[i], cancel, start)
		srcs[i] = src
		if cr, ok := r.(ctxReader); ok {
			cr.setContext(pctx)
		}
		go func() {
			defer func() { done <- struct{}{} }()
			defer close(ch)
			err := pump(pctx, res[i].Name, r, ch, src.free)
			select {
			case ch <- batch{end: true, err: err}:
			case <-pctx.Done():
			}
		}()
	}
	if o.Stall == 0 {
		o.Stall = 10 * time.Second
	}
	mr, err := merge(ctx, srcs, w, o)
	if err == nil {
		err = w.Flush()
	}
	for range rs {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a reader did not stop after the merge")
		}
	}
	if err != nil {
		return nil, res, mr, err
	}
	return readAll(t, out.Bytes()), res, mr, nil
}

// TestMergeOrder: three sensors with interleaved times and ties; the answer
// has every packet once, in time order, ties to the sensor listed first,
// each on its "sensor/iface" interface.
func TestMergeOrder(t *testing.T) {
	s0 := append(series("s0", "eth0", 500, 1000, 30), series("s0", "eth1", 1, 1000+30*600, 1)...)
	s1 := series("s1", "eth0", 700, 1000, 20) // ties with s0 every 60 ns
	s2 := series("s2", "", 300, 990, 50)      // an interface without a name
	slices.SortStableFunc(s0, func(a, b pkt) int { return int(a.ts - b.ts) })
	var want []pkt
	for i, s := range [][]pkt{s0, s1, s2} {
		for _, p := range s {
			iface := fmt.Sprintf("s%d", i)
			if p.iface != "" {
				iface += "/" + p.iface
			}
			want = append(want, pkt{p.ts, iface, p.data})
		}
	}
	// Stable: equal times keep sensor order.
	slices.SortStableFunc(want, func(a, b pkt) int { return int(a.ts - b.ts) })
	out, res, mr, err := runMerge(t, context.Background(),
		[]io.Reader{bytes.NewReader(pcapng(t, s0)), bytes.NewReader(pcapng(t, s1)), bytes.NewReader(pcapng(t, s2))}, mergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(want) || mr.Packets != int64(len(want)) || mr.Limited {
		t.Fatalf("%d packets (result %+v), want %d", len(out), mr, len(want))
	}
	for i := range want {
		if w := want[i]; out[i] != got(w) {
			t.Fatalf("packet %d: %+v, want %+v", i, out[i], w)
		}
	}
	for i, r := range res {
		if r.Status != StatusComplete || r.Error != "" || r.FirstMilliseconds == nil {
			t.Errorf("sensor %d: %+v", i, r)
		}
	}
	if res[0].Packets != 501 || res[1].Packets != 700 || res[2].Packets != 300 {
		t.Errorf("per-sensor packets %d %d %d", res[0].Packets, res[1].Packets, res[2].Packets)
	}
}

// TestMergeBigBatches: more packets and bytes than a batch holds, and a
// packet larger than a slab.
func TestMergeBigBatches(t *testing.T) {
	var a, b []pkt
	for i := range 5000 {
		a = append(a, pkt{int64(2 * i), "x", strings.Repeat("a", 100+i%1400)})
		b = append(b, pkt{int64(2*i + 1), "y", strings.Repeat("b", 60)})
	}
	a = append(a, pkt{20000, "x", strings.Repeat("z", slabBytes+100)})
	out, _, mr, err := runMerge(t, context.Background(), []io.Reader{bytes.NewReader(pcapng(t, a)), bytes.NewReader(pcapng(t, b))}, mergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 10001 {
		t.Fatalf("%d packets, want 10001", len(out))
	}
	for i, p := range out[:10000] {
		src := a
		if i%2 == 1 {
			src = b
		}
		if w := src[i/2]; p.ts != int64(i) || p.data != w.data {
			t.Fatalf("packet %d: ts %d len %d, want ts %d len %d", i, p.ts, len(p.data), i, len(w.data))
		}
	}
	if len(out[10000].data) != slabBytes+100 || mr.Bytes == 0 {
		t.Errorf("the large packet: %d bytes", len(out[10000].data))
	}
}

// TestMergeLimits: the packet and byte limits hold over the whole answer;
// sensors still streaming are "limited", the one done before is complete.
func TestMergeLimits(t *testing.T) {
	short := series("s0", "e", 3, 0, 1)
	long1 := series("s1", "e", 1000, 0, 10)
	long2 := series("s2", "e", 1000, 5, 10)
	readers := func() []io.Reader {
		return []io.Reader{bytes.NewReader(pcapng(t, short)), bytes.NewReader(pcapng(t, long1)), bytes.NewReader(pcapng(t, long2))}
	}
	out, res, mr, err := runMerge(t, context.Background(), readers(), mergeOptions{LimitPackets: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 100 || !mr.Limited {
		t.Fatalf("%d packets, limited %v; want 100, true", len(out), mr.Limited)
	}
	if res[0].Status != StatusComplete || res[1].Status != StatusLimited || res[2].Status != StatusLimited {
		t.Errorf("statuses %s %s %s", res[0].Status, res[1].Status, res[2].Status)
	}
	// Each record is 16 + len(data) bytes.
	var limit, n int64
	for _, p := range []pkt{short[0], long1[0], long2[0], short[1], short[2]} {
		limit += 16 + int64(len(p.data))
		n++
	}
	out, _, mr, err = runMerge(t, context.Background(), readers(), mergeOptions{LimitBytes: limit + 5})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(out)) != n || mr.Bytes != limit || !mr.Limited {
		t.Errorf("byte limit %d: %d packets %d bytes, want %d packets %d bytes", limit+5, len(out), mr.Bytes, n, limit)
	}
}

// failing returns the bytes of b up to cut, then err.
type failing struct {
	r   io.Reader
	err error
}

func (f *failing) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestMergeFailingStream: a sensor whose answer breaks off keeps the
// packets it sent before, is named failed with the reason, and the others
// complete.
func TestMergeFailingStream(t *testing.T) {
	s0 := series("s0", "e", 400, 0, 10)
	s1 := series("s1", "e", 400, 3, 10)
	full := pcapng(t, s1)
	// Cut s1 in the middle of a block, after about half its packets.
	cut := len(full)/2 + 7
	broken := &failing{r: bytes.NewReader(full[:cut]), err: io.ErrUnexpectedEOF}
	out, res, _, err := runMerge(t, context.Background(), []io.Reader{bytes.NewReader(pcapng(t, s0)), broken}, mergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusComplete || res[0].Packets != 400 {
		t.Errorf("s0: %+v", res[0])
	}
	if res[1].Status != StatusFailed || !strings.Contains(res[1].Error, "broke off") || res[1].Packets < 150 || res[1].Packets >= 400 {
		t.Errorf("s1: %+v", res[1])
	}
	if int64(len(out)) != 400+res[1].Packets {
		t.Errorf("%d packets, want %d", len(out), 400+res[1].Packets)
	}
	// s1's packets are its first ones, in order.
	i := 0
	for _, p := range out {
		if p.iface == "s1/e" {
			if p.data != s1[i].data {
				t.Fatalf("s1 packet %d: %s", i, p.data)
			}
			i++
		}
	}
	if !slices.IsSortedFunc(out, func(a, b got) int { return int(a.ts - b.ts) }) {
		t.Error("answer not in time order")
	}

	// A stream that is not a capture at all.
	_, res, _, err = runMerge(t, context.Background(), []io.Reader{strings.NewReader("<html>oops</html>"), bytes.NewReader(pcapng(t, s0))}, mergeOptions{})
	if err != nil || res[0].Status != StatusFailed || res[1].Status != StatusComplete {
		t.Errorf("garbage stream: %v %+v", err, res)
	}
}

// ctxReader is a test reader that ends with its sensor's context.
type ctxReader interface{ setContext(context.Context) }

// stallingReader hands out b, then blocks until its sensor's context ends.
type stallingReader struct {
	r   io.Reader
	ctx context.Context
}

func (s *stallingReader) setContext(ctx context.Context) { s.ctx = ctx }

func (s *stallingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	return n, err
}

// slowReader hands out one byte of b every so often.
type slowReader struct {
	b     []byte
	every time.Duration
	n     int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	s.n++
	if s.n%64 == 0 {
		time.Sleep(s.every)
	}
	n := copy(p[:1], s.b)
	s.b = s.b[n:]
	return n, nil
}

// TestMergeStall: a sensor that stops sending is dropped after the stall
// timeout with what it sent kept; one that is slow but keeps sending is
// waited for.
func TestMergeStall(t *testing.T) {
	s0 := series("s0", "e", 50, 0, 10)
	s1 := series("s1", "e", 50, 5, 10)
	s2 := series("s2", "e", 20, 1, 10)
	stalled := &stallingReader{r: bytes.NewReader(pcapng(t, s1)[:900])}
	slow := &slowReader{b: pcapng(t, s2), every: 5 * time.Millisecond}
	start := time.Now()
	out, res, _, err := runMerge(t, context.Background(), []io.Reader{bytes.NewReader(pcapng(t, s0)), stalled, slow}, mergeOptions{Stall: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if res[1].Status != StatusFailed || !strings.Contains(res[1].Error, "stalled") || res[1].Packets == 0 {
		t.Errorf("stalled sensor: %+v", res[1])
	}
	if res[0].Status != StatusComplete || res[2].Status != StatusComplete || res[2].Packets != 20 {
		t.Errorf("others: %+v %+v", res[0], res[2])
	}
	if int64(len(out)) != 70+res[1].Packets {
		t.Errorf("%d packets", len(out))
	}
}

// TestMergeOutputFails: a failing output stops the merge with its error
// and every reader.
func TestMergeOutputFails(t *testing.T) {
	s0 := series("s0", "e", 5000, 0, 10)
	w := &brokenWriter{after: 100}
	srcs := []*source{}
	res := make([]SensorResult, 1)
	ctx := context.Background()
	pctx, cancel := context.WithCancelCause(ctx)
	src, ch := newSource(0, &res[0], cancel, time.Now())
	srcs = append(srcs, src)
	done := make(chan error, 1)
	go func() {
		defer close(ch)
		done <- pump(pctx, "s0", bytes.NewReader(pcapng(t, s0)), ch, src.free)
	}()
	_, err := merge(ctx, srcs, w, mergeOptions{Stall: time.Second})
	var oe errOutput
	if !errors.As(err, &oe) {
		t.Fatalf("merge: %v, want an output error", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not stop")
	}
	if res[0].Status != StatusFailed {
		t.Errorf("sensor: %+v", res[0])
	}
}

type brokenWriter struct{ after int }

func (b *brokenWriter) WritePacket(int64, int, []byte, string) error {
	if b.after--; b.after < 0 {
		return errors.New("client went away")
	}
	return nil
}
func (b *brokenWriter) Flush() error { return nil }

// BenchmarkMerge is the merge alone: three in-memory answers of 20000
// packets of 600 bytes, interleaved in time, into pcapng; what a fleet
// query can do at most when the sensors and the network keep up.
func BenchmarkMerge(b *testing.B) {
	var streams [][]byte
	var total int64
	for i := range 3 {
		var ps []pkt
		for k := range 20000 {
			ps = append(ps, pkt{int64(3*k + i), "eth0", strings.Repeat("x", 600)})
		}
		streams = append(streams, pcapng(b, ps))
		total += int64(len(streams[i]))
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		srcs := make([]*source, 3)
		res := make([]SensorResult, 3)
		for i, s := range streams {
			ctx, cancel := context.WithCancelCause(context.Background())
			src, ch := newSource(i, &res[i], cancel, time.Now())
			srcs[i] = src
			go func() {
				defer close(ch)
				err := pump(ctx, "s", bytes.NewReader(s), ch, src.free)
				ch <- batch{end: true, err: err}
			}()
		}
		w, _ := pcapio.NewPcapngWriter(io.Discard, 65535)
		mr, err := merge(context.Background(), srcs, w, mergeOptions{Stall: time.Minute})
		if err != nil || mr.Packets != 60000 {
			b.Fatal(err, mr)
		}
	}
}
