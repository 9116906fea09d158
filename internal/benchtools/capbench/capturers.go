//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// counters are a capturer's cumulative figures.
type counters struct {
	// captured counts the packets the capturer took, and for stenod
	// with a cutoff those it decided not to store (cut): every packet
	// accounted for.
	captured uint64
	// cut and cutBytes: what stenod's cutoff did not store; stored: the
	// spool's bytes on disk (pcap and index).
	cut, cutBytes, stored uint64
	// drops are the capturer's or kernel's loss counters by name, only
	// those that count packets lost before they were captured.
	drops map[string]uint64
}

func (c counters) sub(b counters) counters {
	out := counters{captured: c.captured - b.captured, cut: c.cut - b.cut, cutBytes: c.cutBytes - b.cutBytes,
		stored: c.stored - b.stored, drops: map[string]uint64{}}
	for k, v := range c.drops {
		out.drops[k] = v - b.drops[k]
	}
	return out
}

// dropNote lists the non-zero drop counters, or "none".
func (c counters) dropNote() string {
	var s []string
	for k, v := range c.drops {
		if v != 0 {
			s = append(s, fmt.Sprintf("%s=%d", k, v))
		}
	}
	if len(s) == 0 {
		return "none"
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// capturer is one thing under measurement, started for one run.
type capturer struct {
	// pid is the capturing process, whose CPU time is measured; 0 when
	// there is none (the XDP drop baseline).
	pid int
	// counts reads the cumulative counters; nil when they are only known
	// at the end (tcpdump).
	counts func() (counters, error)
	// stop ends the capture and returns the final counters when counts is
	// nil.
	stop func() (counters, error)
	// url is stenod's API base URL.
	url string
	// closeLog, after stop, is the CPU time stenod's seal of its last
	// file took and the CPU time its writers spent in the live index
	// (from its log), and stenotype's index writing at its stop; nil for
	// the others.
	closeLog func() closeCPU
	// drain is how long a capturer without counts gets after the traffic
	// to write what it holds; 0 means a second.
	drain time.Duration
}

// env is what every run shares.
type env struct {
	v       *vethPair
	dir     string // work directory on the disk under test
	stenod  string // stenod binary
	capCPU  int
	pinRoot string
	tcpdump string
	// stenotype: stenographer's capture program, "" when there is none.
	stenotype string
	cleanups  *cleanups
	// stenodHasUser: stenod run knows --user (drop privileges after
	// start-up), which the benchmark sets to "" to stay root.
	stenodHasUser bool
}

// taskset prefixes a command with taskset pinning it to the capture CPU.
func (e *env) taskset(name string, args ...string) (string, []string) {
	if e.capCPU < 0 {
		return name, args
	}
	return "taskset", append([]string{"-c", strconv.Itoa(e.capCPU), name}, args...)
}

func startDropBaseline(e *env) (*capturer, error) {
	var local cleanups
	if err := attachDrop(e.v.host, &local); err != nil {
		return nil, err
	}
	return &capturer{stop: func() (counters, error) { local.run(); return counters{}, nil }}, nil
}

func startXSKCount(e *env, coalesce time.Duration) (*capturer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	name, args := e.taskset(self, "xskcount", "--iface", e.v.host, "--coalesce", coalesce.String())
	ch, stdin, stdout, err := startChild(name, args, e.cleanups, syscall.SIGKILL, true)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(stdout)
	line, err := readLineTimeout(r, 10*time.Second)
	if err != nil || line != "ready" {
		_ = ch.stop(syscall.SIGKILL, 0)
		return nil, fmt.Errorf("xskcount: %q %v: %s", line, err, lastLines(ch.stderr.String(), 3))
	}
	counts := func() (counters, error) {
		if _, err := io.WriteString(stdin, "\n"); err != nil {
			return counters{}, err
		}
		line, err := readLineTimeout(r, 5*time.Second)
		if err != nil {
			return counters{}, err
		}
		var x xskCounters
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			return counters{}, fmt.Errorf("xskcount: %q: %w", line, err)
		}
		return counters{captured: x.Packets, drops: map[string]uint64{
			"rx_dropped": x.RxDropped, "rx_ring_full": x.RxRingFull,
			"rx_fill_ring_empty_descs": x.RxFillRingEmptyDescs, "rx_invalid_descs": x.RxInvalidDescs,
		}}, nil
	}
	return &capturer{pid: ch.pid(), counts: counts, stop: func() (counters, error) {
		stdin.Close()
		return counters{}, ch.stop(syscall.SIGTERM, 10*time.Second)
	}}, nil
}

func readLineTimeout(r *bufio.Reader, d time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case x := <-ch:
		return x.s, x.err
	case <-time.After(d):
		return "", errors.New("timed out")
	}
}

