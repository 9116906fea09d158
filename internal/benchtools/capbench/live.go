//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

type row struct{ name, value, note string }

// liveBenchmarks runs the freshness and broad-query benchmarks against a
// running stenod, each with its own stenod and 64-byte background traffic.
func liveBenchmarks(ctx context.Context, e *env, o *options, mixes []traffic, results []*result) []row {
	var rows []row
	var t64 *traffic
	for i := range mixes {
		if mixes[i].name == "64B" {
			t64 = &mixes[i]
		}
	}
	if t64 == nil {
		return []row{{"freshness / broad query", "n/a", "needs -traffic 64B"}}
	}
	// Loads derived from this run's figures for the live method.
	var maxRate float64
	for _, r := range results {
		if r.config == "stenod-"+o.liveMethod && r.traffic == "64B" && r.err == nil && r.rate == 0 {
			maxRate = r.gen.rate
		}
	}
	zeroLoss, _, _ := zeroLossRate(results, "stenod-"+o.liveMethod, "64B")
	if slices.Contains(o.configs, "freshness") && ctx.Err() == nil {
		load := o.freshLoad
		if load == 0 {
			load = 100_000
			if maxRate > 0 {
				load = uint64(maxRate / 2)
			}
		}
		rows = append(rows, freshness(ctx, e, o, *t64, load)...)
	}
	if slices.Contains(o.configs, "query") && ctx.Err() == nil {
		load := o.queryLoad
		if load == 0 {
			load = 100_000
			if zeroLoss > 0 {
				load = uint64(zeroLoss)
			}
		}
		rows = append(rows, broadQuery(ctx, e, o, *t64, load)...)
	}
	return rows
}

// probeFrame is a 60-byte IPv4/UDP frame from 10.9.9.9:7777 to
// 10.9.9.10:port, addressed like the background traffic.
func probeFrame(port uint16) []byte {
	b := make([]byte, 60)
	copy(b, []byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02, 0x08, 0x00})
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 46)
	copy(ip[12:], []byte{10, 9, 9, 9, 10, 9, 9, 10})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:]
	binary.BigEndian.PutUint16(udp[0:], 7777)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], 26)
	return b
}

// queryCount posts q to stenod's /query and returns the pcap bytes beyond
// the file header.
func queryBytes(ctx context.Context, url, q string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/query", strings.NewReader(q))
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("query %q: %s: %s", q, resp.Status, bytes.TrimSpace(b))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return max(n-24, 0), err
}

