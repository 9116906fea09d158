package api

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Scheduling of query threads. Capture threads run at the process's nice
// value and I/O priority; a query thread is niced at least queryNice above
// them and put in the best-effort I/O class at its lowest level. The idle
// I/O class would protect capture even better, but a query could then wait
// forever on a disk that capture keeps busy, and an analyst's query must end.
const (
	queryNice        = 10
	maxNice          = 19
	ioprioWhoProcess = 1 // IOPRIO_WHO_PROCESS: with a thread id, that thread
	ioprioClassShift = 13
	ioprioClassBE    = 2
	ioprioLowestBE   = 7
	queryIOPrio      = ioprioClassBE<<ioprioClassShift | ioprioLowestBE
)

// lowerPriority lowers the CPU and I/O priority of the calling OS thread. The
// caller must hold the thread (runtime.LockOSThread) and let it die with the
// goroutine, so the lowered thread never returns to the runtime's pool.
//
// Threads the runtime creates while a locked thread runs are cloned from a
// clean template thread, not from the locked one, so the lowered priority is
// not inherited by threads that run other goroutines.
func lowerPriority() error {
	tid := unix.Gettid()
	// Linux's getpriority system call returns 20-nice, to avoid negative
	// return values.
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return fmt.Errorf("getpriority: %w", err)
	}
	nice := min(maxNice, max(queryNice, 20-raw+queryNice))
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
		return fmt.Errorf("setpriority %d: %w", nice, err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), queryIOPrio); errno != 0 {
		return fmt.Errorf("ioprio_set best-effort level %d: %w", ioprioLowestBE, errno)
	}
	return nil
}
