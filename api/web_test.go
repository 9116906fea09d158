package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
)

func getJSON(t *testing.T, c *http.Client, u string, v any) *http.Response {
	t.Helper()
	resp, body, err := get(t, c, u)
	body = mustOK(t, resp, body, err)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", u, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s: %v\n%s", u, err, body)
	}
	return resp
}

// TestFlowsPages: /v1/flows pages and sorts, with a total; each flow says
// its interface; the defaults are the old answer's.
func TestFlowsPages(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	base := ts.URL + "/v1/flows?q=" + url.QueryEscape("tcp or udp or icmp or icmp6")

	var all Flows
	getJSON(t, ts.Client(), base, &all)
	if all.Total != len(all.Flows) || all.Truncated || all.Offset != 0 || all.Limit != DefaultFlows || all.Sort != "bytes" || all.Order != "desc" {
		t.Fatalf("defaults: total %d, %d flows, truncated %v, offset %d limit %d sort %s order %s",
			all.Total, len(all.Flows), all.Truncated, all.Offset, all.Limit, all.Sort, all.Order)
	}
	for i, f := range all.Flows {
		// importSpool stores capture i as interface eth<i>.
		if !strings.HasPrefix(f.Iface, "eth") {
			t.Errorf("flow %d: iface %q", i, f.Iface)
		}
		if i > 0 && f.Bytes > all.Flows[i-1].Bytes {
			t.Errorf("flow %d: more bytes than the one before", i)
		}
	}
	// Each answer decoded into a zero value: json.Unmarshal keeps the
	// fields of a reused slice's elements that the JSON leaves out.
	var page Flows
	getJSON(t, ts.Client(), base+"&offset=3&limit=4", &page)
	if page.Total != all.Total || len(page.Flows) != 4 || !page.Truncated || !slices.EqualFunc(page.Flows, all.Flows[3:7], func(a, b FlowRow) bool { return a.Key == b.Key && a.Iface == b.Iface }) {
		t.Errorf("offset 3 limit 4: %+v", page)
	}
	page = Flows{}
	getJSON(t, ts.Client(), base+"&offset="+strconv.Itoa(all.Total-2)+"&limit=4", &page)
	if len(page.Flows) != 2 || page.Truncated {
		t.Errorf("last page: %d flows, truncated %v", len(page.Flows), page.Truncated)
	}
	page = Flows{}
	getJSON(t, ts.Client(), base+"&offset="+strconv.Itoa(all.Total+5), &page)
	if len(page.Flows) != 0 || page.Total != all.Total {
		t.Errorf("past the end: %d flows, total %d", len(page.Flows), page.Total)
	}
	page = Flows{}
	getJSON(t, ts.Client(), base+"&sort=first", &page)
	if page.Order != "asc" || len(page.Flows) != all.Total {
		t.Fatalf("sort=first: order %s, %d flows", page.Order, len(page.Flows))
	}
	for i := 1; i < len(page.Flows); i++ {
		a, _ := time.Parse(time.RFC3339Nano, page.Flows[i-1].First)
		b, _ := time.Parse(time.RFC3339Nano, page.Flows[i].First)
		if b.Before(a) {
			t.Fatalf("sort=first: flow %d first %v before %v", i, b, a)
		}
	}
	page = Flows{}
	getJSON(t, ts.Client(), base+"&sort=dport&order=desc", &page)
	for i := 1; i < len(page.Flows); i++ {
		if port := func(f FlowRow) int {
			if f.DstPort == nil {
				return -1
			}
			return int(*f.DstPort)
		}; port(page.Flows[i]) > port(page.Flows[i-1]) {
			t.Fatalf("sort=dport desc: flow %d out of order", i)
		}
	}
	for _, bad := range []string{"&sort=colour", "&order=up", "&offset=-1", "&offset=x", "&limit=0", "&limit=100001"} {
		resp, body, err := get(t, ts.Client(), base+bad)
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %v %v %s", bad, resp.Status, err, body)
		}
	}
}

