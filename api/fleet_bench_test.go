package api

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/internal/certs"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/spool"
)

// BenchmarkFleetQuery compares one fleet query over three local sensors
// (mutual TLS, each with the same larger test captures) with asking the
// three one after another, as an analyst would without a fleet: time to
// the first byte of the answer and throughput in answer bytes per second.
//
//	go test ./api -run '^$' -bench FleetQuery -benchtime 10x
func BenchmarkFleetQuery(b *testing.B) {
	certsDir := makeCertsB(b)
	names := []string{
		"chrissanders-packets/http_espn.pcapng", "chrissanders-packets/ek_to_cryptowall4.pcapng",
		"chrissanders-packets/ratinfected.pcapng", "chrissanders-packets/tcp_ports.pcapng",
	}
	var sensors []fleet.Sensor
	var bases []string
	for i := range 3 {
		sp := importFilesB(b, testpcaps.Dir(b), names)
		srv := newServerB(b, Config{CertsDir: certsDir, MaxQueryBytes: DefaultMaxQueryBytes, AlertWindow: DefaultConfig().AlertWindow}, sp, fleet.Config{})
		base := serveB(b, srv)
		bases = append(bases, base)
		sensors = append(sensors, fleet.Sensor{Name: string(rune('a' + i)), URL: base, Certs: certsDir})
	}
	fleetBase := fleetServerB(b, sensors)
	c := tlsClientB(b, certsDir)
	const q = "after 1990-01-01T00:00:00Z"

	// read returns the time to the first byte and the bytes of an answer.
	read := func(resp *http.Response, err error, start time.Time) (time.Duration, int64) {
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(resp.Body)
			b.Fatalf("%s: %s", resp.Status, msg)
		}
		buf := make([]byte, 64<<10)
		n, err := resp.Body.Read(buf)
		ttfb := time.Since(start)
		total := int64(n)
		for err == nil {
			n, err = resp.Body.Read(buf)
			total += int64(n)
		}
		if err != io.EOF {
			b.Fatal(err)
		}
		return ttfb, total
	}
	var fleetTTFB, fleetTime, seqTTFB, seqTime time.Duration
	var fleetBytes, seqBytes int64
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		resp, err := http.Post(fleetBase+"/v1/fleet/query", "text/plain", strings.NewReader(q))
		ttfb, n := read(resp, err, start)
		fleetTTFB += ttfb
		fleetTime += time.Since(start)
		fleetBytes += n

		start = time.Now()
		for i, base := range bases {
			resp, err := c.Get(base + "/v1/pcap?format=pcapng&q=" + url.QueryEscape(q))
			ttfb, n := read(resp, err, start)
			if i == 0 {
				seqTTFB += ttfb
			}
			seqBytes += n
		}
		seqTime += time.Since(start)
	}
	b.StopTimer()
	N := float64(b.N)
	b.ReportMetric(float64(fleetTTFB.Microseconds())/N/1000, "fleet-ttfb-ms")
	b.ReportMetric(float64(seqTTFB.Microseconds())/N/1000, "seq-ttfb-ms")
	b.ReportMetric(float64(fleetBytes)/fleetTime.Seconds()/1e6, "fleet-MB/s")
	b.ReportMetric(float64(seqBytes)/seqTime.Seconds()/1e6, "seq-MB/s")
	b.ReportMetric(seqTime.Seconds()/fleetTime.Seconds(), "fleet-speedup")
	b.ReportMetric(float64(fleetBytes)/N/1e6, "answer-MB")
}

// The helpers of helpers_test.go for a benchmark, without logs.

func makeCertsB(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "certs")
	if _, err := certs.Init(dir, certs.DefaultOptions()); err != nil {
		b.Fatal(err)
	}
	return dir
}

func importFilesB(b *testing.B, dir string, names []string) *spool.Spool {
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{b.TempDir()}
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i, name := range names {
		w, err := sp.NewWriter(fmt.Sprintf("imp%d", i), fmt.Sprintf("eth%d", i))
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		_, err = spool.Import(context.Background(), w, name, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}
	return sp
}

func newServerB(b *testing.B, cfg Config, sp *spool.Spool, fc fleet.Config) *Server {
	s, err := New(cfg, Options{Spool: sp, Registry: prometheus.NewRegistry(), Fleet: fc})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func serveB(b *testing.B, s *Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	if s.TLS() {
		return "https://" + ln.Addr().String()
	}
	return "http://" + ln.Addr().String()
}

func fleetServerB(b *testing.B, sensors []fleet.Sensor) string {
	fc := fleet.DefaultConfig()
	fc.Sensors = sensors
	cfg := DefaultConfig()
	cfg.Socket, cfg.Listen = "", "127.0.0.1:0"
	return serveB(b, newServerB(b, cfg, importFilesB(b, testpcaps.Dir(b), nil), fc))
}

func tlsClientB(b *testing.B, dir string) *http.Client {
	tc, err := ClientTLSConfig(dir)
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
