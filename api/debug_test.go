package api

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDebugStatsAndConfig: /debug/stats is /v1/stats as stenographer's
// name<TAB>value lines, sorted; /debug/config is the configuration given,
// and 404 without one.
func TestDebugStatsAndConfig(t *testing.T) {
	sp := importSpool(t)
	cfgJSON := []byte(`{"spool": {"dirs": ["/data"]}}` + "\n")
	s, err := New(DefaultConfig(), Options{Spool: sp, Logger: testLogger(t), Config: cfgJSON,
		Stats: func() any {
			return map[string]any{"interfaces": []any{map[string]any{"name": "eth1", "packets": 42, "observe": true}}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	resp, body, err := get(t, ts.Client(), ts.URL+"/debug/stats")
	body = mustOK(t, resp, body, err)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if !slices.IsSorted(lines) {
		t.Errorf("lines not sorted:\n%s", body)
	}
	vals := map[string]string{}
	for _, l := range lines {
		name, v, ok := strings.Cut(l, "\t")
		if !ok || strings.ContainsAny(name, " \t") {
			t.Fatalf("line %q is not name<TAB>value", l)
		}
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			t.Errorf("line %q: value not a number", l)
		}
		vals[name] = v
	}
	var packets uint64
	for _, u := range sp.Usage() {
		packets += u.Packets
	}
	for name, want := range map[string]string{
		"spool.packets":                strconv.FormatUint(packets, 10),
		"spool.dirs.0.packets":         strconv.FormatUint(packets, 10),
		"spool.counters.files_deleted": "0",
		"capture.interfaces.0.packets": "42",
		"capture.interfaces.0.observe": "1",
	} {
		if vals[name] != want {
			t.Errorf("%s = %q, want %q", name, vals[name], want)
		}
	}
	if _, ok := vals["capture.interfaces.0.name"]; ok {
		t.Error("a string was listed")
	}

	resp, body, err = get(t, ts.Client(), ts.URL+"/debug/config")
	body = mustOK(t, resp, body, err)
	if string(body) != string(cfgJSON) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/debug/config: %s %q", resp.Header.Get("Content-Type"), body)
	}

	s2, err := New(DefaultConfig(), Options{Spool: sp, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ts2 := httptest.NewServer(s2.Handler())
	defer ts2.Close()
	resp, _, err = get(t, ts2.Client(), ts2.URL+"/debug/config")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/config without a configuration: %v %v", resp.Status, err)
	}
}