// TestQueryErrorsJSON: a bad query is plain text by default, as stenoread
// expects, and JSON with the parser's position when asked for; /v1/parse
// always answers JSON.
func TestQueryErrorsJSON(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	for _, path := range []string{"/v1/flows", "/v1/histogram", "/v1/packets"} {
		u := ts.URL + path + "?q=" + url.QueryEscape("host 1.2.3")
		resp, body, err := get(t, ts.Client(), u)
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
			string(body) != "query: at 5 (\"1.2.3\"): host needs an IPv4 or IPv6 address\n" {
			t.Errorf("%s plain: %v %v %q", path, resp.Status, err, body)
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", "application/json")
		resp, body, err = do(ts.Client(), req)
		var qe QueryError
		if err != nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &qe) != nil {
			t.Fatalf("%s JSON: %v %v %s", path, resp.Status, err, body)
		}
		if qe.Offset == nil || *qe.Offset != 5 || qe.Token != "1.2.3" || qe.Message != "host needs an IPv4 or IPv6 address" || !strings.Contains(qe.Error, "at 5") {
			t.Errorf("%s JSON: %s", path, body)
		}
	}
	// Offsets in bytes and in UTF-16 code units (what JavaScript counts):
	// "é" is two bytes and one unit, "𝔸" four bytes and two units.
	text := "host é𝔸 and"
	resp, body, err := get(t, ts.Client(), ts.URL+"/v1/parse?q="+url.QueryEscape(text))
	var qe QueryError
	if err != nil || resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &qe) != nil || qe.Offset == nil {
		t.Fatalf("parse %q: %v %v %s", text, resp.Status, err, body)
	}
	if want := strings.Index(text, qe.Token); *qe.Offset != want {
		t.Errorf("offset %d, token %q at %d", *qe.Offset, qe.Token, want)
	}
	if *qe.OffsetUTF16 != 5 {
		t.Errorf("offset_utf16 %d, want 5: %s", *qe.OffsetUTF16, body)
	}
	// An error at the end of the query points just past it.
	resp, body, _ = get(t, ts.Client(), ts.URL+"/v1/parse?q="+url.QueryEscape("port 53 and"))
	qe = QueryError{}
	if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &qe) != nil || qe.Offset == nil || *qe.Offset != len("port 53 and") || qe.Token != "" {
		t.Errorf("at the end: %s", body)
	}
	var p Parsed
	getJSON(t, ts.Client(), ts.URL+"/v1/parse?q="+url.QueryEscape("TCP && after 2020-01-01T00:00:00Z"), &p)
	if p.Query != "tcp and after 2020-01-01T00:00:00Z" || p.From != "2020-01-01T00:00:00Z" || p.To != "" || p.TimeOnly {
		t.Errorf("parse: %+v", p)
	}
}

// TestHistogramEndpoint: the buckets add up to the flows' packets and
// bytes, and their number is capped.
func TestHistogramEndpoint(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	text := "udp or tcp"
	q, _ := query.Parse(text, time.Now())
	flows, err := engine.Flows(context.Background(), sp, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var packets, bytes uint64
	for _, f := range flows {
		packets += f.Packets
		bytes += f.Bytes
	}
	for _, n := range []int{0, 1, 7, 1000} {
		u := ts.URL + "/v1/histogram?q=" + url.QueryEscape(text)
		want := DefaultHistogramBuckets
		if n > 0 {
			u += "&buckets=" + strconv.Itoa(n)
			want = n
		}
		var h HistogramAnswer
		getJSON(t, ts.Client(), u, &h)
		if len(h.Packets) == 0 || len(h.Packets) > want || len(h.Bytes) != len(h.Packets) || h.WidthNS <= 0 || h.StartNS%h.WidthNS != 0 {
			t.Fatalf("buckets=%d: %d buckets of %d ns from %d", n, len(h.Packets), h.WidthNS, h.StartNS)
		}
		var p, b uint64
		for i := range h.Packets {
			p += h.Packets[i]
			b += h.Bytes[i]
		}
		if p != packets || b != bytes || h.TotalPackets != packets || h.TotalBytes != bytes {
			t.Errorf("buckets=%d: %d packets %d bytes (totals %d %d), want %d %d", n, p, b, h.TotalPackets, h.TotalBytes, packets, bytes)
		}
		if start, err := time.Parse(time.RFC3339Nano, h.Start); err != nil || start.UnixNano() != h.StartNS {
			t.Errorf("start %q, start_ns %d", h.Start, h.StartNS)
		}
	}
	// Nothing matches: no buckets, not an error.
	var h HistogramAnswer
	getJSON(t, ts.Client(), ts.URL+"/v1/histogram?q="+url.QueryEscape("port 1 and port 2"), &h)
	if len(h.Packets) != 0 || h.TotalPackets != 0 {
		t.Errorf("empty answer: %+v", h)
	}
	for _, bad := range []string{"0", "1001", "x"} {
		resp, body, err := get(t, ts.Client(), ts.URL+"/v1/histogram?q=tcp&buckets="+bad)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("buckets=%s: %v %v %s", bad, resp.Status, err, body)
		}
	}
}

