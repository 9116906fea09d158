package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
)

// alertLines returns the non-empty lines of a file of testdata/alerts.
func alertLines(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testpcaps.RepoRoot(), "testdata", "alerts", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			out = append(out, slices.Clone(l))
		}
	}
	return out
}

// endpoints are the addresses an event names (Suricata or Zeek fields).
func endpoints(t *testing.T, line []byte) (a, b netip.Addr) {
	var ev map[string]any
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatal(err)
	}
	get := func(k1, k2 string) netip.Addr {
		s, _ := ev[k1].(string)
		if s == "" {
			s, _ = ev[k2].(string)
		}
		return netip.MustParseAddr(s)
	}
	return get("src_ip", "id.orig_h"), get("dest_ip", "id.resp_h")
}

// TestAlertPivot posts Suricata alerts and Zeek conn.log lines written for
// connections of the test captures, and gets exactly as many packets as
// tshark counts for that connection in the window, each between the
// event's two hosts.
func TestAlertPivot(t *testing.T) {
	var expected []struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Capture string `json:"capture"`
		Count   int    `json:"count"`
	}
	b, err := os.ReadFile(filepath.Join(testpcaps.RepoRoot(), "testdata", "alerts", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &expected); err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, e := range expected {
		if !slices.Contains(caps, e.Capture) {
			caps = append(caps, e.Capture)
		}
	}
	sp := importFiles(t, filepath.Join(testpcaps.Dir(t), "chrissanders-packets"), caps)
	base := serve(t, newServer(t, DefaultConfig(), sp))
	lines := map[string][][]byte{"eve.json": alertLines(t, "eve.json"), "conn.log": alertLines(t, "conn.log")}

	for _, e := range expected {
		line := lines[e.File][e.Line-1]
		for _, format := range []string{"pcap", "pcapng"} {
			resp, body, err := do(http.DefaultClient, mustRequest(t, http.MethodPost, base+"/v1/alert?format="+format, line))
			body = mustOK(t, resp, body, err)
			where := fmt.Sprintf("%s:%d (%s, %s)", e.File, e.Line, e.Capture, format)
			q := resp.Header.Get(HeaderQuery)
			if q == "" || !strings.Contains(resp.Header.Get("Content-Disposition"), "stenod-alert-") {
				t.Errorf("%s: query header %q, disposition %q", where, q, resp.Header.Get("Content-Disposition"))
			}
			a, bb := endpoints(t, line)
			r, err := pcapio.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			n := 0
			var p pcapio.Packet
			for {
				if err := r.Next(&p); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				n++
				pkt := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default)
				nl := pkt.NetworkLayer()
				if nl == nil {
					t.Errorf("%s: packet %d is not IP", where, n)
					continue
				}
				src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
				dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
				if !(src == a && dst == bb || src == bb && dst == a) {
					t.Errorf("%s: packet %d is %v > %v, not between %v and %v", where, n, src, dst, a, bb)
				}
			}
			if n != e.Count {
				t.Errorf("%s: %d packets, want %d (query %s)", where, n, e.Count, q)
			}
		}
	}
}

func mustRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Bad events and parameters get 400 with the reason, and the spool is
// untouched.
func TestAlertBadInput(t *testing.T) {
	sp := importFiles(t, filepath.Join(testpcaps.Dir(t), "chrissanders-packets"), []string{"dns.pcap"})
	base := serve(t, newServer(t, DefaultConfig(), sp))
	good := alertLines(t, "eve.json")[2]
	for _, tc := range []struct {
		name, params string
		body         []byte
		code         int
		msg          string
	}{
		{"empty", "", nil, 400, "empty"},
		{"not json", "", []byte("alert tcp any any"), 400, "not a JSON object"},
		{"two events", "", append(append(slices.Clone(good), '\n'), good...), 400, "more than one JSON value"},
		{"neither", "", []byte(`{"event_type":"alert"}`), 400, "neither a Suricata"},
		{"no dest", "", []byte(`{"timestamp":"2016-01-08T20:59:15.558135+0000","src_ip":"4.2.2.1","proto":"UDP"}`), 400, "no dest_ip"},
		{"bad address", "", []byte(`{"timestamp":"2016-01-08T20:59:15.558135+0000","src_ip":"4.2.2","dest_ip":"4.2.2.1","proto":"UDP","src_port":1,"dest_port":2}`), 400, `src_ip "4.2.2"`},
		{"bad port", "", []byte(`{"timestamp":"2016-01-08T20:59:15.558135+0000","src_ip":"4.2.2.2","dest_ip":"4.2.2.1","proto":"UDP","src_port":70000,"dest_port":2}`), 400, "src_port 70000"},
		{"bad time", "", []byte(`{"timestamp":"yesterday","src_ip":"4.2.2.2","dest_ip":"4.2.2.1","proto":"UDP","src_port":1,"dest_port":2}`), 400, "timestamp yesterday"},
		{"bad community id", "", []byte(`{"timestamp":"2016-01-08T20:59:15.558135+0000","src_ip":"4.2.2.2","dest_ip":"4.2.2.1","proto":"UDP","src_port":1,"dest_port":2,"community_id":"1:xyz"}`), 400, "community_id 1:xyz"},
		{"zeek no ts", "", []byte(`{"id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.2","id.resp_p":2,"proto":"tcp"}`), 400, "no ts"},
		{"bad window", "?window=forever", good, 400, `window "forever"`},
		{"window too long", "?window=9000h", good, 400, "window"},
		{"bad format", "?format=json", good, 400, `format "json"`},
	} {
		resp, body, err := do(http.DefaultClient, mustRequest(t, http.MethodPost, base+"/v1/alert"+tc.params, tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, resp.StatusCode, body, tc.code, tc.msg)
		}
	}
	// The spool still answers the good event.
	resp, body, err := do(http.DefaultClient, mustRequest(t, http.MethodPost, base+"/v1/alert", good))
	if n := countPcap(t, mustOK(t, resp, body, err)); n != 1 {
		t.Errorf("after the bad events: %d packets, want 1", n)
	}
}
