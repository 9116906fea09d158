//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// vethPair is a veth pair: host stays in this namespace (the capture
// side), peer sits in the network namespace ns (the generator's side).
type vethPair struct {
	host, peer, ns string
}

// run runs a command and returns an error with its output when it fails.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// newVeth creates the pair and its namespace, both ends up, with IPv6
// off so the kernel sends nothing of its own on them. cleanup is pushed as
// soon as there is something to remove, so an error halfway leaves nothing.
func newVeth(id string, c *cleanups) (*vethPair, error) {
	v := &vethPair{host: "cb" + id + "a", peer: "cb" + id + "b", ns: "stenod-capbench-" + id}
	if _, err := runCmd("ip", "netns", "add", v.ns); err != nil {
		return nil, err
	}
	c.push("netns "+v.ns, func() error { _, err := runCmd("ip", "netns", "del", v.ns); return err })
	if _, err := runCmd("ip", "link", "add", v.host, "type", "veth", "peer", "name", v.peer); err != nil {
		return nil, err
	}
	c.push("veth "+v.host, func() error {
		if _, err := net.InterfaceByName(v.host); err != nil {
			return nil // gone with the namespace
		}
		_, err := runCmd("ip", "link", "del", v.host)
		return err
	})
	if _, err := runCmd("ip", "link", "set", v.peer, "netns", v.ns); err != nil {
		return nil, err
	}
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+v.host+"/disable_ipv6", []byte("1"), 0o644)
	_, _ = runCmd("ip", "netns", "exec", v.ns, "sysctl", "-qw", "net.ipv6.conf."+v.peer+".disable_ipv6=1")
	if _, err := runCmd("ip", "link", "set", v.host, "up"); err != nil {
		return nil, err
	}
	if _, err := runCmd("ip", "netns", "exec", v.ns, "ip", "link", "set", v.peer, "up"); err != nil {
		return nil, err
	}
	return v, nil
}

// peerCounters are the generator side's transmit counters.
type peerCounters struct {
	txPackets, txDropped uint64
}

// peerStats reads the peer's transmit counters from inside its namespace.
func (v *vethPair) peerStats() (peerCounters, error) {
	dir := "/sys/class/net/" + v.peer + "/statistics/"
	out, err := runCmd("ip", "netns", "exec", v.ns, "cat", dir+"tx_packets", dir+"tx_dropped")
	if err != nil {
		return peerCounters{}, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return peerCounters{}, fmt.Errorf("peer counters: unexpected %q", out)
	}
	var pc peerCounters
	if pc.txPackets, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return pc, err
	}
	pc.txDropped, err = strconv.ParseUint(f[1], 10, 64)
	return pc, err
}

// rawSocketInNS opens an AF_PACKET socket bound to iface inside the named
// network namespace and returns its descriptor. The socket stays in that
// namespace after the thread returns to ours.
func rawSocketInNS(ns, iface string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err, restored := rawSocketLocked(ns, iface)
		if restored {
			runtime.UnlockOSThread()
		} // else the thread stays locked and exits with the goroutine
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func rawSocketLocked(ns, iface string) (fd int, err error, restored bool) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, err, true
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return -1, err, true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("setns %s: %w", ns, err), true
	}
	defer func() {
		restored = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil
		if !restored && err == nil {
			err = fmt.Errorf("setns back from %s failed", ns)
		}
	}()
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, err, false
	}
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err), false
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", iface, err), false
	}
	return fd, nil, false
}
