// Package hugemem maps memory outside the Go heap on a huge-page boundary
// and advises the kernel to back it with transparent huge pages.
//
// Memory that is touched at random, or handed to the kernel to pin, costs a
// TLB miss per 4 KiB page in base pages; in a huge page one entry covers
// 2 MiB. Under a hypervisor a TLB miss walks two page tables, so this
// matters more in a virtual machine. The advice is only advice: where the
// kernel has no huge page to give, or transparent huge pages are off
// ("never"), the memory is in base pages and everything works the same,
// only slower.
package hugemem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PageSize is the size of a transparent huge page with 4 KiB base pages
// (x86-64, arm64).
const PageSize = 2 << 20

// Region is a mapping of at least the asked size starting on a huge-page
// boundary.
type Region struct {
	mapping []byte
	// Mem is the usable memory: the size asked for, rounded up to whole
	// huge pages, starting on a huge-page boundary, zeroed.
	Mem []byte
}

// Map maps n bytes (rounded up to whole huge pages). The pages are faulted
// in on first touch; the kernel allocates huge pages then.
func Map(n int) (Region, error) {
	size := (n + PageSize - 1) &^ (PageSize - 1)
	// A mapping starts on a base-page boundary; one huge page more leaves
	// room to start on a huge-page boundary.
	m, err := unix.Mmap(-1, 0, size+PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return Region{}, fmt.Errorf("map %d bytes: %w", size, err)
	}
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(m))) & (PageSize - 1))
	mem := m[skip : skip+size : skip+size]
	// Advice only (see the package comment).
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	return Region{mapping: m, Mem: mem}, nil
}

// Unmap releases the region; Mem must not be used afterwards. Unmapping a
// zero Region, or one twice, does nothing.
func (r *Region) Unmap() error {
	if r.mapping == nil {
		return nil
	}
	n := len(r.mapping)
	err := unix.Munmap(r.mapping)
	*r = Region{}
	if err != nil {
		return fmt.Errorf("unmap %d bytes: %w", n, err)
	}
	return nil
}
