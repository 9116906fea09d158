package alert

import (
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/query"
)

func TestParseSuricata(t *testing.T) {
	line := `{"timestamp":"2024-03-01T12:59:15.346584+0100","flow_id":1,"event_type":"alert",` +
		`"src_ip":"10.0.0.1","src_port":51234,"dest_ip":"2001:db8::1","dest_port":443,"proto":"TCP",` +
		`"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","alert":{"signature_id":2019401,"signature":"x"},` +
		`"flow":{"start":"2024-03-01T12:58:00.000001+0100","end":"2024-03-01T13:00:00.5+0100"}}`
	e, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2024, 3, 1, 11, 59, 15, 346584000, time.UTC)
	if !e.Time.Equal(want) || e.Source != Suricata || e.Proto != 6 || e.SrcPort != 51234 || e.DstPort != 443 ||
		e.Src.String() != "10.0.0.1" || e.Dst.String() != "2001:db8::1" || e.Name != "sid2019401" ||
		e.CommunityID != "1:LQU9qZlK+B5F3KDmev6m5PMibrg=" {
		t.Errorf("%+v", e)
	}
	if !e.Start.Equal(time.Date(2024, 3, 1, 11, 58, 0, 1000, time.UTC)) || !e.End.Equal(time.Date(2024, 3, 1, 12, 0, 0, 5e8, time.UTC)) {
		t.Errorf("start %v end %v", e.Start, e.End)
	}
	// The window is clipped to the flow's life: start, and end + 1 µs.
	got := e.Query(5 * time.Minute)
	if w := "community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg= and after 2024-03-01T11:58:00.000001Z and before 2024-03-01T12:00:00.500001Z"; got != w {
		t.Errorf("query\n got %s\nwant %s", got, w)
	}
	if _, err := query.Parse(got, time.Now()); err != nil {
		t.Errorf("%s: %v", got, err)
	}
}

func TestParseZeek(t *testing.T) {
	for _, tc := range []struct {
		line, query string
	}{
		// Epoch seconds; no community_id: both directions of the 5-tuple.
		{`{"ts":1709294355.346584,"uid":"CAbc1","id.orig_h":"10.0.0.1","id.orig_p":51234,"id.resp_h":"10.0.0.2","id.resp_p":53,"proto":"udp","duration":0.25}`,
			"ip proto 17 and ((src host 10.0.0.1 and src port 51234 and dst host 10.0.0.2 and dst port 53) or (src host 10.0.0.2 and src port 53 and dst host 10.0.0.1 and dst port 51234)) and after 2024-03-01T11:59:15.346584Z and before 2024-03-01T11:59:15.596585Z"},
		// ISO 8601 ts, no duration (still open): the window's end. ICMP
		// over IPv6 is "icmp" in Zeek.
		{`{"ts":"2024-03-01T11:59:15.346584Z","uid":"CAbc2","id.orig_h":"2001:db8::1","id.orig_p":128,"id.resp_h":"2001:db8::2","id.resp_p":129,"proto":"icmp"}`,
			"ip proto 58 and host 2001:db8::1 and host 2001:db8::2 and after 2024-03-01T11:59:15.346584Z and before 2024-03-01T12:04:15.346584Z"},
	} {
		e, err := Parse([]byte(tc.line))
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		if e.Source != Zeek {
			t.Errorf("%s: source %s", tc.line, e.Source)
		}
		got := e.Query(DefaultWindow)
		if got != tc.query {
			t.Errorf("query\n got %s\nwant %s", got, tc.query)
		}
		if _, err := query.Parse(got, time.Now()); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
	}
}

// A window that ends before the connection's recorded start, as an event
// logged long after its connection would: the window wins.
func TestQueryWindowBeforeStart(t *testing.T) {
	e, err := Parse([]byte(`{"timestamp":"2024-03-01T12:00:00.000000+0000","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","proto":"GRE","flow":{"start":"2024-03-01T13:00:00.000000+0000"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, w := e.Query(time.Minute), "ip proto 47 and host 10.0.0.1 and host 10.0.0.2 and after 2024-03-01T11:59:00Z and before 2024-03-01T12:01:00Z"; got != w {
		t.Errorf("got %s\nwant %s", got, w)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ line, msg string }{
		{``, "empty"},
		{`[1,2]`, "not a JSON object"},
		{`{"src_ip":"10.0.0.1"} {}`, "more than one JSON value"},
		{`{"a":1}`, "neither a Suricata"},
		{`{"timestamp":"2024-03-01T12:00:00Z","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","proto":"TCP","src_port":1}`, "no dest_port"},
		{`{"timestamp":"2024-03-01T12:00:00Z","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","proto":"XTP"}`, `proto "XTP"`},
		{`{"timestamp":"2024-03-01T12:00:00Z","src_ip":"fe80::1%eth0","dest_ip":"10.0.0.2","proto":"GRE"}`, "src_ip"},
		{`{"ts":-5,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","proto":"unknown_transport"}`, "ts -5"},
		{`{"ts":1,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","proto":"tcp","id.orig_p":1,"id.resp_p":2,"duration":"long"}`, "duration long"},
		{`{"ts":1,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","proto":"tcp","id.orig_p":1.5,"id.resp_p":2}`, "id.orig_p 1.5"},
		{strings.Repeat(" ", MaxEventBytes) + "{}" + strings.Repeat(" ", 2), ""},
	} {
		_, err := Parse([]byte(tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%.60q: %v, want an error with %q", tc.line, err, tc.msg)
		}
	}
}
