package hugemem

import (
	"testing"
	"unsafe"
)

func TestMap(t *testing.T) {
	r, err := Map(PageSize + 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Mem) != 2*PageSize || cap(r.Mem) != 2*PageSize {
		t.Fatalf("len %d cap %d, want both %d", len(r.Mem), cap(r.Mem), 2*PageSize)
	}
	if a := uintptr(unsafe.Pointer(unsafe.SliceData(r.Mem))); a%PageSize != 0 {
		t.Fatalf("region at %#x, not on a huge-page boundary", a)
	}
	for i := range r.Mem {
		if r.Mem[i] != 0 {
			t.Fatalf("byte %d is %d, want 0", i, r.Mem[i])
		}
	}
	r.Mem[len(r.Mem)-1] = 1
	if err := r.Unmap(); err != nil {
		t.Fatal(err)
	}
	if r.Mem != nil {
		t.Fatal("Mem still set after Unmap")
	}
	if err := r.Unmap(); err != nil {
		t.Fatalf("second Unmap: %v", err)
	}
}
