package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// The Community ID specification's captures, served: /v1/flows shows the
// spec's ID for every flow (with the configured seed), and the query
// primitive community-id answers exactly the packets of that connection,
// both directions.
func TestCommunityIDServed(t *testing.T) {
	dir := filepath.Join(testpcaps.RepoRoot(), "testdata", "community-id")
	names, err := filepath.Glob(filepath.Join(dir, "pcaps", "*.pcap"))
	if err != nil || len(names) == 0 {
		t.Fatalf("captures: %v", err)
	}
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	sp := importFiles(t, filepath.Join(dir, "pcaps"), names)

	byID := packetsByCommunityID(t, filepath.Join(dir, "pcaps"), names)

	for _, tc := range []struct {
		seed     int
		baseline string
	}{{0, "baseline_deflt.json"}, {1, "baseline_seed1.json"}} {
		b, err := os.ReadFile(filepath.Join(dir, "baseline", tc.baseline))
		if err != nil {
			t.Fatal(err)
		}
		var vectors []struct {
			CommunityID string `json:"communityid"`
		}
		if err := json.Unmarshal(b, &vectors); err != nil {
			t.Fatal(err)
		}
		spec := map[string]bool{}
		for _, v := range vectors {
			spec[v.CommunityID] = true
		}
		cfg := DefaultConfig()
		cfg.CommunityIDSeed = tc.seed
		base := serve(t, newServer(t, cfg, sp))
		c := http.DefaultClient
		var got Flows
		body := okBody(t)(get(t, c, base+"/v1/flows?limit=10000&q="+url.QueryEscape("ip or ip6")))
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Flows) == 0 {
			t.Fatal("no flows")
		}
		for _, f := range got.Flows {
			if !spec[f.CommunityID] {
				t.Errorf("seed %d: flow %s: community_id %q is not the spec's", tc.seed, f.Key, f.CommunityID)
			}
			if (f.ICMPType != nil) != (f.Proto != nil && (*f.Proto == flow.ProtoICMP || *f.Proto == flow.ProtoICMPv6)) {
				t.Errorf("flow %s: icmp_type %v", f.Key, f.ICMPType)
			}
		}
	}

	checkCommunityIDAnswers(t, sp, byID)
}

// The test captures of testdata/pcaps too: every connection's ID answers
// exactly its packets.
func TestCommunityIDTestCaptures(t *testing.T) {
	sp := importSpool(t)
	byID := packetsByCommunityID(t, testpcaps.Dir(t), captures)
	if len(byID) < 10 {
		t.Fatalf("only %d connections", len(byID))
	}
	checkCommunityIDAnswers(t, sp, byID)
}

// packetsByCommunityID reads the captures names of dir and groups their
// packets by the Community ID (seed 0) flow.Parse gives them.
func packetsByCommunityID(t *testing.T, dir string, names []string) map[string][]testpcaps.Packet {
	t.Helper()
	byID := map[string][]testpcaps.Packet{}
	for _, name := range names {
		c, err := testpcaps.Read(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range c.Packets {
			var k flow.Key
			flow.Parse(p.Data, &k)
			if id := k.CommunityID(0); id != "" {
				byID[id] = append(byID[id], p)
			}
		}
	}
	return byID
}

// checkCommunityIDAnswers asks for each ID's packets and gets exactly them.
func checkCommunityIDAnswers(t *testing.T, sp *spool.Spool, byID map[string][]testpcaps.Packet) {
	t.Helper()
	base := serve(t, newServer(t, DefaultConfig(), sp))
	c := http.DefaultClient
	for id, pkts := range byID {
		body := okBody(t)(get(t, c, base+"/v1/pcap?q="+url.QueryEscape("community-id "+id)))
		r, err := pcapio.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var rec pcapio.Packet
		for {
			if err := r.Next(&rec); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			var k flow.Key
			flow.Parse(rec.Data, &k)
			if k.CommunityID(0) != id {
				t.Errorf("%s: answer holds a packet of %v", id, k)
			}
			n++
		}
		if n != len(pkts) {
			t.Errorf("%s: %d packets, want %d", id, n, len(pkts))
		}
	}
}
