//go:build linux

package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestStenodCounts(t *testing.T) {
	const body = `{"now":"x","spool":{},"capture":{"Method":"afpacket","Interfaces":[{
		"Name":"eth0","Program":{"Packets":10,"RedirectFailed":2,"RingBufFull":7,"DroppedByRule":1},
		"Queues":[
			{"Queue":0,"Packets":100,"Stored":100,"SpoolWriteErrors":0,"Ring":{"Packets":105,"Drops":5,"QueueFreezes":1,"Delivered":100}},
			{"Queue":1,"Packets":50,"Stored":50,"SpoolWriteErrors":1,"Socket":{"RxDropped":0,"RxRingFull":3,"RxFillRingEmptyDescs":4}}
		]}]}}`
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body)) }))
	defer ts.Close()
	c, err := stenodCounts(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	if c.captured != 150 {
		t.Errorf("captured %d, want 150", c.captured)
	}
	want := map[string]uint64{
		"Program.RedirectFailed": 2, "Ring.Drops": 5, "Ring.QueueFreezes": 1, "SpoolWriteErrors": 1,
		"Socket.RxDropped": 0, "Socket.RxRingFull": 3, "Socket.RxFillRingEmptyDescs": 4,
	}
	for k, v := range want {
		if c.drops[k] != v {
			t.Errorf("%s = %d, want %d", k, c.drops[k], v)
		}
	}
	if len(c.drops) != len(want) {
		t.Errorf("drops %v, want the keys of %v", c.drops, want)
	}
}

func TestProbeFrame(t *testing.T) {
	b := probeFrame(20001)
	if len(b) != 60 || b[23] != 17 || b[36] != 0x4e || b[37] != 0x21 {
		t.Fatalf("probe frame % x", b)
	}
	// The IPv4 header checksums to zero.
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("IPv4 checksum folds to %#x", sum)
	}
}