var tcpdumpSummary = regexp.MustCompile(`(?m)^(\d+) packets? (captured|received by filter|dropped by kernel)`)

func startTcpdump(e *env, extra []string) (*capturer, error) {
	if e.tcpdump == "" {
		return nil, errors.New("tcpdump not installed")
	}
	file := filepath.Join(e.dir, "tcpdump.pcap")
	name, args := e.taskset(e.tcpdump, append([]string{"-i", e.v.host, "-w", file, "-Z", "root"}, extra...)...)
	ch, err := startReady(e, name, args, syscall.SIGKILL, "listening on", 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &capturer{pid: ch.pid(), stop: func() (counters, error) {
		defer os.Remove(file)
		err := ch.stop(syscall.SIGINT, 30*time.Second)
		out := ch.stderr.String()
		c := counters{drops: map[string]uint64{}}
		found := 0
		for _, m := range tcpdumpSummary.FindAllStringSubmatch(out, -1) {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			switch m[2] {
			case "captured":
				c.captured = n
				found++
			case "dropped by kernel":
				c.drops["dropped_by_kernel"] = n
				found++
			}
		}
		if found < 2 {
			return c, fmt.Errorf("tcpdump: no summary (%v): %s", err, lastLines(out, 3))
		}
		return c, nil
	}}, nil
}

// startReady starts a capturer's process, which dies with deathSig should
// the benchmark die, and waits until its stderr says ready.
func startReady(e *env, name string, args []string, deathSig syscall.Signal, ready string, timeout time.Duration) (*child, error) {
	ch, _, _, err := startChild(name, args, e.cleanups, deathSig, false)
	if err != nil {
		return nil, err
	}
	if err := waitStderr(ch, ready, timeout); err != nil {
		_ = ch.stop(syscall.SIGKILL, 0)
		return nil, err
	}
	return ch, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startStenod(e *env, method string, extra ...string) (*capturer, error) {
	if e.stenod == "" {
		return nil, errors.New("no stenod binary")
	}
	spoolDir, err := os.MkdirTemp(e.dir, "spool-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"run", "--iface", e.v.host, "--spool", spoolDir, "--capture", method,
		"--pin-root", e.pinRoot, "--listen", fmt.Sprintf("127.0.0.1:%d", port)}
	if e.capCPU >= 0 {
		args = append(args, "--cpus", strconv.Itoa(e.capCPU))
	}
	if e.stenodHasUser {
		// Stay root: the spool lives in our temporary directory.
		args = append(args, "--user", "")
	}
	args = append(args, extra...)
	name, args := e.taskset(e.stenod, args...)
	// SIGTERM on our death: stenod then detaches and unpins by itself.
	ch, _, _, err := startChild(name, args, e.cleanups, syscall.SIGTERM, false)
	if err != nil {
		os.RemoveAll(spoolDir)
		return nil, err
	}
	e.cleanups.push("spool "+spoolDir, func() error { return os.RemoveAll(spoolDir) })
	stop := func() (counters, error) {
		err := ch.stop(syscall.SIGTERM, 60*time.Second)
		if err != nil {
			err = fmt.Errorf("stenod: %w: %s", err, lastLines(ch.stderr.String(), 3))
		}
		return counters{}, errors.Join(err, os.RemoveAll(spoolDir))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if ch.exited() || time.Now().After(deadline) {
			msg := lastLines(ch.stderr.String(), 2)
			_, _ = stop()
			return nil, fmt.Errorf("stenod run --capture %s did not come up: %s", method, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &capturer{pid: ch.pid(), url: url, stop: stop, counts: func() (counters, error) { return stenodCounts(url) },
		closeLog: func() closeCPU { return closeCPUOf(ch.stderr.String()) }}, nil
}

// dropName picks the counters that count packets lost before capture,
// whatever the capture method calls them.
var dropName = regexp.MustCompile(`drop|full|empty|freeze|redirect_failed|write_errors`)

// notLoss are counters matching dropName that count no lost packet.
var notLoss = map[string]bool{"ringbuf_full": true, "dropped_rule": true}

// stenodCounts reads /v1/stats: the sum of every queue's packets, and of
// every drop counter in the queues, their sub-objects (socket, ring) and
// the interfaces' sub-objects (program).
func stenodCounts(url string) (counters, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return counters{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Spool struct {
			Bytes uint64 `json:"bytes"`
		} `json:"spool"`
		Capture struct {
			Interfaces []map[string]any `json:"interfaces"`
		} `json:"capture"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return counters{}, fmt.Errorf("/v1/stats: %w", err)
	}
	c := counters{drops: map[string]uint64{}, stored: st.Spool.Bytes}
	addDrops := func(prefix string, m map[string]any) {
		for k, v := range m {
			if f, ok := v.(float64); ok && dropName.MatchString(k) && !notLoss[k] {
				c.drops[prefix+k] += uint64(f)
			}
		}
	}
	for _, ifc := range st.Capture.Interfaces {
		c.cut += findCount(ifc, "cut_packets")
		c.cutBytes += findCount(ifc, "cut_bytes")
		for k, v := range ifc {
			if m, ok := v.(map[string]any); ok {
				addDrops(k+".", m)
			}
		}
		qs, _ := ifc["queues"].([]any)
		for _, q := range qs {
			qm, ok := q.(map[string]any)
			if !ok {
				continue
			}
			if p, ok := qm["packets"].(float64); ok {
				c.captured += uint64(p)
			}
			addDrops("", qm)
			for k, v := range qm {
				if m, ok := v.(map[string]any); ok {
					addDrops(k+".", m)
				}
			}
		}
	}
	c.captured += c.cut
	return c, nil
}

// findCount returns the first number under key in m or the maps within it
// (the interface's program counters), 0 if there is none.
func findCount(m map[string]any, key string) uint64 {
	if f, ok := m[key].(float64); ok {
		return uint64(f)
	}
	for _, v := range m {
		if sub, ok := v.(map[string]any); ok {
			if n := findCount(sub, key); n > 0 {
				return n
			}
		}
	}
	return 0
}

// closeCPU is what stenod logs of its CPU time as its spool closes.
type closeCPU struct {
	seal, index time.Duration // sealing indexes; adding packets to live ones
}

// closeLine finds stenod's "spool closed" log lines, closeField the CPU
// times on one.
var (
	closeLine  = regexp.MustCompile(`msg="spool closed" .*`)
	closeField = regexp.MustCompile(` (seal_cpu|index_cpu)=(\S+)`)
)

// closeCPUOf reads the CPU times of stenod's last "spool closed" log
// line; zero for what it did not log.
func closeCPUOf(stderr string) closeCPU {
	var c closeCPU
	lines := closeLine.FindAllString(stderr, -1)
	if len(lines) == 0 {
		return c
	}
	for _, m := range closeField.FindAllStringSubmatch(lines[len(lines)-1], -1) {
		d, _ := time.ParseDuration(m[2])
		if m[1] == "seal_cpu" {
			c.seal = d
		} else {
			c.index = d
		}
	}
	return c
}
