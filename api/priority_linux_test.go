package api

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func gettid() int { return unix.Gettid() }

// threadNice reads a thread's nice value from /proc: field 19 of stat,
// counted after the command name, which may hold spaces.
func threadNice(tid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: %q", tid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); nice is field 19.
	if len(f) < 17 {
		return 0, fmt.Errorf("stat of %d: %q", tid, s)
	}
	return strconv.Atoi(f[16])
}

func ioprioGet(tid int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func TestQueryThreadPriority(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	type seen struct {
		tid  int
		nice int
		prio int
		err  error
	}
	var mu sync.Mutex
	var got []seen
	s.testHookQueryThread = func() {
		// Read from another goroutine (and so very likely another thread)
		// what the kernel says about this one, while the query runs.
		tid := gettid()
		ch := make(chan seen)
		go func() {
			nice, err := threadNice(tid)
			sn := seen{tid: tid, nice: nice, err: err}
			if err == nil {
				sn.prio, sn.err = ioprioGet(tid)
			}
			ch <- sn
		}()
		sn := <-ch
		mu.Lock()
		got = append(got, sn)
		mu.Unlock()
	}
	base, err := threadNice(gettid())
	if err != nil {
		t.Fatal(err)
	}
	okBody(t)(postQuery(t, ts.Client(), ts.URL, "tcp", nil))
	okBody(t)(get(t, ts.Client(), ts.URL+"/v1/flows?q=tcp"))

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("query thread hook ran %d times", len(got))
	}
	wantNice := min(maxNice, max(queryNice, base+queryNice))
	for _, sn := range got {
		if sn.err != nil {
			t.Fatal(sn.err)
		}
		if sn.nice != wantNice || sn.prio != queryIOPrio {
			t.Errorf("query thread %d: nice %d, ioprio %#x; want %d, %#x", sn.tid, sn.nice, sn.prio, wantNice, queryIOPrio)
		}
		// The thread dies with its query rather than go back to the pool.
		waitFor(t, "the query thread to exit", func() bool {
			_, err := os.Stat("/proc/self/task/" + strconv.Itoa(sn.tid))
			return errors.Is(err, os.ErrNotExist)
		})
	}
	if n, err := threadNice(gettid()); err != nil || n != base {
		t.Errorf("the test's own thread has nice %d (%v), want %d", n, err, base)
	}
}
