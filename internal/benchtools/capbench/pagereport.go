//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A VM whose balloon driver reports free memory to its host (free page
// reporting, /sys/module/page_reporting) gives its free pages back: the host
// discards them, and the next write to such a page is a fault the host
// serves by finding and zeroing a page. On the development VM that costs
// about 13 µs a 4 KiB page (touching 20 GiB took 69 s), and every page a
// capturer's file takes in the page cache is such a page while the machine
// has free memory. Each run deletes its files, their pages are reported
// again within seconds, and so each run paid it anew, as much as 5-8x the
// write's own cost (512 MiB with dd, 1 MiB writes: 0.75-1.15 s of system
// time reported, 0.13-0.14 s held), varying from run to run with the
// host. A sensor whose page cache has filled its memory (the steady state
// of any sensor after its first hours) recycles page cache and never meets
// it. So capbench holds reporting off while it runs and touches the free
// memory once to have it backed again.

const pageReportingParams = "/sys/module/page_reporting/parameters"

// pageReporting reads one of page_reporting's module parameters.
func pageReporting(name string) (string, error) {
	b, err := os.ReadFile(pageReportingParams + "/" + name)
	return strings.TrimSpace(string(b)), err
}

// reportedKiB is how much memory the guest has reported to its host so far
// (a counter some kernels have), ok false without it.
func reportedKiB() (kib uint64, ok bool) {
	s, err := pageReporting("reported_kib")
	if err != nil {
		return 0, false
	}
	kib, err = strconv.ParseUint(s, 10, 64)
	return kib, err == nil
}

// holdPageReporting raises page_reporting_order as far as the kernel takes
// it, so that no free memory (or only 4 MiB blocks, where the kernel stops
// at MAX_PAGE_ORDER) is reported, restores it at cleanup, and then touches
// the free memory but a margin once, which brings back what was reported
// before. It returns what it did, for the table's header; a machine without
// page reporting is no error.
func holdPageReporting(c *cleanups) (string, error) {
	old, err := pageReporting("page_reporting_order")
	if errors.Is(err, fs.ErrNotExist) {
		return "the kernel reports no free memory to a host (no page_reporting)", nil
	}
	if err != nil {
		return "", fmt.Errorf("page reporting: %w", err)
	}
	oldOrder, err := strconv.Atoi(old)
	if err != nil {
		return "", fmt.Errorf("page reporting: page_reporting_order %q: %w", old, err)
	}
	path := pageReportingParams + "/page_reporting_order"
	// MAX_PAGE_ORDER is 10 on x86-64 and most configurations; some
	// kernels take one more and then report nothing at all.
	held := -1
	for order := 16; order > oldOrder; order-- {
		if os.WriteFile(path, []byte(strconv.Itoa(order)), 0) == nil {
			held = order
			break
		}
	}
	if held < 0 {
		return fmt.Sprintf("free page reporting left at order %d (the kernel takes no higher order)", oldOrder), nil
	}
	c.push("page_reporting_order", func() error { return os.WriteFile(path, []byte(old), 0) })
	n, took, err := touchFreeMemory(2 << 30)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("free page reporting held off (page_reporting_order %d, was %d; restored at exit) and %.1f GiB of free memory touched first (%.0f s)",
		held, oldOrder, float64(n)/(1<<30), took.Seconds()), nil
}

// touchFreeMemory writes to every page of MemFree less margin, 1 GiB at a
// time, and gives it back: the pages return to the kernel's free lists
// backed by the host again.
func touchFreeMemory(margin uint64) (uint64, time.Duration, error) {
	m, err := meminfo()
	if err != nil {
		return 0, 0, err
	}
	free := m["MemFree"]
	if free <= margin {
		return 0, 0, nil
	}
	start := time.Now()
	const chunk = 1 << 30
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			_ = unix.Munmap(m)
		}
	}()
	var n uint64
	for n+chunk <= free-margin {
		m, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return n, time.Since(start), fmt.Errorf("touch free memory: mmap: %w", err)
		}
		maps = append(maps, m)
		if err := unix.Madvise(m, unix.MADV_POPULATE_WRITE); err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				return n, time.Since(start), fmt.Errorf("touch free memory: populate: %w", err)
			}
			for i := 0; i < len(m); i += os.Getpagesize() { // before Linux 5.14
				m[i] = 1
			}
		}
		n += chunk
	}
	return n, time.Since(start), nil
}
