package spool

import (
	"fmt"
	"os"
	"runtime"

	"github.com/stenod/stenod/internal/hugemem"
)

// The writer's direct I/O (see Writer): where the file system takes
// O_DIRECT, a Writer's buffers go to the disk without the page cache. A
// buffered write(2) costs the kernel a copy into newly allocated page-cache
// pages, their delayed allocation and, later, their writeback; on the
// development machine that was more than half the CPU time of an import. A
// direct write pins the buffer's pages and hands them to the device.
//
// Direct I/O wants the file offset, the length and the buffer's address
// aligned to the device's logical block size. dioAlign, 4096, covers every
// common one (512 and 4096 bytes). A write that would end inside a block is
// cut at the block boundary; its last partial block either waits for the
// next buffer (which starts with it, so the block is written whole later)
// or, when Flush must make everything visible, is written through a second,
// buffered descriptor. The file therefore always ends with its last whole
// record, as with buffered writes.
const dioAlign = 4096

// ioBuffers are a Writer's two write buffers: aligned for direct I/O, in
// memory mapped outside the Go heap in huge pages (hugemem). A buffer
// inside one huge page is physically contiguous: a direct write pins one
// page and gives the device one segment instead of 256 per MiB, which made
// direct writes about three times cheaper again. release unmaps them.
type ioBuffers struct {
	region hugemem.Region
	bufs   [2][]byte // len 0, each of the same aligned capacity
}

// newIOBuffers maps two buffers of n bytes each (n a multiple of dioAlign),
// starting on a huge-page boundary.
func newIOBuffers(n int) (ioBuffers, error) {
	r, err := hugemem.Map(2 * n)
	if err != nil {
		return ioBuffers{}, fmt.Errorf("spool: write buffers: %w", err)
	}
	b := r.Mem
	return ioBuffers{region: r, bufs: [2][]byte{b[:0:n], b[n : n : 2*n]}}, nil
}

func (b *ioBuffers) release() error {
	if b.region.Mem == nil {
		return nil
	}
	err := b.region.Unmap()
	*b = ioBuffers{}
	if err != nil {
		return fmt.Errorf("spool: write buffers: %w", err)
	}
	return nil
}

func roundUp(n, align int) int { return (n + align - 1) &^ (align - 1) }

// aio runs a Writer's direct writes on a goroutine of their own, so that
// the Writer fills its other buffer while the device takes one: the
// producer waits for the disk only when it has filled a buffer before the
// previous write completed. One write is in flight at a time.
type aio struct {
	req  chan aioReq
	done chan error
}

type aioReq struct {
	f   *os.File
	b   []byte
	off int64
}

func startAIO() *aio {
	a := &aio{req: make(chan aioReq), done: make(chan error, 1)}
	go a.run()
	return a
}

func (a *aio) run() {
	for r := range a.req {
		_, err := r.f.WriteAt(r.b, r.off)
		a.done <- err
	}
}

// submit starts writing b at off in f. The caller must not touch b until
// wait has returned.
func (a *aio) submit(f *os.File, b []byte, off int64) {
	a.req <- aioReq{f: f, b: b, off: off}
	// With one P (GOMAXPROCS=1) the writing goroutine would not start
	// before this one blocks: yield so that it enters its write, after
	// which the scheduler gives the P back to this goroutine.
	runtime.Gosched()
}

// wait returns the result of the write in flight.
func (a *aio) wait() error { return <-a.done }

// poll returns the result of the write in flight if it has completed.
func (a *aio) poll() (done bool, err error) {
	select {
	case err = <-a.done:
		return true, err
	default:
		return false, nil
	}
}

// stop ends the goroutine; no write may be in flight.
func (a *aio) stop() { close(a.req) }
