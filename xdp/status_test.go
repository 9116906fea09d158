package xdp

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestReadPinned: what `stenod status` shows comes from the pins alone and
// agrees with the program's own view.
func TestReadPinned(t *testing.T) {
	v := testutil.NewVeth(t)
	testutil.RequireCommand(t, "bash")
	root := bpffs(t)
	ifc, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	v.InNS(t, "ip", "addr", "add", "10.199.0.2/24", "dev", v.Peer)
	v.InNS(t, "ip", "neigh", "add", "10.199.0.1", "lladdr", ifc.HardwareAddr.String(), "dev", v.Peer)
	p, err := LoadProgram(ProgramOptions{Interface: v.Host, PinRoot: root, Mode: AttachNative})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if err := p.Remove(); err != nil {
			t.Error(err)
		}
	}()
	for range 3 {
		sendUDP(t, v)
	}
	ifaces, err := PinnedInterfaces(root)
	if err != nil || !slices.Equal(ifaces, []string{v.Host}) {
		t.Fatalf("pinned interfaces %v, %v", ifaces, err)
	}
	st, err := ReadPinned(root, v.Host)
	if err != nil {
		t.Fatal(err)
	}
	want := mustStats(t, p)
	if st.Stats != want || st.Stats.Packets < 3 || !st.Attached || st.Flows < 1 || st.MaxFlows != DefaultMaxFlows {
		t.Fatalf("pinned status %+v, program stats %+v", st, want)
	}
	if _, err := ReadPinned(root, "nonexistent0"); err == nil {
		t.Fatal("no error for an interface without pins")
	}
}

// The Go side splits flow ids as the C side builds them.
func TestFlowIDCPUBitsMatchesHeader(t *testing.T) {
	h, err := os.ReadFile("../bpf/stenod.h")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("#define FLOW_ID_CPU_BITS %d\n", FlowIDCPUBits)
	if !strings.Contains(string(h), want) {
		t.Fatalf("bpf/stenod.h lacks %q", want)
	}
}
