//go:build linux

package main

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestStenodCounts(t *testing.T) {
	const body = `{"now":"x","spool":{},"capture":{"method":"afpacket","interfaces":[{
		"name":"eth0","program":{"packets":10,"redirect_failed":2,"ringbuf_full":7,"dropped_rule":1},
		"queues":[
			{"queue":0,"packets":100,"stored":100,"spool_write_errors":0,"ring":{"packets":105,"drops":5,"queue_freezes":1,"delivered":100}},
			{"queue":1,"packets":50,"stored":50,"spool_write_errors":1,"socket":{"rx_dropped":0,"rx_ring_full":3,"rx_fill_ring_empty_descs":4}}
		]}]}}`
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body)) }))
	defer ts.Close()
	c, err := stenodCounts(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	if c.captured != 150 {
		t.Errorf("captured %d, want 150", c.captured)
	}
	want := map[string]uint64{
		"program.redirect_failed": 2, "ring.drops": 5, "ring.queue_freezes": 1, "spool_write_errors": 1,
		"socket.rx_dropped": 0, "socket.rx_ring_full": 3, "socket.rx_fill_ring_empty_descs": 4,
	}
	for k, v := range want {
		if c.drops[k] != v {
			t.Errorf("%s = %d, want %d", k, c.drops[k], v)
		}
	}
	if len(c.drops) != len(want) {
		t.Errorf("drops %v, want the keys of %v", c.drops, want)
	}
}

func TestProbeFrame(t *testing.T) {
	b := probeFrame(20001)
	if len(b) != 60 || b[23] != 17 || b[36] != 0x4e || b[37] != 0x21 {
		t.Fatalf("probe frame % x", b)
	}
	// The IPv4 header checksums to zero.
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("IPv4 checksum folds to %#x", sum)
	}
}

func TestCloseCPU(t *testing.T) {
	log := `time=2026-12-03T23:00:00.000Z level=INFO msg="capture stopped"
time=2026-12-03T23:00:00.100Z level=INFO msg="spool closed" indexes_sealed=1 seal_cpu=187.5ms index_cpu=1.25s
`
	if got := closeCPUOf(log); got != (closeCPU{seal: 187500 * time.Microsecond, index: 1250 * time.Millisecond}) {
		t.Errorf("closeCPUOf = %+v, want seal 187.5ms, index 1.25s", got)
	}
	// An older stenod logs no index_cpu.
	old := `msg="spool closed" indexes_sealed=1 seal_cpu=2ms`
	if got := closeCPUOf(old); got != (closeCPU{seal: 2 * time.Millisecond}) {
		t.Errorf("closeCPUOf without index_cpu = %+v", got)
	}
	if got := closeCPUOf(`msg="capture stopped"`); got != (closeCPU{}) {
		t.Errorf("closeCPUOf without the line = %+v, want zero", got)
	}
}

// TestBaseRatios: each stenod configuration is paired with its -base twin
// within each round; a failed run leaves its round out.
func TestBaseRatios(t *testing.T) {
	mix := traffic{name: "64B"}
	run := func(cpu time.Duration, captured uint64, rate float64, err error) *result {
		return &result{cpu: cpu, cnt: counters{captured: captured}, gen: genRun{rate: rate}, hasCapture: true, err: err}
	}
	keys := []runKey{{t: mix, cfg: "tcpdump"}, {t: mix, cfg: "stenod-xdp"}, {t: mix, cfg: "stenod-xdp-base"}}
	runs := [][]*result{
		{run(time.Second, 1e6, 4e5, nil), run(time.Second, 1e6, 4e5, nil), run(time.Second, 1e6, 4e5, nil)},
		{run(900*time.Millisecond, 1e6, 3e5, nil), run(2*time.Second, 1e6, 3e5, nil), run(time.Second, 1e6, 3e5, errors.New("failed"))},
		{run(time.Second, 1e6, 3e5, nil), run(2200*time.Millisecond, 1e6, 2e5, nil), run(time.Second, 1e6, 3e5, nil)},
	}
	got := baseRatios(keys, runs)
	if len(got) != 1 || got[0].key.cfg != "stenod-xdp" {
		t.Fatalf("baseRatios = %+v, want one for stenod-xdp", got)
	}
	r := got[0]
	if r.cpu.n != 2 || math.Abs(r.cpu.median-(0.9+2/2.2)/2) > 1e-9 || math.Abs(r.cpu.min-0.9) > 1e-9 || math.Abs(r.cpu.max-2/2.2) > 1e-9 {
		t.Errorf("cpu ratio %+v, want 0.900 and 0.909 over 2 rounds", r.cpu)
	}
	if r.rate.max != 1.5 || r.rate.min != 1 {
		t.Errorf("rate ratio %+v, want 1 and 1.5", r.rate)
	}
	if r.index.n != 0 {
		t.Errorf("live index ratio %+v without index CPU logged", r.index)
	}
	// The live index's CPU per packet (runs[key][round]), where both builds logged it.
	runs[1][0].indexCPU, runs[2][0].indexCPU = 300*time.Millisecond, 200*time.Millisecond
	runs[1][0].cnt.captured = 2e6
	if r := baseRatios(keys, runs)[0]; r.index.n != 1 || math.Abs(r.index.median-0.75) > 1e-9 {
		t.Errorf("live index ratio %+v, want 0.75 over 1 round", r.index)
	}
}

func TestStenotypeRatios(t *testing.T) {
	mix := traffic{name: "IMIX"}
	run := func(cpu time.Duration, rate float64) *result {
		return &result{cpu: cpu, cnt: counters{captured: 1e6}, gen: genRun{rate: rate}, hasCapture: true}
	}
	keys := []runKey{{t: mix, cfg: "bare"}, {t: mix, cfg: "tcpdump"}, {t: mix, cfg: "stenotype"}, {t: mix, cfg: "stenod-afpacket"}}
	runs := [][]*result{
		{{gen: genRun{rate: 6e5}}, {gen: genRun{rate: 6e5}}},
		{run(300*time.Millisecond, 5e5), run(330*time.Millisecond, 5e5)},
		{run(200*time.Millisecond, 5e5), run(300*time.Millisecond, 5e5)},
		{run(400*time.Millisecond, 4e5), run(450*time.Millisecond, 5e5)},
	}
	got := stenotypeRatios(keys, runs)
	if len(got) != 2 || got[0].key.cfg != "tcpdump" || got[1].key.cfg != "stenod-afpacket" {
		t.Fatalf("stenotypeRatios = %+v, want tcpdump and stenod-afpacket", got)
	}
	if r := got[1]; r.cpu.n != 2 || r.cpu.min != 1.5 || r.cpu.max != 2 || r.rate.min != 0.8 || r.rate.max != 1 {
		t.Errorf("stenod-afpacket / stenotype: %+v, want CPU 1.5x and 2x, rate 0.8x and 1x", r)
	}
}