// TestPacketsEndpoint: the packet list is the pcap answer's packets, in
// its order, page by page; data=1 gives their bytes.
func TestPacketsEndpoint(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	text := "tcp or icmp or udp"
	raw, _ := want(t, sp, text, engine.Options{})
	rd, err := pcapio.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var exp []pcapio.Packet
	for {
		var p pcapio.Packet
		err := rd.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p.Data = slices.Clone(p.Data)
		exp = append(exp, p)
	}
	if len(exp) < 40 {
		t.Fatalf("only %d packets", len(exp))
	}
	base := ts.URL + "/v1/packets?q=" + url.QueryEscape(text)
	var got []PacketInfo
	for off := 0; ; off += 10 {
		var page Packets
		getJSON(t, ts.Client(), base+"&offset="+strconv.Itoa(off)+"&limit=10", &page)
		if page.Offset != off || page.Limit != 10 {
			t.Fatalf("offset %d: %+v", off, page)
		}
		got = append(got, page.Packets...)
		if !page.More {
			break
		}
		if len(page.Packets) != 10 {
			t.Fatalf("offset %d: %d packets and more", off, len(page.Packets))
		}
	}
	if len(got) != len(exp) {
		t.Fatalf("%d packets listed, %d in the answer", len(got), len(exp))
	}
	kinds := map[string]bool{}
	for i, p := range got {
		e := exp[i]
		if p.N != i || p.TimeNS != e.Timestamp || p.CapLen != len(e.Data) || p.Len != e.OrigLen || p.Data != nil || p.Summary == "" || !strings.HasPrefix(p.Iface, "eth") {
			t.Fatalf("packet %d: %+v, want ts %d caplen %d len %d", i, p, e.Timestamp, len(e.Data), e.OrigLen)
		}
		if tm, err := time.Parse(time.RFC3339Nano, p.Time); err != nil || tm.UnixNano() != p.TimeNS {
			t.Fatalf("packet %d: time %q", i, p.Time)
		}
		for _, k := range []string{" TCP [", " UDP len ", " DNS query ", " ICMP EchoRequest"} {
			if strings.Contains(p.Summary, k) {
				kinds[k] = true
			}
		}
	}
	if len(kinds) != 4 {
		t.Errorf("summaries seen: %v", kinds)
	}
	t.Logf("e.g. %q", got[0].Summary)
	// One packet with its bytes, for the hex view.
	var one Packets
	getJSON(t, ts.Client(), base+"&offset=42&limit=1&data=1", &one)
	if len(one.Packets) != 1 || one.Packets[0].N != 42 || !bytes.Equal(one.Packets[0].Data, exp[42].Data) || !one.More {
		t.Errorf("packet 42 with data: %+v", one)
	}
	for _, bad := range []string{"&limit=0", "&limit=1001", "&limit=101&data=1", "&offset=-1", "&offset=1000001"} {
		resp, body, err := get(t, ts.Client(), base+bad)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %v %v %s", bad, resp.Status, err, body)
		}
	}
}

// TestPage: / is the embedded page, with its assets under /ui/, kept to
// itself by its headers.
func TestPage(t *testing.T) {
	s := newServer(t, DefaultConfig(), importSpool(t))
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	for path, ct := range map[string]string{"/": "text/html", "/ui/app.js": "text/javascript", "/ui/style.css": "text/css"} {
		resp, body, err := get(t, ts.Client(), ts.URL+path)
		body = mustOK(t, resp, body, err)
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) || len(body) < 100 {
			t.Errorf("%s: %s, %d bytes", path, resp.Header.Get("Content-Type"), len(body))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		// Nothing from elsewhere: the sensor has no internet. (SVG's
		// namespace is a name, never fetched.)
		body = bytes.ReplaceAll(body, []byte("http://www.w3.org/2000/svg"), nil)
		if bytes.Contains(body, []byte("http://")) || bytes.Contains(body, []byte("https://")) {
			t.Errorf("%s refers to another site", path)
		}
	}
	resp, _, err := get(t, ts.Client(), ts.URL+"/ui/nope.js")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %v %v", resp.Status, err)
	}
}
