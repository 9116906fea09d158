package trafficgen

import (
	"testing"

	"github.com/stenod/stenod/flow"
)

// TestHeavyTail: the mix is what its documentation says: every connection
// complete, the small ones under 20 KB on the wire, and the large ones
// carrying most of the bytes.
func TestHeavyTail(t *testing.T) {
	type conn struct {
		bytes, packets, syn, fin int
	}
	conns := map[flow.Key]*conn{}
	var total, frames int
	HeavyTail(func(frame []byte) {
		var k flow.Key
		flow.Parse(frame, &k)
		if k.Proto != 6 || k.Flags&flow.FlagPorts == 0 {
			t.Fatalf("frame %d: not TCP: %v", frames, k)
		}
		fl := flow.TCPFlags(frame, &k)
		if k.SrcPort == 80 { // one key per connection
			k = k.Reversed()
		}
		c := conns[k]
		if c == nil {
			c = &conn{}
			conns[k] = c
		}
		c.bytes += len(frame)
		c.packets++
		if fl&tcpSYN != 0 {
			c.syn++
		}
		if fl&tcpFIN != 0 {
			c.fin++
		}
		total += len(frame)
		frames++
	})
	if len(conns) != HeavyTailConns {
		t.Fatalf("%d connections, want %d", len(conns), HeavyTailConns)
	}
	var whole, stored int
	for k, c := range conns {
		if c.syn != 2 || c.fin != 2 {
			t.Errorf("%v: %d SYN, %d FIN", k, c.syn, c.fin)
		}
		if c.bytes < 20<<10 {
			whole++
		}
		stored += min(c.bytes, 20<<10)
	}
	t.Logf("%d frames, %d bytes; %d connections under 20 KB; at most %d bytes within a 20 KB cutoff (1/%.1f)",
		frames, total, whole, stored, float64(total)/float64(stored))
	if whole != HeavyTailSmall {
		t.Errorf("%d connections under 20 KB, want %d", whole, HeavyTailSmall)
	}
	if total < 10*stored {
		t.Errorf("a 20 KB cutoff keeps 1/%.1f of the bytes: not the heavy tail the benchmark needs", float64(total)/float64(stored))
	}
}
