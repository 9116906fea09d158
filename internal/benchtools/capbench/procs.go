//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cleanups is a stack of things to undo, run last in first out, on a
// normal end, an error and a signal alike.
type cleanups struct {
	mu    sync.Mutex
	items []cleanupItem
}

type cleanupItem struct {
	name string
	f    func() error
}

func (c *cleanups) push(name string, f func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items = append(c.items, cleanupItem{name, f})
}

// run undoes everything pushed so far, newest first, logging failures.
func (c *cleanups) run() {
	c.mu.Lock()
	items := c.items
	c.items = nil
	c.mu.Unlock()
	for i := len(items) - 1; i >= 0; i-- {
		if err := items[i].f(); err != nil {
			log.Printf("cleanup %s: %v", items[i].name, err)
		}
	}
}

// child is a process the benchmark started. It runs in its own process
// group (so a signal reaches the helpers it forks, like trafgen's workers)
// and dies with the benchmark (Pdeathsig) should the benchmark be killed
// without a chance to clean up.
type child struct {
	name   string
	cmd    *exec.Cmd
	stderr syncBuffer
	stdout syncBuffer
	done   chan struct{}
	err    error // the Wait error, once done is closed
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startChild starts name args; with pipeStdio the caller handles stdin and
// stdout itself through the returned pipes.
func startChild(name string, args []string, c *cleanups, deathSig syscall.Signal, pipeStdio bool) (*child, io.WriteCloser, io.Reader, error) {
	ch := &child{name: name, cmd: exec.Command(name, args...), done: make(chan struct{})}
	ch.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	ch.cmd.Stderr = &ch.stderr
	var stdin io.WriteCloser
	var stdout io.Reader
	if pipeStdio {
		var err error
		if stdin, err = ch.cmd.StdinPipe(); err != nil {
			return nil, nil, nil, err
		}
		if stdout, err = ch.cmd.StdoutPipe(); err != nil {
			return nil, nil, nil, err
		}
	} else {
		ch.cmd.Stdout = &ch.stdout
	}
	if err := ch.cmd.Start(); err != nil {
		return nil, nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		ch.err = ch.cmd.Wait()
		close(ch.done)
	}()
	c.push(name+" process", func() error { ch.stop(syscall.SIGKILL, 0); return nil })
	return ch, stdin, stdout, nil
}

func (ch *child) pid() int { return ch.cmd.Process.Pid }

func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the child's process group, waits up to grace for it to
// end, then kills the group. It returns the Wait error.
func (ch *child) stop(sig syscall.Signal, grace time.Duration) error {
	if ch.exited() {
		return ch.err
	}
	_ = syscall.Kill(-ch.pid(), sig)
	select {
	case <-ch.done:
		return ch.err
	case <-time.After(grace):
	}
	_ = syscall.Kill(-ch.pid(), syscall.SIGKILL)
	<-ch.done
	return fmt.Errorf("%s did not end within %v after %v: killed", ch.name, grace, sig)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user and system CPU time the process pid has used,
// all its threads, living and gone, together.
func procCPU(pid int) (time.Duration, error) { return procTimes(pid, 2) }

// procCPUWithChildren is procCPU plus the CPU time of the children the
// process has waited for (cutime and cstime).
func procCPUWithChildren(pid int) (time.Duration, error) { return procTimes(pid, 4) }

// procTimes sums the first n of utime, stime, cutime and cstime (fields 14
// to 17 of /proc/PID/stat).
func procTimes(pid, n int) (time.Duration, error) {
	return statTimes("/proc/"+strconv.Itoa(pid)+"/stat", n)
}

// statTimes sums the first n of utime, stime, cutime and cstime of a
// process's or a thread's stat file.
func statTimes(path string, n int) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields count from the
	// closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 14 is f[11].
	if len(f) < 11+n {
		return 0, fmt.Errorf("%s: too few fields", path)
	}
	var sum uint64
	for _, s := range f[11 : 11+n] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTicks, nil
}

// waitLine reads r until a line containing want arrives or timeout passes.
func waitStderr(ch *child, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(ch.stderr.String(), want) {
			return nil
		}
		if ch.exited() {
			return fmt.Errorf("%s exited: %v: %s", ch.name, ch.err, lastLines(ch.stderr.String(), 3))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: no %q within %v: %s", ch.name, want, timeout, lastLines(ch.stderr.String(), 3))
}

// lastLines returns the last n non-empty lines of s, joined with " / ".
func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
