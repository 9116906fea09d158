//go:build linux

package api

import (
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/stenod/stenod/afpacket"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/xdp"
)

// TestStatsKeysSnakeCase: every key of /v1/stats is snake_case, the
// capture side's included, with every optional part of it present.
func TestStatsKeysSnakeCase(t *testing.T) {
	sp := importSpool(t)
	full := capture.Stats{Method: capture.MethodXDP, Interfaces: []capture.InterfaceStats{{
		Name: "eth1", Method: capture.MethodXDP, Program: &xdp.ProgramStats{}, ProgramError: "x",
		Queues: []capture.QueueStats{{Socket: &xdp.SocketStats{}, SocketError: "x", Ring: &afpacket.Stats{}, RingError: "x", ReceiveError: "x"}},
	}}}
	s, err := New(DefaultConfig(), Options{Spool: sp, Logger: testLogger(t), Stats: func() any { return full }, Cutoff: newFakeCutoff(t)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	resp, body, err := get(t, ts.Client(), ts.URL+"/v1/stats")
	body = mustOK(t, resp, body, err)
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	seen := map[string]bool{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				seen[k] = true
				if !snake.MatchString(k) {
					t.Errorf("%s.%s: not snake_case", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		}
	}
	walk("", v)
	// Spot checks of each part.
	for _, k := range []string{"files_deleted", "held_bytes", "method_reason", "queues", "spool_write_lost",
		"ringbuf_full", "dropped_rule", "rx_ring_full", "rx_fill_ring_empty_descs", "queue_freezes", "drops",
		"kept_share", "expected_retention_without_cutoff"} {
		if !seen[k] {
			t.Errorf("no key %q in /v1/stats:\n%s", k, body)
		}
	}
}
