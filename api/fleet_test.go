package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// fleetPacket is a packet of a pcapng answer: its time, interface name and
// bytes.
type fleetPacket struct {
	ts    int64
	iface string
	data  string
}

func readPcapng(t *testing.T, b []byte) []fleetPacket {
	t.Helper()
	rd, err := pcapio.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []fleetPacket
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("answer packet %d: %v", len(out), err)
		}
		out = append(out, fleetPacket{p.Timestamp, rd.Interfaces()[p.Interface].Name, string(p.Data)})
	}
}

// testSensor is a peer of the fleet tests: an API over a spool of some of
// the test captures.
type testSensor struct {
	name, url string
	srv       *Server
	sp        *spool.Spool
}

// fleetSensors starts three sensors over TLS, each with different test
// captures, all trusting certs.
func fleetSensors(t *testing.T, certs string) []*testSensor {
	t.Helper()
	parts := [][]string{
		{"chrissanders-packets/dns.pcap", "chrissanders-packets/http_google.pcapng"},
		{"chrissanders-packets/dns_query_response.pcapng", "chrissanders-packets/icmp_echo.pcapng"},
		{"chrissanders-packets/http_ip4and6.pcapng"},
	}
	var out []*testSensor
	for i, names := range parts {
		sp := importFiles(t, testpcaps.Dir(t), names)
		srv := newServer(t, Config{CertsDir: certs, MaxQueryBytes: DefaultMaxQueryBytes, AlertWindow: DefaultConfig().AlertWindow}, sp)
		out = append(out, &testSensor{name: fmt.Sprintf("s%d", i+1), url: serve(t, srv), srv: srv, sp: sp})
	}
	return out
}

// fleetServer is the API that asks sensors.
func fleetServer(t *testing.T, certs string, sensors []fleet.Sensor, tune func(*fleet.Config)) (*Server, string) {
	t.Helper()
	fc := fleet.DefaultConfig()
	fc.Sensors = sensors
	if tune != nil {
		tune(&fc)
	}
	cfg := DefaultConfig()
	cfg.Socket, cfg.Listen = "", "127.0.0.1:0"
	s, err := New(cfg, Options{Spool: importFiles(t, testpcaps.Dir(t), nil), Registry: prometheus.NewRegistry(), Logger: testLogger(t), Fleet: fc})
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, s)
}

func fleetOf(ts []*testSensor, certs string) []fleet.Sensor {
	var out []fleet.Sensor
	for _, s := range ts {
		out = append(out, fleet.Sensor{Name: s.name, URL: s.url, Certs: certs})
	}
	return out
}

// expectedUnion asks each sensor directly and merges the answers as the
// fleet must: by time, ties to the sensor listed first, interfaces named
// sensor/iface.
func expectedUnion(t *testing.T, c *http.Client, ts []*testSensor, q string) []fleetPacket {
	t.Helper()
	var all []fleetPacket
	for _, s := range ts {
		body := okBody(t)(get(t, c, s.url+"/v1/pcap?format=pcapng&q="+url.QueryEscape(q)))
		for _, p := range readPcapng(t, body) {
			p.iface = s.name + "/" + p.iface
			all = append(all, p)
		}
	}
	slices.SortStableFunc(all, func(a, b fleetPacket) int { return int(a.ts - b.ts) })
	return all
}

func postFleet(t *testing.T, base, path, q string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(http.DefaultClient, req)
}

func summaryOf(t *testing.T, resp *http.Response) fleet.Summary {
	t.Helper()
	var sum fleet.Summary
	if err := json.Unmarshal([]byte(resp.Trailer.Get(TrailerFleetSummary)), &sum); err != nil {
		t.Fatalf("trailer %s %q: %v", TrailerFleetSummary, resp.Trailer.Get(TrailerFleetSummary), err)
	}
	return sum
}

