//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
)

// traffic is one trafgen packet configuration.
type traffic struct {
	name string // "64B", "IMIX"
	desc string
	// confs are the paths of the trafgen configurations by the CPU their
	// packets are sent from.
	confs map[int]string
	// avgLen is the mean frame length without FCS.
	avgLen float64
	// pcap, when set, is sent by tcpreplay instead of trafgen (confs is
	// then empty): a fixed sequence of packets.
	pcap string
}

// Frame lengths are without the 4-byte FCS, which the kernel never sees:
// a "64-byte packet" is a 60-byte frame here. IMIX is the classic simple
// IMIX by frame size on the wire, 64:7, 570:4, 1518:1, interleaved.
var imix = []int{60, 566, 60, 60, 566, 60, 1514, 60, 566, 60, 60, 566}

// trafficNames are the mixes writeTraffic writes.
var trafficNames = []string{"64B", "64B-1flow", "IMIX", "IMIX-1flow", "heavytail"}

// writeTraffic writes the trafgen configurations into dir. Every packet is
// IPv4/UDP from 10.0.0.x:4096+y (x, y random bytes: up to 65536 flows; in
// the -1flow mixes x and y are 7: one static flow, which trafgen need not
// rewrite per packet) to 10.0.1.1:5000, addressed to a MAC no interface
// has, so the kernel stack drops it early when it sees it at all. There is
// one configuration for cpu and one for CPU 0 (see rateCPU).
func writeTraffic(dir string, cpu int) ([]traffic, error) {
	var out []traffic
	for _, t := range []struct {
		name, desc string
		sizes      []int
		oneFlow    bool
	}{
		{"64B", "64-byte UDP frames (60 without FCS) of 65,536 random flows", []int{60}, false},
		{"64B-1flow", "64-byte UDP frames of one flow", []int{60}, true},
		{"IMIX", "IMIX 7:4:1 of 64, 570, 1518 bytes, 65,536 random flows", imix, false},
		{"IMIX-1flow", "IMIX of one flow", imix, true},
	} {
		tr := traffic{name: t.name, desc: t.desc, confs: map[int]string{}}
		for _, c := range []int{cpu, 0} {
			var b strings.Builder
			total := 0
			for _, size := range t.sizes {
				b.WriteString(udpFrameConf(size, c, t.oneFlow))
				total += size
			}
			path := filepath.Join(dir, fmt.Sprintf("trafgen-%s-cpu%d.cfg", t.name, c))
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				return nil, err
			}
			tr.confs[c] = path
			tr.avgLen = float64(total) / float64(len(t.sizes))
		}
		out = append(out, tr)
	}
	ht, err := writeHeavyTail(dir)
	if err != nil {
		return nil, err
	}
	return append(out, ht), nil
}

// writeHeavyTail writes one pass of trafficgen.HeavyTail as a pcap, which
// tcpreplay sends over and over with new addresses every pass
// (--unique-ip), so that every pass is new connections.
func writeHeavyTail(dir string) (traffic, error) {
	path := filepath.Join(dir, "heavytail.pcap")
	f, err := os.Create(path)
	if err != nil {
		return traffic{}, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	pw, err := pcapio.NewPcapWriter(bw, 65535)
	if err != nil {
		f.Close()
		return traffic{}, err
	}
	var n, total int
	ts := trafficgen.Start
	trafficgen.HeavyTail(func(frame []byte) {
		if err == nil {
			err = pw.WritePacket(ts, len(frame), frame, "")
		}
		ts += 1000
		n++
		total += len(frame)
	})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return traffic{}, fmt.Errorf("heavytail pcap: %w", err)
	}
	return traffic{name: "heavytail", pcap: path, avgLen: float64(total) / float64(n),
		desc: fmt.Sprintf("TCP connections of a heavy-tailed size mix (internal/trafficgen HeavyTail: %d connections, %d of them under 20 KB, %d frames, %.1f MB a pass), replayed by tcpreplay with new addresses every pass",
			trafficgen.HeavyTailConns, trafficgen.HeavyTailSmall, n, float64(total)/1e6)}, nil
}

// udpFrameConf is one trafgen packet of size bytes (at least 42). With
// oneFlow the packet is static (one flow, and trafgen need not rewrite it
// per packet).
func udpFrameConf(size, cpu int, oneFlow bool) string {
	rnd := "drnd(1)"
	if oneFlow {
		rnd = "7"
	}
	ipLen := size - 14
	udpLen := ipLen - 20
	payload := udpLen - 8
	return fmt.Sprintf(`cpu(%d): {
  0x02, 0x00, 0x5e, 0x00, 0x53, 0x01,  0x02, 0x00, 0x5e, 0x00, 0x53, 0x02,  c16(0x0800),
  0x45, 0x00, c16(%d), c16(0), c16(0x4000), 64, 17, csumip(14, 33),
  10, 0, 0, %[5]s,  10, 0, 1, 1,
  0x10, %[5]s, c16(5000), c16(%[3]d), c16(0),
  fill(0x41, %[4]d)
}
`, cpu, ipLen, udpLen, payload, rnd)
}

