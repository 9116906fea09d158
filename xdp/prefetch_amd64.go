//go:build linux

package xdp

import "unsafe"

// prefetchFrames is in prefetch_amd64.s: Go has no prefetch intrinsic, and
// a plain load would wait for the line it asks for.
//
//go:noescape
func prefetchFrames(base unsafe.Pointer, descs []Desc, metaLen uint64)

// Prefetch asks the CPU to start loading the metadata and the first bytes of
// the frames of descs, so that reading them later does not wait on one
// cache miss after another. In copy mode another CPU wrote each frame, in a
// chunk of its own that no hardware prefetcher predicts. It never faults.
func (s *Socket) Prefetch(descs []Desc) {
	if len(descs) == 0 || s.umem == nil || len(s.umem.mem) == 0 {
		return
	}
	prefetchFrames(unsafe.Pointer(&s.umem.mem[0]), descs, s.umem.metaLen)
}