// TestFleetQuery: the fleet answer is exactly the union of the sensors'
// answers, in time order, on "sensor/iface" interfaces, with the summary in
// the trailers; limits hold over the whole answer.
func TestFleetQuery(t *testing.T) {
	certs := makeCerts(t)
	ts := fleetSensors(t, certs)
	_, base := fleetServer(t, certs, fleetOf(ts, certs), nil)
	c := tlsClient(t, certs, false)
	for _, q := range []string{"after 1990-01-01T00:00:00Z", "port 53 or icmp", "tcp and port 80"} {
		want := expectedUnion(t, c, ts, q)
		resp, body, err := postFleet(t, base, "/v1/fleet/query", q, nil)
		body = mustOK(t, resp, body, err)
		got := readPcapng(t, body)
		if len(got) != len(want) {
			t.Fatalf("%q: %d packets, want %d", q, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%q: packet %d: %v %q, want %v %q", q, i, got[i].ts, got[i].iface, want[i].ts, want[i].iface)
			}
		}
		sum := summaryOf(t, resp)
		if sum.Packets != int64(len(want)) || len(sum.Missing) != 0 || len(sum.Sensors) != 3 || resp.Trailer.Get(TrailerFleetMissing) != "" ||
			resp.Trailer.Get(TrailerDamaged) != "0" {
			t.Errorf("%q: summary %+v, trailers %v", q, sum, resp.Trailer)
		}
		for _, s := range sum.Sensors {
			if s.Status != fleet.StatusComplete || s.Error != "" {
				t.Errorf("%q: sensor %+v", q, s)
			}
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/x-pcapng" {
			t.Errorf("content type %q", ct)
		}
	}
	ifaces := map[string]bool{}
	for _, p := range expectedUnion(t, c, ts, "after 1990-01-01T00:00:00Z") {
		ifaces[p.iface] = true
	}
	if len(ifaces) != 5 || !ifaces["s1/eth0"] || !ifaces["s1/eth1"] || !ifaces["s3/eth0"] {
		t.Errorf("interfaces %v", ifaces)
	}

	// Limits apply to the merged answer.
	all := expectedUnion(t, c, ts, "after 1990-01-01T00:00:00Z")
	resp, body, err := postFleet(t, base, "/v1/fleet/query", "after 1990-01-01T00:00:00Z", map[string]string{HeaderLimitPackets: "25"})
	got := readPcapng(t, mustOK(t, resp, body, err))
	if !slices.Equal(got, all[:25]) || !summaryOf(t, resp).Limited {
		t.Errorf("limit 25: %d packets, limited %v", len(got), summaryOf(t, resp).Limited)
	}
	var limit int64
	for _, p := range all[:40] {
		limit += 16 + int64(len(p.data))
	}
	resp, body, err = postFleet(t, base, "/v1/fleet/query", "after 1990-01-01T00:00:00Z", map[string]string{HeaderLimitBytes: fmt.Sprint(limit)})
	if got := readPcapng(t, mustOK(t, resp, body, err)); !slices.Equal(got, all[:40]) {
		t.Errorf("byte limit: %d packets, want 40", len(got))
	}

	// A subset of the sensors, and the summary alone.
	resp, body, err = postFleet(t, base, "/v1/fleet/query?sensors=s3,s1&summary=json", "port 53 or icmp", nil)
	body = mustOK(t, resp, body, err)
	var sum fleet.Summary
	if err := json.Unmarshal(body, &sum); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	want := expectedUnion(t, c, []*testSensor{ts[0], ts[2]}, "port 53 or icmp")
	if len(sum.Sensors) != 2 || sum.Sensors[0].Name != "s1" || sum.Sensors[1].Name != "s3" || sum.Packets != int64(len(want)) {
		t.Errorf("summary of s1, s3: %s", body)
	}

	// Bad requests.
	for _, tc := range []struct {
		path, q string
		hdr     map[string]string
		code    int
		msg     string
	}{
		{"/v1/fleet/query", "host 1.2.3", nil, 400, "host needs"},
		{"/v1/fleet/query", "port 53", map[string]string{HeaderLimitPackets: "-1"}, 400, "Steno-Limit-Packets"},
		{"/v1/fleet/query?sensors=s9", "port 53", nil, 400, `unknown sensor "s9"`},
		{"/v1/fleet/query?summary=xml", "port 53", nil, 400, "summary"},
	} {
		resp, body, err := postFleet(t, base, tc.path, tc.q, tc.hdr)
		if err != nil || resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s %q: %v %v %s, want %d %q", tc.path, tc.q, err, resp.Status, body, tc.code, tc.msg)
		}
	}
}

