// Package testutil holds helpers for tests that need privileges, network
// namespaces or veth pairs, and spools set up the same way by tests of
// several packages (spool.go).
//
// Tests that need a capability skip when it is missing, except under CI
// (CI=true), where a missing capability is a failure: CI runs as root on a
// kernel with BPF and XDP, so a skip there would hide a broken test.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stenod/stenod/internal/ifacelock"
)

// InCI reports whether the tests run under CI, where nothing may be skipped
// for lack of a capability.
func InCI() bool { return os.Getenv("CI") != "" }

// SkipOrFail skips the test outside CI and fails it in CI.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("required in CI: %s", msg)
	}
	tb.Skip(msg)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "needs root")
	}
}

// RequireCommand skips (or fails in CI) unless name is on PATH, and returns its path.
func RequireCommand(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(tb, "needs %s on PATH", name)
	}
	return p
}

// Run runs a command and fails the test with its output if it fails.
func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var seq atomic.Uint32

// Veth is a veth pair: Host stays in the test's namespace, Peer lives in the
// network namespace NS. Both ends are up, with IPv6 DAD and router
// solicitations off so the kernel sends nothing of its own on them.
type Veth struct {
	Host, Peer string
	NS         string
}

// NewVeth creates a veth pair whose peer end sits in a new network namespace,
// and removes both when the test ends, whether it passed or not.
func NewVeth(tb testing.TB) *Veth {
	tb.Helper()
	RequireRoot(tb)
	RequireCommand(tb, "ip")
	n := seq.Add(1)
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, n)
	v := &Veth{Host: "stn" + id + "a", Peer: "stn" + id + "b", NS: "stenod-test-" + id}
	// The lock file a stenod started on Host leaves (internal/ifacelock
	// never removes one): registered first, so it goes after the test's
	// daemons have stopped.
	tb.Cleanup(func() { _ = os.Remove(filepath.Join(ifacelock.DefaultDir, v.Host+".lock")) })
	Run(tb, "ip", "netns", "add", v.NS)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", v.NS).Run() })
	Run(tb, "ip", "link", "add", v.Host, "type", "veth", "peer", "name", v.Peer)
	tb.Cleanup(func() { _ = exec.Command("ip", "link", "del", v.Host).Run() })
	Run(tb, "ip", "link", "set", v.Peer, "netns", v.NS)
	for _, sysctl := range []string{"accept_dad=0", "dad_transmits=0", "router_solicitations=0", "disable_ipv6=1"} {
		kv := strings.SplitN(sysctl, "=", 2)
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+v.Host+"/"+kv[0], []byte(kv[1]), 0o644)
		_ = exec.Command("ip", "netns", "exec", v.NS, "sysctl", "-qw", "net.ipv6.conf."+v.Peer+"."+sysctl).Run()
	}
	Run(tb, "ip", "link", "set", v.Host, "up")
	Run(tb, "ip", "netns", "exec", v.NS, "ip", "link", "set", v.Peer, "up")
	return v
}

// InNS runs a command inside the peer's namespace and returns its combined output.
func (v *Veth) InNS(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return Run(tb, "ip", append([]string{"netns", "exec", v.NS, name}, args...)...)
}

// SyncBuffer is a bytes.Buffer that a process or logger may write to from
// its own goroutine while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// EnvInt returns the integer in environment variable name, or def when it
// is unset; a value that is not a number fails the test.
func EnvInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatalf("%s=%q: %v", name, s, err)
	}
	return n
}

// WiresharkProblems runs tshark's expert analysis over the capture at path
// and returns what it reports at severity note or above (Errors, among
// them every "Malformed Packet", Warns and Notes), "" when it reports
// nothing. tshark must be installed (RequireCommand). Chats, such as a
// TCP connection's opening, are not problems.
func WiresharkProblems(tb testing.TB, path string) string {
	tb.Helper()
	tshark := RequireCommand(tb, "tshark")
	cmd := exec.Command(tshark, "-n", "-r", path, "-q", "-z", "expert,note")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("tshark -r %s -z expert: %v\n%s", path, err, stderr.String())
	}
	var problems []string
	for _, sec := range strings.Split(string(out), "\n\n") {
		s := strings.TrimSpace(sec)
		for _, head := range []string{"Errors (", "Warns (", "Notes ("} {
			if strings.HasPrefix(s, head) {
				problems = append(problems, s)
			}
		}
	}
	// A dissector that fails loudly says so on stderr.
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "Dissector bug") || strings.Contains(line, "Malformed") {
			problems = append(problems, line)
		}
	}
	return strings.Join(problems, "\n\n")
}