func freshness(ctx context.Context, e *env, o *options, t traffic, load uint64) []row {
	name := fmt.Sprintf("freshness, stenod-%s under %s of 64B", o.liveMethod, offered(load))
	progress("%s: %d probes", name, o.probes)
	cp, err := startStenod(e, o.liveMethod)
	if err != nil {
		return []row{{name, "n/a", err.Error()}}
	}
	defer cp.stop()
	fd, err := rawSocketInNS(e.v.ns, e.v.peer)
	if err != nil {
		return []row{{name, "n/a", err.Error()}}
	}
	defer unix.Close(fd)

	var lat []time.Duration
	missing := 0
	var probeErr error
	probe := func() {
		for i := range o.probes {
			if ctx.Err() != nil {
				return
			}
			port := uint16(20000 + i)
			q := fmt.Sprintf("udp and port %d", port)
			frame := probeFrame(port)
			// Probes start at random phases of the writer's flush cycle.
			time.Sleep(time.Duration(rand.Int64N(int64(200 * time.Millisecond))))
			// The veth's queue may be full of background traffic: the
			// kernel then refuses the frame (ENOBUFS) and we try again.
			var sent time.Time
			for try := 0; ; try++ {
				sent = time.Now()
				_, err := unix.Write(fd, frame)
				if err == nil {
					break
				}
				if (err != unix.ENOBUFS && err != unix.EAGAIN) || try == 1000 {
					probeErr = fmt.Errorf("send probe: %w", err)
					return
				}
				time.Sleep(time.Millisecond)
			}
			found := false
			for time.Since(sent) < 10*time.Second && ctx.Err() == nil {
				n, err := queryBytes(ctx, cp.url, q)
				if err != nil {
					probeErr = err
					return
				}
				if n > 0 {
					found = true
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if found {
				lat = append(lat, time.Since(sent))
			} else {
				missing++
			}
		}
	}
	r := &result{config: "stenod-" + o.liveMethod, traffic: t.name, rate: load, hasCapture: true}
	short := *o
	short.duration = time.Second // the probes keep the traffic going as long as they take
	phase(ctx, e, cp, t, &short, r, probe)
	switch {
	case r.err != nil:
		return []row{{name, "n/a", r.err.Error()}}
	case probeErr != nil:
		return []row{{name, "n/a", probeErr.Error()}}
	case len(lat) == 0:
		return []row{{name, "n/a", fmt.Sprintf("no probe answered within 10 s (%d missing)", missing)}}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	note := fmt.Sprintf("%d probes answered, %d missing; background: sent %d, lost %d, drops %s", len(lat), missing, r.gen.sent, r.lost(), r.cnt.dropNote())
	return []row{{name, fmt.Sprintf("p50 %.3f s, p99 %.3f s, max %.3f s", pct(0.50).Seconds(), pct(0.99).Seconds(), lat[len(lat)-1].Seconds()), note + "; target: queryable within 1 s"}}
}

func broadQuery(ctx context.Context, e *env, o *options, t traffic, load uint64) []row {
	name := fmt.Sprintf("capture under a broad query, stenod-%s at %s of 64B", o.liveMethod, offered(load))
	progress("%s", name)
	cp, err := startStenod(e, o.liveMethod)
	if err != nil {
		return []row{{name, "n/a", err.Error()}}
	}
	defer cp.stop()
	var rows []row
	describe := func(r *result) string {
		return fmt.Sprintf("sender %.3f Mpps, sent %d, captured %d, lost %d, drops %s, CPU %s/packet",
			r.gen.rate/1e6, r.gen.sent, r.cnt.captured, r.lost(), r.cnt.dropNote(), perPacket(r))
	}
	quiet := &result{config: "stenod-" + o.liveMethod, traffic: t.name, rate: load, hasCapture: true}
	phase(ctx, e, cp, t, o, quiet, nil)
	if quiet.err != nil {
		return []row{{name, "n/a", quiet.err.Error()}}
	}
	rows = append(rows, row{name + ": no query", lossValue(quiet), describe(quiet)})

	busy := &result{config: quiet.config, traffic: t.name, rate: load, hasCapture: true}
	qctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var queries, qbytes atomic.Int64
	var qerr error
	phase(ctx, e, cp, t, o, busy, func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for qctx.Err() == nil {
				n, err := queryBytes(qctx, cp.url, "after 1h ago")
				if err != nil {
					if qctx.Err() == nil {
						qerr = err
					}
					return
				}
				queries.Add(1)
				qbytes.Add(n)
			}
		}()
	})
	cancel()
	wg.Wait()
	if busy.err != nil {
		return append(rows, row{name + ": broad query streaming", "n/a", busy.err.Error()})
	}
	note := fmt.Sprintf("%s; 'after 1h ago' answered %d times, %.1f MB streamed", describe(busy), queries.Load(), float64(qbytes.Load())/1e6)
	if qerr != nil {
		note += "; query error: " + qerr.Error()
	}
	return append(rows, row{name + ": broad query streaming", lossValue(busy), note})
}

func lossValue(r *result) string {
	if r.zeroLoss() {
		return "zero loss"
	}
	return fmt.Sprintf("lost %d of %d (%.3f%%)", r.lost(), r.gen.sent, 100*float64(r.lost())/float64(max(r.gen.sent, 1)))
}