// TestFleetMissingSensors: a sensor that cannot be reached and one whose
// answer breaks off are named missing, the answer holds everything of the
// others and what the broken one sent; when every sensor fails, the answer
// is 502 with the summary.
func TestFleetMissingSensors(t *testing.T) {
	certs := makeCerts(t)
	ts := fleetSensors(t, certs)
	c := tlsClient(t, certs, false)
	q := "after 1990-01-01T00:00:00Z"
	want := expectedUnion(t, c, ts[:2], q)
	breakAnswers(ts[2].srv, 3)
	dead := fleet.Sensor{Name: "dead", URL: "https://" + freeAddr(t), Certs: certs}
	sensors := append(fleetOf(ts, certs), dead)
	_, base := fleetServer(t, certs, sensors, nil)
	resp, body, err := postFleet(t, base, "/v1/fleet/query", q, nil)
	got := readPcapng(t, mustOK(t, resp, body, err))
	sum := summaryOf(t, resp)
	if !slices.Equal(sum.Missing, []string{"s3", "dead"}) || resp.Trailer.Get(TrailerFleetMissing) != "s3,dead" {
		t.Errorf("missing %v (trailer %q)", sum.Missing, resp.Trailer.Get(TrailerFleetMissing))
	}
	var others []fleetPacket
	for _, p := range got {
		if !strings.HasPrefix(p.iface, "s3/") {
			others = append(others, p)
		}
	}
	if !slices.Equal(others, want) {
		t.Errorf("%d packets of s1 and s2, want %d", len(others), len(want))
	}
	for _, s := range sum.Sensors[2:] {
		if s.Status != fleet.StatusFailed || s.Error == "" {
			t.Errorf("sensor %+v", s)
		}
	}
	t.Logf("missing sensors: %+v", sum.Sensors[2:])

	// No sensor answers.
	_, base = fleetServer(t, certs, []fleet.Sensor{dead}, nil)
	resp, body, err = postFleet(t, base, "/v1/fleet/query", q, nil)
	if err != nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), `"missing":["dead"]`) {
		t.Errorf("all dead: %v %v %s", err, resp.Status, body)
	}

	// No fleet at all.
	_, base = fleetServer(t, certs, nil, nil)
	for _, path := range []string{"/v1/fleet/query", "/v1/fleet/stats"} {
		var resp *http.Response
		if path == "/v1/fleet/stats" {
			resp, body, err = get(t, http.DefaultClient, base+path)
		} else {
			resp, body, err = postFleet(t, base, path, q, nil)
		}
		if err != nil || resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "fleet.sensors") {
			t.Errorf("%s without a fleet: %v %v %s", path, err, resp.Status, body)
		}
	}
}

// TestFleetStats: every sensor's spool figures, and the error of one that
// does not answer.
func TestFleetStats(t *testing.T) {
	certs := makeCerts(t)
	ts := fleetSensors(t, certs)
	dead := fleet.Sensor{Name: "dead", URL: "https://" + freeAddr(t), Certs: certs}
	_, base := fleetServer(t, certs, append(fleetOf(ts, certs), dead), nil)
	body := okBody(t)(get(t, http.DefaultClient, base+"/v1/fleet/stats"))
	var st fleet.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Sensors) != 4 || !slices.Equal(st.Missing, []string{"dead"}) {
		t.Fatalf("stats: %s", body)
	}
	for i, s := range st.Sensors[:3] {
		var n uint64
		for _, u := range ts[i].sp.Usage() {
			n += u.Packets
		}
		if s.Error != "" || s.Packets != n || n == 0 || s.Oldest == "" || s.DiskBytes == 0 || len(s.Stats) == 0 {
			t.Errorf("sensor %d: %+v, want %d packets", i, s, n)
		}
	}
	if st.Sensors[3].Error == "" {
		t.Errorf("dead sensor without error: %+v", st.Sensors[3])
	}
}

// freeAddr is a loopback address nobody listens on: port 1 (tcpmux), which
// no test machine serves.
func freeAddr(*testing.T) string { return "127.0.0.1:1" }
