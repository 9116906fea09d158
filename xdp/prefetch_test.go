//go:build linux

package xdp

import (
	"testing"
	"unsafe"
)

// TestPrefetch: any descriptor, even one pointing outside the UMEM, is safe
// to prefetch, and nothing changes in memory.
func TestPrefetch(t *testing.T) {
	mem := make([]byte, 4*4096)
	for i := range mem {
		mem[i] = byte(i)
	}
	s := &Socket{umem: &UMEM{mem: mem, metaLen: MetaSize}}
	s.Prefetch(nil)
	s.Prefetch([]Desc{{Addr: 256, Len: 60}, {Addr: 4096 + 256, Len: 1500}, {Addr: 0}, {Addr: 1 << 30}, {Addr: 3*4096 + 4000}})
	for i := range mem {
		if mem[i] != byte(i) {
			t.Fatalf("byte %d changed", i)
		}
	}
	if unsafe.Sizeof(Desc{}) != 16 {
		t.Fatalf("Desc is %d bytes; prefetch_amd64.s steps by 16", unsafe.Sizeof(Desc{}))
	}
	(&Socket{}).Prefetch([]Desc{{Addr: 256}}) // no UMEM
}