// genRun is one trafgen run and what the peer's counters said about it.
type genRun struct {
	sent, vethDropped uint64 // peer tx_packets and tx_dropped deltas
	wall              time.Duration
	// rate is packets per second the sender achieved in the steady part of
	// the run (from peer counters sampled after warm-up and at the end).
	rate float64
	// trafgenOut is trafgen's summary; generated is its count of packets
	// put out (0 when it printed none).
	trafgenOut string
	generated  uint64
	// cpu is trafgen's CPU time, its workers' and the kernel's work done
	// in its context (the veth's receive path runs there) included.
	cpu time.Duration
}

var trafgenCount = regexp.MustCompile(`(?m)^\s*(\d+) packets outgoing`)

// rateCPU is the CPU trafgen 0.6.8 sends from when its rate is limited:
// it then runs one worker and pins it to CPU 0, whatever else it is told.
const rateCPU = 0

// cpus returns the CPUs of the generator and the capturer for a run at
// rate: as configured at the generator's maximum; with a rate limit the
// generator on rateCPU and the capturer on the configured generator CPU
// if it would otherwise share rateCPU.
func (o *options) cpus(rate uint64) (gen, capture int) {
	if rate == 0 {
		return o.genCPU, o.capCPU
	}
	if o.capCPU == rateCPU {
		return rateCPU, o.genCPU
	}
	return rateCPU, o.capCPU
}

// generate runs trafgen in v's namespace on cpu at rate packets per second
// (0: as fast as it can) for d, then stops it with SIGINT. during, if not
// nil, runs once the warm-up is over, while traffic flows.
func generate(ctx context.Context, v *vethPair, t traffic, cpu int, rate uint64, d time.Duration, qdisc bool, c *cleanups, during func()) (genRun, error) {
	if rate > 0 && cpu != rateCPU {
		return genRun{}, fmt.Errorf("trafgen sends at a limited rate from CPU %d only", rateCPU)
	}
	args := []string{"netns", "exec", v.ns, "trafgen", "--dev", v.peer, "--conf", t.confs[cpu],
		"--cpus", strconv.Itoa(cpu + 1), "--no-sock-mem", "--notouch-irq"}
	if rate > 0 {
		args = append(args, "--rate", strconv.FormatUint(rate, 10)+"pps")
	}
	if qdisc {
		args = append(args, "--qdisc-path")
	}
	if t.pcap != "" {
		// Preloaded, as fast as it goes, forever, new addresses every
		// pass; tcpreplay sends through the qdisc like trafgen
		// --qdisc-path.
		args = []string{"netns", "exec", v.ns, "taskset", "-c", strconv.Itoa(cpu), "tcpreplay", "-i", v.peer,
			"-K", "--loop", "0", "--unique-ip", "--no-flow-stats", "-q"}
		if rate > 0 {
			args = append(args, "--pps", strconv.FormatUint(rate, 10))
		} else {
			args = append(args, "-t")
		}
		args = append(args, t.pcap)
	}
	var r genRun
	before, err := v.peerStats()
	if err != nil {
		return r, err
	}
	start := time.Now()
	ch, _, _, err := startChild("ip", args, c, syscall.SIGKILL, false)
	if err != nil {
		return r, err
	}
	warm := min(d/5, time.Second)
	var mid peerCounters
	var midAt time.Time
	select {
	case <-ch.done:
		return r, fmt.Errorf("trafgen exited early: %v: %s", ch.err, lastLines(ch.stderr.String()+ch.stdout.String(), 3))
	case <-time.After(warm):
	case <-ctx.Done():
	}
	if mid, err = v.peerStats(); err != nil {
		_ = ch.stop(syscall.SIGINT, 5*time.Second)
		return r, err
	}
	midAt = time.Now()
	if during != nil {
		during()
	}
	select {
	case <-ch.done:
		return r, fmt.Errorf("trafgen exited early: %v: %s", ch.err, lastLines(ch.stderr.String()+ch.stdout.String(), 3))
	case <-time.After(time.Until(start.Add(d))):
	case <-ctx.Done():
	}
	end, err := v.peerStats()
	endAt := time.Now()
	serr := ch.stop(syscall.SIGINT, 5*time.Second)
	r.wall = time.Since(start)
	r.trafgenOut = ch.stdout.String()
	if ps := ch.cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		return r, err
	}
	if serr != nil && t.pcap == "" {
		// trafgen ends with status 0 on SIGINT; anything else is a failure.
		// (tcpreplay's status after SIGINT says nothing: the peer's
		// counters are the measure.)
		return r, fmt.Errorf("trafgen: %v: %s", serr, lastLines(ch.stderr.String(), 3))
	}
	after, err := v.peerStats()
	if err != nil {
		return r, err
	}
	if m := trafgenCount.FindStringSubmatch(r.trafgenOut); m != nil {
		r.generated, _ = strconv.ParseUint(m[1], 10, 64)
	}
	r.sent = after.txPackets - before.txPackets
	r.vethDropped = after.txDropped - before.txDropped
	r.rate = float64(end.txPackets-mid.txPackets) / endAt.Sub(midAt).Seconds()
	return r, nil
}
