//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machineStat is the machine's CPU time from the "cpu" line of /proc/stat:
// busy is every state but idle and iowait, steal the time the hypervisor
// ran something else while a CPU of ours wanted to run.
type machineStat struct {
	busy, steal time.Duration
}

func readMachine() (machineStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineStat{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return machineStat{}, errors.New("unexpected /proc/stat")
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return machineStat{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	// user nice system idle iowait irq softirq steal; guest time is
	// counted in user already.
	busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	tick := time.Second / clockTicks
	return machineStat{busy: time.Duration(busy) * tick, steal: time.Duration(v[7]) * tick}, nil
}

func (m machineStat) sub(b machineStat) machineStat {
	return machineStat{busy: m.busy - b.busy, steal: m.steal - b.steal}
}

// Contention: what shares the machine with the capturer during a run, as
// other jobs share a sensor's. "none", "cpu" (a CPU-bound process at nice 0
// pinned to the capturer's CPU) or "disk" (a process writing 256 MiB files
// to the disk under test and syncing them, over and over).
var contentions = []string{"none", "cpu", "disk"}

// contender is a running contention process.
type contender struct {
	ch *child
}

func startContention(kind string, e *env) (*contender, error) {
	var name string
	var args []string
	switch kind {
	case "none":
		return nil, nil
	case "cpu":
		name, args = e.taskset("sh", "-c", "while :; do :; done")
	case "disk":
		f := filepath.Join(e.dir, "contention")
		name, args = "sh", []string{"-c", fmt.Sprintf("while :; do dd if=/dev/zero of=%s bs=1M count=256 conv=fsync status=none; rm -f %[1]s; done", f)}
	default:
		return nil, fmt.Errorf("unknown contention %q", kind)
	}
	ch, _, _, err := startChild(name, args, e.cleanups, syscall.SIGKILL, false)
	if err != nil {
		return nil, err
	}
	return &contender{ch: ch}, nil
}

// cpu is the CPU time the contention's processes used so far, the shell's
// children included once they have ended.
func (c *contender) cpu() time.Duration {
	if c == nil {
		return 0
	}
	var total time.Duration
	for _, pid := range processGroup(c.ch.pid()) {
		if t, err := procCPUWithChildren(pid); err == nil {
			total += t
		}
	}
	return total
}

func (c *contender) stop() {
	if c != nil {
		_ = c.ch.stop(syscall.SIGKILL, 0)
	}
}

// processGroup lists the processes of process group pgid.
func processGroup(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// settle writes back what earlier runs left dirty in the page cache and
// waits (at most 30 s) until the kernel is done, so that one contender's
// writeback does not run during the next one's measurement: tcpdump's and
// stenod's files are written through the page cache, and writeback of a
// few hundred megabytes took seconds of CPU and disk on the development
// VM.
func settle() {
	syscall.Sync()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if dirty, err := dirtyBytes(); err != nil || dirty < 16<<20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
}

// dirtyBytes is Dirty plus Writeback from /proc/meminfo.
func dirtyBytes() (uint64, error) {
	m, err := meminfo()
	return m["Dirty"] + m["Writeback"], err
}

// meminfo returns /proc/meminfo's figures in bytes, by name.
func meminfo() (map[string]uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		kb, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/meminfo %s: %w", name, err)
		}
		m[name] = kb << 10
	}
	return m, sc.Err()
}

// spread is the median and range of a set of figures.
type spread struct {
	n                int
	median, min, max float64
}

func spreadOf(xs []float64) spread {
	xs = slices.DeleteFunc(slices.Clone(xs), func(x float64) bool { return math.IsNaN(x) || math.IsInf(x, 0) })
	if len(xs) == 0 {
		return spread{}
	}
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return spread{n: len(xs), median: m, min: xs[0], max: xs[len(xs)-1]}
}

// format writes the median with the range, each with verb f.
func (s spread) format(f string) string {
	if s.n == 0 {
		return "-"
	}
	if s.n == 1 {
		return fmt.Sprintf(f, s.median)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.median, s.min, s.max)
}

// cpuPerPacket is the capturing process's CPU per captured packet, µs.
func (r *result) cpuPerPacket() float64 {
	if r.err != nil || !r.hasCapture || r.cnt.captured == 0 {
		return math.NaN()
	}
	return r.cpu.Seconds() * 1e6 / float64(r.cnt.captured)
}

// machinePerPacket is the whole machine's busy CPU per packet sent, µs,
// less the contention's own, plus stenod's seal at stop (after the
// machine's window: the traffic and its drain).
func (r *result) machinePerPacket() float64 {
	if r.err != nil || r.gen.sent == 0 {
		return math.NaN()
	}
	return (r.machine.busy - r.contentionCPU + r.sealCPU).Seconds() * 1e6 / float64(r.gen.sent)
}

// printRounds prints the figures of every round side by side: per traffic
// and contention, for each capturer the median over the rounds and the
// range, of the capturer's CPU per packet and of the whole machine's above
// the bare generator's, each also as a ratio to tcpdump's in the same
// round (the pairs share the machine's state, so their ratio moves less
// than either).
func printRounds(o *options, keys []runKey, runs [][]*result) {
	fmt.Printf("\n%d alternating rounds (order reversed every other round), medians with the range in parentheses. Capturer: utime+stime of the capturing process over the traffic and its drain, plus for stenod the CPU time of sealing its file's index at stop (what a sensor pays at every rotation; stenod logs it) and for stenotype that of writing its file's index at stop, per captured packet. Machine: busy CPU of the whole machine from /proc/stat over the same time, less the contention process's, per packet sent, above the bare generator's (no capturer) in the same round (the bare row: its own, absolute); it includes the kernel's work on the sender's CPU (veth, XDP, AF_PACKET delivery) that no process is charged for.\n\n", o.repeat)
	fmt.Println("Other: the machine's busy CPU besides trafgen, the capturer and the contention, in % of one CPU: kernel threads (writeback, ksoftirqd) and whatever else ran; the machine figures are only as good as that is small.")
	fmt.Println()
	fmt.Println("| traffic | contention | capture | sender Mpps | lost (runs) | capturer µs/packet | / tcpdump | machine µs/packet | / tcpdump | other | steal |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	find := func(k runKey, cfg string) []*result { return findRuns(keys, runs, k, cfg) }
	for i, k := range keys {
		if k.rate != 0 {
			continue
		}
		rs := runs[i]
		td, bare := find(k, "tcpdump"), find(k, "bare")
		var rate, cpu, cpuRatio, mach, machRatio, steal, other []float64
		var lost int64
		lossy := 0
		for round, r := range rs {
			if r.err != nil {
				continue
			}
			rate = append(rate, r.gen.rate/1e6)
			steal = append(steal, 100*r.machine.steal.Seconds()/max(r.window.Seconds(), 1e-9)/float64(runtime.NumCPU()))
			other = append(other, 100*(r.machine.busy-r.gen.cpu-(r.cpu-r.sealCPU)-r.contentionCPU).Seconds()/max(r.window.Seconds(), 1e-9))
			if r.hasCapture {
				if l := r.lost(); l > 0 || !r.zeroLoss() {
					lost += max(l, 0)
					lossy++
				}
			}
			c := r.cpuPerPacket()
			cpu = append(cpu, c)
			m := math.NaN()
			switch {
			case k.cfg == "bare":
				m = r.machinePerPacket() // the baseline itself, absolute
			case round < len(bare) && bare[round].err == nil:
				m = (r.machinePerPacket() - bare[round].machinePerPacket()) * float64(r.gen.sent) / float64(max(r.cnt.captured, 1))
			}
			mach = append(mach, m)
			if round < len(td) && td[round].err == nil && k.cfg != "tcpdump" && k.cfg != "bare" {
				cpuRatio = append(cpuRatio, c/td[round].cpuPerPacket())
				if round < len(bare) && bare[round].err == nil {
					tm := (td[round].machinePerPacket() - bare[round].machinePerPacket()) * float64(td[round].gen.sent) / float64(max(td[round].cnt.captured, 1))
					machRatio = append(machRatio, m/tm)
				}
			}
		}
		lostCell := "0"
		if lossy > 0 {
			lostCell = fmt.Sprintf("%d (%d of %d)", lost, lossy, len(rs))
		}
		if !k.hasCapture() {
			lostCell = "-"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k.t.name, k.contention, k.cfg,
			spreadOf(rate).format("%.3f"), lostCell, spreadOf(cpu).format("%.3f"), spreadOf(cpuRatio).format("%.2fx"),
			spreadOf(mach).format("%.3f"), spreadOf(machRatio).format("%.2fx"), spreadOf(other).format("%.0f%%"), spreadOf(steal).format("%.1f%%"))
	}
}

// findRuns returns the rounds of configuration cfg with k's traffic,
// contention and rate, or nil.
func findRuns(keys []runKey, runs [][]*result, k runKey, cfg string) []*result {
	for i, k2 := range keys {
		if k2.t.name == k.t.name && k2.contention == k.contention && k2.cfg == cfg && k2.rate == k.rate {
			return runs[i]
		}
	}
	return nil
}

// pairRatio is one configuration against a reference run in the same
// rounds (a stenod build against its -base twin, a capturer against
// stenotype): the ratios within each round of the capturer's CPU per
// packet, of the live index's CPU per packet (when both log it), and of
// the sender's rate. Two capturers in one round share the machine's
// state, so a difference shows in their ratios long before it shows in
// the medians of either.
type pairRatio struct {
	key              runKey // the measured configuration's
	cpu, index, rate spread
}

// baseRatios pairs, when the run compared two builds (-stenod-base), each
// stenod configuration with its -base twin.
func baseRatios(keys []runKey, runs [][]*result) []pairRatio {
	return pairRatios(keys, runs, func(cfg string) string {
		if strings.HasPrefix(cfg, "stenod-") && !strings.HasSuffix(cfg, "-base") {
			return cfg + "-base"
		}
		return ""
	})
}

// stenotypeRatios pairs, when stenotype ran, every other capturer with it.
func stenotypeRatios(keys []runKey, runs [][]*result) []pairRatio {
	return pairRatios(keys, runs, func(cfg string) string {
		if cfg == "stenotype" || !(runKey{cfg: cfg}).hasCapture() {
			return ""
		}
		return "stenotype"
	})
}

// pairRatios pairs each configuration at the generator's maximum with the
// reference configuration refOf names ("" for none), where that ran too.
func pairRatios(keys []runKey, runs [][]*result, refOf func(cfg string) string) []pairRatio {
	var out []pairRatio
	for i, k := range keys {
		ref := refOf(k.cfg)
		if k.rate != 0 || ref == "" {
			continue
		}
		base, build := findRuns(keys, runs, k, ref), runs[i]
		var cpu, index, rate []float64
		for round := range min(len(base), len(build)) {
			b, n := base[round], build[round]
			if b.err != nil || n.err != nil {
				continue
			}
			cpu = append(cpu, n.cpuPerPacket()/b.cpuPerPacket())
			rate = append(rate, n.gen.rate/b.gen.rate)
			if b.indexCPU > 0 && n.indexCPU > 0 && b.cnt.captured > 0 && n.cnt.captured > 0 {
				index = append(index, (n.indexCPU.Seconds()/float64(n.cnt.captured))/(b.indexCPU.Seconds()/float64(b.cnt.captured)))
			}
		}
		if len(cpu) > 0 {
			r := pairRatio{key: k, cpu: spreadOf(cpu), rate: spreadOf(rate)}
			if len(index) > 0 {
				r.index = spreadOf(index)
			}
			out = append(out, r)
		}
	}
	return out
}

func printBaseRatios(keys []runKey, runs [][]*result) {
	printPairRatios(baseRatios(keys, runs), "The build against the -stenod-base build", "base")
}

// printStenotypeRatios: issue 14 asks for less CPU per packet than
// stenotype's, so each capturer against it round by round.
func printStenotypeRatios(keys []runKey, runs [][]*result) {
	printPairRatios(stenotypeRatios(keys, runs), "Against stenographer's stenotype", "stenotype")
}

// printPairRatios prints rs as a table, with the live index's column when
// both sides of some pair logged its CPU (two stenod builds).
func printPairRatios(rs []pairRatio, title, ref string) {
	if len(rs) == 0 {
		return
	}
	withIndex := slices.ContainsFunc(rs, func(r pairRatio) bool { return r.index.n > 0 })
	head := []string{"traffic", "contention", "capture", "capturer CPU per packet / " + ref}
	if withIndex {
		head = append(head, "live index CPU per packet / "+ref)
	}
	head = append(head, "sender rate / "+ref, "rounds")
	fmt.Println()
	fmt.Printf("%s, round by round (ratios within each round; median with the range):\n\n", title)
	fmt.Printf("| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	for _, r := range rs {
		cells := []string{r.key.t.name, r.key.contention, r.key.cfg, r.cpu.format("%.3fx")}
		if withIndex {
			index := "-"
			if r.index.n > 0 {
				index = r.index.format("%.3fx")
			}
			cells = append(cells, index)
		}
		cells = append(cells, r.rate.format("%.3fx"), strconv.Itoa(r.cpu.n))
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
}
