package spool_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// TestRotateBackInTime: a packet stamped RotateAge before the file's first
// starts a new file, as one stamped RotateAge after it does, so that every
// file spans at most RotateAge either way (repair relies on it); and many
// files whose first packets share a timestamp (an import of captures that
// all start at 0) each get a name, none is lost; and each file's index is
// sealed and counted.
func TestRotateBackInTime(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sp := open(t, cfg)
	w, err := sp.NewWriter("import", "import")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 60)
	data[12], data[13] = 0x08, 0x06 // ARP
	var k flow.Key
	flow.Parse(data, &k)
	const rounds = 40
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range rounds {
		for _, ts := range []int64{t0, t0 + int64(cfg.RotateAge)} {
			if err := w.Append(ts, len(data), data, &k); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
	closeAll(t, w, sp)
	// Every file's live index was sealed, each seal timed.
	if c := sp.Counters(); c.IndexesSealed != 2*rounds || c.SealCPUSeconds <= 0 || c.IndexCPUSeconds <= 0 {
		t.Fatalf("%d indexes sealed in %v s of CPU (live indexes %v s), want %d in some", c.IndexesSealed, c.SealCPUSeconds, c.IndexCPUSeconds, 2*rounds)
	}
	sp = open(t, cfg)
	defer sp.Close()
	if got := len(answer(t, sp, "after 2019-12-31T00:00:00Z")); got != 2*rounds {
		t.Fatalf("%d packets stored, want %d", got, 2*rounds)
	}
	if n := len(sp.Files()); n != 2*rounds {
		t.Fatalf("%d files, want one per packet (%d): each jump of RotateAge either way starts one", n, 2*rounds)
	}
	if c := sp.Counters(); c.WriteErrors != 0 || c.FilesQuarantined != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// udpFromHost is a 60-byte IPv4/UDP frame from source address 10.x.y.z,
// taken from n.
func udpFromHost(n uint32) []byte {
	f := make([]byte, 60)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 46)
	binary.BigEndian.PutUint32(ip[12:], 10<<24|n&0xffffff)
	copy(ip[16:], []byte{192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[20:], 4000)
	binary.BigEndian.PutUint16(ip[22:], 53)
	binary.BigEndian.PutUint16(ip[24:], 26)
	return f
}

// TestRotateLiveIndexFull: a flood of new flows, each of one small packet,
// ends files early once their live index reaches MaxLiveIndex, and loses
// nothing; the same packets of one flow fill one file.
func TestRotateLiveIndexFull(t *testing.T) {
	const packets = 60_000
	for _, tc := range []struct {
		name  string
		flows uint32
		files int // at least
	}{
		{"one flow", 1, 1},
		{"a flow a packet", packets, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.RotateSize = 64 << 20 // not the limit here
			cfg.MaxLiveIndex = 4 << 20
			sp := open(t, cfg)
			w, err := sp.NewWriter("flood", "flood")
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
			var k flow.Key
			for i := range packets {
				data := udpFromHost(uint32(i) % tc.flows)
				flow.Parse(data, &k)
				if err := w.Append(t0+int64(i)*1000, len(data), data, &k); err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
			}
			closeAll(t, w, sp)
			full := sp.Counters().IndexFullRotations
			sp = open(t, cfg)
			defer sp.Close()
			if got := len(answer(t, sp, "after 2019-12-31T00:00:00Z")); got != packets {
				t.Fatalf("%d packets stored, want %d", got, packets)
			}
			files := len(sp.Files())
			switch {
			case tc.flows == 1 && (files != 1 || full != 0):
				t.Fatalf("one flow: %d files, %d ended for a full index; want 1 and 0", files, full)
			case tc.flows > 1 && (files < tc.files || full != uint64(files-1)):
				t.Fatalf("%d files, %d ended for a full index; want at least %d, all but the last so ended", files, full, tc.files)
			}
			// The packets of a host are all there, across files.
			host := fmt.Sprintf("10.0.0.%d", 7%tc.flows)
			if got := len(answer(t, sp, "src host "+host)); got != packets/int(tc.flows) {
				t.Fatalf("host %s: %d packets, want %d", host, got, packets/int(tc.flows))
			}
			t.Logf("%d files", files)
		})
	}
}
