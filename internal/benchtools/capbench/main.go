//go:build linux

// Command capbench measures live capture on a veth pair and prints a
// Markdown table: for 64-byte and IMIX traffic from trafgen, pinned to one
// CPU in a network namespace, the sender's rate, packets sent, captured and
// lost, the drop counters and the CPU time per captured packet of the
// capturing process, for baselines and stenod side by side in the same run:
//
//   - xdp-drop: an XDP program that drops every frame (no capturer): how
//     fast the sender and the kernel can go at all;
//   - xsk-count: a minimal program redirecting into one copy-mode AF_XDP
//     socket per queue and a consumer that only counts (capbench xskcount);
//   - xsk-coalesce: the same, the consumer sleeping 1 ms once it has drained
//     its ring, as stenod's receive loop does (capbench xskcount --coalesce);
//   - tcpdump: tcpdump -i IF -w FILE (TPACKET_V3, to disk), no XDP;
//   - stenotype: stenographer's capture program (stenotype.go), its index
//     written at its stop counted as stenod's seal is;
//   - stenod-xdp, stenod-afpacket: stenod run --capture xdp|afpacket,
//     indexing and writing to the spool; stenod-xdp-base and
//     stenod-afpacket-base the same with the -stenod-base binary, to
//     measure a change against the build before it in the same rounds
//     (a last table pairs the two builds within each round);
//   - stenod-afpacket-ipfix: stenod-afpacket with IPFIX export (idle
//     timeout 1s) to a UDP sink in capbench that discards what it gets:
//     the export's CPU cost on the capture CPU; stenod-afpacket-ipfix-defaults
//     the same with the default timeouts (active 60 s: run longer than that);
//   - stenod-xdp-cutoff, stenod-afpacket-cutoff: with --cutoff 20KB, for the
//     heavytail traffic (tcpreplay of internal/trafficgen's HeavyTail mix):
//     disk and CPU per offered packet against the same without the cutoff.
//
// Then, with stenod capturing under load: the freshness of the index (send
// a packet with a unique port, poll the query until it answers) and loss
// with and without a broad query streaming.
//
// Every capturer runs as its own process pinned to -cap-cpu; its CPU time
// is utime+stime from /proc/PID/stat over the traffic and its drain, plus,
// for stenod, the CPU time of the index seal at its stop (which a sensor
// pays at every rotation, and a run is too short to reach), from its log.
// In a VM that reports its free memory to the host, that reporting is held
// off while capbench runs (-page-reporting, pagereport.go): otherwise every
// run paid the host's page faults on its new page cache. Everything created
// (namespace, veth, pins, spools, processes) is removed at the end, on
// errors and on SIGINT/SIGTERM, and the reporting set back. Needs root,
// trafgen, ip and taskset.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration    time.Duration
	rates       []uint64
	configs     []string
	traffic     []string
	genCPU      int
	capCPU      int
	qdisc       bool
	dir         string
	stenod      string
	stenodBase  string
	stenotype   string
	probes      int
	freshLoad   uint64
	queryLoad   uint64
	liveMethod  string
	repeat      int
	contention  []string
	tcpdumpArgs []string
	// pageReporting: "hold" or "leave" the VM's free page reporting
	// (pagereport.go); pageNote says what was done, for the table.
	pageReporting string
	pageNote      string
}

var allConfigs = []string{"bare", "xdp-drop", "xsk-count", "xsk-coalesce", "tcpdump", "stenotype", "stenod-xdp", "stenod-afpacket", "stenod-xdp-base", "stenod-afpacket-base", "stenod-afpacket-ipfix", "stenod-afpacket-ipfix-defaults", "stenod-xdp-cutoff", "stenod-afpacket-cutoff"}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "xskcount" {
		if err := xskCount(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "xskcount:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var rates, configs, traffics, tcpdumpArgs, contention string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "traffic `time` per run (the issue's soak: 60s)")
	flag.StringVar(&rates, "rates", "", "comma-separated `pps` rates to run besides the generator's maximum, for the zero-loss rate (e.g. 300000,600000,900000)")
	flag.StringVar(&configs, "configs", strings.Join(allConfigs, ",")+",freshness,query", "`configurations` to run, comma separated, plus freshness and query (the live stenod benchmarks)")
	flag.StringVar(&traffics, "traffic", "64B-1flow,64B,IMIX", "`traffic` mixes: 64B and IMIX from 65,536 random flows, 64B-1flow and IMIX-1flow from one, heavytail (tcpreplay) for the cutoff")
	flag.IntVar(&o.genCPU, "gen-cpu", 1, "`CPU` trafgen sends from (and where veth's receive path runs)")
	flag.IntVar(&o.capCPU, "cap-cpu", 0, "`CPU` every capturer is pinned to (-1: not pinned)")
	flag.BoolVar(&o.qdisc, "qdisc-path", true, "trafgen sends through the qdisc (--qdisc-path): a full veth ring then slows the sender instead of dropping")
	flag.StringVar(&o.dir, "dir", "/var/tmp", "`directory` on the disk under test, for spools and tcpdump's file (a temporary directory is made in it)")
	flag.StringVar(&o.stenod, "stenod", "", "stenod `binary` (default: go build ./cmd/stenod into the work directory)")
	flag.StringVar(&o.stenodBase, "stenod-base", "", "a second stenod `binary`, for configurations stenod-xdp-base and stenod-afpacket-base: a change against the build before it, round by round")
	flag.StringVar(&o.stenotype, "stenotype", "", "stenographer's stenotype `binary`, for configuration stenotype (default: stenotype on PATH; scripts/build-stenotype.sh builds it)")
	flag.IntVar(&o.probes, "probes", 100, "freshness probes")
	flag.Uint64Var(&o.freshLoad, "fresh-load", 0, "background `pps` during the freshness probes (0: half of stenod-xdp's 64B sender rate, else 100000)")
	flag.Uint64Var(&o.queryLoad, "query-load", 0, "`pps` during the broad-query benchmark (0: stenod-xdp's 64B zero-loss rate, else 100000)")
	flag.StringVar(&o.liveMethod, "live-method", "xdp", "capture `method` for the freshness and query benchmarks")
	flag.IntVar(&o.repeat, "repeat", 5, "`rounds`: every measurement runs once per round, the contenders taking turns (reversed every other round)")
	flag.StringVar(&contention, "contention", "none", "what shares the machine during the runs, comma separated: none, cpu (a busy process at nice 0 on the capturer's CPU), disk (a process writing and syncing files on -dir's disk)")
	flag.StringVar(&o.pageReporting, "page-reporting", "hold", "`what` to do with the VM's free page reporting to its host during the runs: hold (keep it off and touch the free memory once, so that page cache writes do not meet pages the host took back) or leave")
	flag.StringVar(&tcpdumpArgs, "tcpdump-args", "", "extra tcpdump `arguments`, space separated (e.g. \"-B 65536\")")
	flag.Parse()
	log.SetFlags(0)
	for _, s := range splitList(rates) {
		r, err := strconv.ParseUint(s, 10, 64)
		if err != nil || r == 0 {
			log.Fatalf("capbench: -rates: %q is not a positive rate", s)
		}
		o.rates = append(o.rates, r)
	}
	o.configs = splitList(configs)
	o.traffic = splitList(traffics)
	o.tcpdumpArgs = strings.Fields(tcpdumpArgs)
	o.contention = splitList(contention)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cleanups
	err := run(ctx, &o, &c)
	c.run()
	if err != nil {
		log.Printf("capbench: %v", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// result is one measured run.
type result struct {
	config, traffic string
	rate            uint64 // offered; 0: the generator's maximum
	contention      string
	gen             genRun
	cnt             counters
	cpu             time.Duration // the capturer's, over the traffic and its drain, and (measure) stenod's seal at stop
	sealCPU         time.Duration // that seal's
	indexCPU        time.Duration // stenod's writers' in its live index, part of cpu
	machine         machineStat   // the whole machine over the same time as cpu
	window          time.Duration // that time
	contentionCPU   time.Duration // the contention's processes', over that time
	reportedKiB     uint64        // free memory the guest reported to its host during the run (pagereport.go)
	hasCapture      bool          // false for bare and xdp-drop
	runs            string        // with -repeat: the sender rates of every run
	err             error
	contender       *contender // running during the measurement; nil for none
}

func (r *result) lost() int64 { return int64(r.gen.sent) - int64(r.cnt.captured) }

// zeroLoss: nothing missing and no drop counter moved.
func (r *result) zeroLoss() bool {
	return r.err == nil && r.hasCapture && r.lost() <= 0 && r.cnt.dropNote() == "none" && r.gen.vethDropped == 0
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o *options, c *cleanups) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	for _, cmd := range []string{"ip", "trafgen", "taskset", "tcpreplay"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return fmt.Errorf("needs %s on PATH", cmd)
		}
	}
	if o.genCPU == o.capCPU {
		return errors.New("-gen-cpu and -cap-cpu must differ")
	}
	if n := runtime.NumCPU(); o.genCPU < 0 || o.genCPU >= n || o.capCPU >= n {
		return fmt.Errorf("-gen-cpu %d, -cap-cpu %d: this machine has CPUs 0 to %d", o.genCPU, o.capCPU, n-1)
	}
	for _, c := range o.configs {
		if !slices.Contains(allConfigs, c) && c != "freshness" && c != "query" {
			return fmt.Errorf("-configs: unknown %q (want %s, freshness, query)", c, strings.Join(allConfigs, ", "))
		}
	}
	for _, t := range o.traffic {
		if !slices.Contains(trafficNames, t) {
			return fmt.Errorf("-traffic: unknown %q (want %s)", t, strings.Join(trafficNames, ", "))
		}
	}
	for _, c := range o.contention {
		if !slices.Contains(contentions, c) {
			return fmt.Errorf("-contention: unknown %q (want %s)", c, strings.Join(contentions, ", "))
		}
	}
	if o.repeat < 1 {
		return errors.New("-repeat must be at least 1")
	}
	switch o.pageReporting {
	case "hold":
		progress("holding free page reporting off; touching free memory")
		note, err := holdPageReporting(c)
		if err != nil {
			return err
		}
		o.pageNote = note
	case "leave":
		o.pageNote = "free page reporting left as it was"
	default:
		return fmt.Errorf("-page-reporting: %q is neither hold nor leave", o.pageReporting)
	}
	progress("%s", o.pageNote)
	dir, err := os.MkdirTemp(o.dir, "capbench-")
	if err != nil {
		return err
	}
	c.push("work directory", func() error { return os.RemoveAll(dir) })
	pinRoot, err := os.MkdirTemp("/sys/fs/bpf", "capbench-")
	if err != nil {
		return fmt.Errorf("pin root on bpffs: %w", err)
	}
	c.push("pin root", func() error { return os.RemoveAll(pinRoot) })

	e := &env{dir: dir, capCPU: o.capCPU, pinRoot: pinRoot, cleanups: c}
	e.tcpdump, _ = exec.LookPath("tcpdump")
	if e.stenotype = o.stenotype; e.stenotype == "" {
		e.stenotype, _ = exec.LookPath("stenotype")
	}
	stenodErr := error(nil)
	if e.stenod = o.stenod; e.stenod == "" {
		e.stenod = filepath.Join(dir, "stenod")
		progress("building stenod")
		if out, err := exec.Command("go", "build", "-o", e.stenod, "./cmd/stenod").CombinedOutput(); err != nil {
			stenodErr = fmt.Errorf("go build ./cmd/stenod: %v: %s", err, lastLines(string(out), 2))
			e.stenod = ""
			progress("%v", stenodErr)
		}
	}

	if e.stenod != "" {
		out, _ := exec.Command(e.stenod, "run", "-h").CombinedOutput()
		e.stenodHasUser = strings.Contains(string(out), "-user")
	}

	id := strconv.Itoa(os.Getpid() % 100000)
	e.v, err = newVeth(id, c)
	if err != nil {
		return err
	}
	progress("veth %s <-> %s in netns %s; trafgen on CPU %d, capture on CPU %d", e.v.host, e.v.peer, e.v.ns, o.genCPU, o.capCPU)
	mixes, err := writeTraffic(dir, o.genCPU)
	if err != nil {
		return err
	}
	mixes = slices.DeleteFunc(mixes, func(t traffic) bool { return !slices.Contains(o.traffic, t.name) })

	// The IPFIX collector of stenod-afpacket-ipfix: reads and discards,
	// so that the export runs as against a real collector.
	sink, err := udpSink(c)
	if err != nil {
		return err
	}

	// The cutoff of the -cutoff configurations: Time Machine's figure, and
	// the size the heavytail mix is made around.
	const cutoff = "20KB"

	// Each starter runs the capturer on the capture CPU of the run's rate.
	at := func(rate uint64) *env {
		e2 := *e
		_, e2.capCPU = o.cpus(rate)
		return &e2
	}
	starters := map[string]func(uint64) (*capturer, error){
		"bare": func(uint64) (*capturer, error) {
			return &capturer{stop: func() (counters, error) { return counters{}, nil }}, nil
		},
		"xdp-drop":        func(r uint64) (*capturer, error) { return startDropBaseline(at(r)) },
		"xsk-count":       func(r uint64) (*capturer, error) { return startXSKCount(at(r), 0) },
		"xsk-coalesce":    func(r uint64) (*capturer, error) { return startXSKCount(at(r), time.Millisecond) },
		"tcpdump":         func(r uint64) (*capturer, error) { return startTcpdump(at(r), o.tcpdumpArgs) },
		"stenotype":       func(r uint64) (*capturer, error) { return startStenotype(at(r)) },
		"stenod-xdp":      func(r uint64) (*capturer, error) { return startStenod(at(r), "xdp") },
		"stenod-afpacket": func(r uint64) (*capturer, error) { return startStenod(at(r), "afpacket") },
		"stenod-xdp-base": func(r uint64) (*capturer, error) {
			e2 := at(r)
			e2.stenod = o.stenodBase
			return startStenod(e2, "xdp")
		},
		"stenod-afpacket-base": func(r uint64) (*capturer, error) {
			e2 := at(r)
			e2.stenod = o.stenodBase
			return startStenod(e2, "afpacket")
		},
		"stenod-afpacket-ipfix": func(r uint64) (*capturer, error) {
			return startStenod(at(r), "afpacket", "--ipfix", "udp://"+sink, "--ipfix-idle", "1s")
		},
		// The export as configured by default (active 60 s, idle 15 s):
		// with runs longer than the active timeout, the records a sensor
		// sends for long flows.
		"stenod-afpacket-ipfix-defaults": func(r uint64) (*capturer, error) {
			return startStenod(at(r), "afpacket", "--ipfix", "udp://"+sink)
		},
		"stenod-xdp-cutoff":      func(r uint64) (*capturer, error) { return startStenod(at(r), "xdp", "--cutoff", cutoff) },
		"stenod-afpacket-cutoff": func(r uint64) (*capturer, error) { return startStenod(at(r), "afpacket", "--cutoff", cutoff) },
	}
	// The measurements take turns, in reverse order every other round,
	// so that the machine's drift (15-20% an hour on the development VM)
	// falls on every configuration alike.
	var keys []runKey
	for _, cont := range o.contention {
		for _, t := range mixes {
			for _, cfg := range allConfigs {
				if !slices.Contains(o.configs, cfg) {
					continue
				}
				for _, rate := range append([]uint64{0}, o.rates...) {
					if (cfg == "xdp-drop" || cfg == "bare") && rate != 0 {
						continue // the sweep is about loss; these have none to find
					}
					keys = append(keys, runKey{t, cfg, rate, cont})
				}
			}
		}
	}
	runs := make([][]*result, len(keys))
	for round := range max(o.repeat, 1) {
		for j := range keys {
			i := j
			if round%2 == 1 {
				i = len(keys) - 1 - j
			}
			k := keys[i]
			if ctx.Err() != nil {
				break
			}
			if n := len(runs[i]); n > 0 && runs[i][n-1].err != nil {
				continue
			}
			r := &result{config: k.cfg, traffic: k.t.name, rate: k.rate, contention: k.contention, hasCapture: k.hasCapture()}
			if strings.HasPrefix(k.cfg, "stenod") && stenodErr != nil {
				r.err = stenodErr
			} else {
				settle()
				before, _ := reportedKiB()
				cont, err := startContention(k.contention, e)
				if err != nil {
					return fmt.Errorf("contention %s: %w", k.contention, err)
				}
				r.contender = cont
				measure(ctx, e, starters[k.cfg], k.t, o, r)
				cont.stop()
				after, _ := reportedKiB()
				r.reportedKiB = after - before
			}
			runs[i] = append(runs[i], r)
			if r.err != nil {
				progress("round %d %-16s %-10s %-4s %-9s n/a: %v", round+1, k.cfg, k.t.name, k.contention, offered(k.rate), r.err)
			} else {
				progress("round %d %-16s %-10s %-4s %-9s sender %.3f Mpps, sent %d, captured %d, lost %d, drops %s, CPU %s/packet (seal %v, live index %v), machine %.3f µs/packet sent, steal %v, reported to the host %d MiB",
					round+1, k.cfg, k.t.name, k.contention, offered(k.rate), r.gen.rate/1e6, r.gen.sent, r.cnt.captured, r.lost(), r.cnt.dropNote(), perPacket(r), r.sealCPU, r.indexCPU, r.machinePerPacket(), r.machine.steal, r.reportedKiB>>10)
			}
		}
	}
	var results []*result
	for i := range keys {
		if len(runs[i]) > 0 && keys[i].contention == o.contention[0] {
			results = append(results, median(slices.Clone(runs[i])))
		}
	}

	var live []row
	if slices.Contains(o.configs, "freshness") || slices.Contains(o.configs, "query") {
		switch {
		case stenodErr != nil:
			live = append(live, row{"freshness / broad query", "n/a", stenodErr.Error()})
		default:
			e2 := *e
			_, e2.capCPU = o.cpus(1) // the live benchmarks run at limited rates
			live = liveBenchmarks(ctx, &e2, o, mixes, results)
		}
	}
	printTable(o, mixes, results, live)
	printRounds(o, keys, runs)
	printBaseRatios(keys, runs)
	printStenotypeRatios(keys, runs)
	printCutoff(o, keys, runs)
	return ctx.Err()
}

func offered(rate uint64) string {
	if rate == 0 {
		return "max"
	}
	return fmt.Sprintf("%.3g Mpps", float64(rate)/1e6)
}

func perPacket(r *result) string {
	if !r.hasCapture || r.cnt.captured == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f µs", r.cpu.Seconds()*1e6/float64(r.cnt.captured))
}

// median returns the run with the median sender rate, noting every run's
// rate and CPU per packet; the first failed run if any failed.
func median(runs []*result) *result {
	for _, r := range runs {
		if r.err != nil {
			return r
		}
	}
	if len(runs) == 1 {
		return runs[0]
	}
	slices.SortFunc(runs, func(a, b *result) int { return cmp.Compare(a.gen.rate, b.gen.rate) })
	m := runs[len(runs)/2]
	var each []string
	for _, r := range runs {
		s := fmt.Sprintf("%.3f Mpps", r.gen.rate/1e6)
		if pp := perPacket(r); pp != "-" {
			s += " " + pp
		}
		each = append(each, s)
	}
	m.runs = fmt.Sprintf("median of %d: %s", len(runs), strings.Join(each, ", "))
	if m.hasCapture {
		var cpu time.Duration
		var captured uint64
		for _, r := range runs {
			cpu += r.cpu
			captured += r.cnt.captured
		}
		if captured > 0 {
			m.runs += fmt.Sprintf("; all runs together %.3f µs/packet", cpu.Seconds()*1e6/float64(captured))
		}
	}
	return m
}

// measure starts the capturer, runs the traffic, lets the capturer drain
// and stops it, filling r. A failure anywhere lands in r.err.
func measure(ctx context.Context, e *env, start func(rate uint64) (*capturer, error), t traffic, o *options, r *result) {
	cp, err := start(r.rate)
	if err != nil {
		r.err = err
		return
	}
	time.Sleep(300 * time.Millisecond) // let the capturer settle
	phase(ctx, e, cp, t, o, r, nil)
	final, err := cp.stop()
	if r.err != nil {
		return
	}
	// The seal counts too: at stop stenod seals the index of the file it
	// was writing, which a sensor pays for every file at rotation (a run
	// is shorter than a file). stenod logs the seal's CPU time as it
	// ends; the rest of its stop (a fsync that writes back what tcpdump
	// leaves to the kernel's threads, detaching, the runtime's exit) is
	// not capture's cost per packet.
	if cp.closeLog != nil {
		c := cp.closeLog()
		r.sealCPU, r.indexCPU = c.seal, c.index
		r.cpu += r.sealCPU
	}
	if err != nil && r.hasCapture {
		r.err = err
		return
	}
	if cp.counts == nil {
		r.cnt = final
	}
}

// phase runs the traffic of r against the running capturer cp and fills
// r with the figures of this phase alone; during runs while traffic flows.
// When cp has no counts, r.cnt stays empty for the caller to fill.
func phase(ctx context.Context, e *env, cp *capturer, t traffic, o *options, r *result, during func()) {
	var before, after counters
	var err error
	if cp.counts != nil {
		if before, err = cp.counts(); err != nil {
			r.err = err
			return
		}
	}
	m0, err := readMachine()
	if err != nil {
		r.err = err
		return
	}
	cont0 := r.contender.cpu()
	t0 := time.Now()
	var cpu0 time.Duration
	if cp.pid != 0 {
		if cpu0, err = procCPU(cp.pid); err != nil {
			r.err = err
			return
		}
	}
	genCPU, _ := o.cpus(r.rate)
	r.gen, err = generate(ctx, e.v, t, genCPU, r.rate, o.duration, o.qdisc, e.cleanups, during)
	if err != nil {
		r.err = err
		return
	}
	if ctx.Err() != nil {
		r.err = ctx.Err()
		return
	}
	if cp.counts != nil {
		// Drain: wait until the count stops moving (at most 10 s).
		last := uint64(math.MaxUint64)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if after, err = cp.counts(); err != nil {
				r.err = err
				return
			}
			if after.captured == last {
				break
			}
			last = after.captured
			time.Sleep(300 * time.Millisecond)
		}
		r.cnt = after.sub(before)
	} else {
		time.Sleep(cmp.Or(cp.drain, time.Second))
	}
	if cp.pid != 0 {
		cpu1, err := procCPU(cp.pid)
		if err != nil {
			r.err = err
			return
		}
		r.cpu = cpu1 - cpu0
	}
	m1, err := readMachine()
	if err != nil {
		r.err = err
		return
	}
	r.machine = m1.sub(m0)
	r.window = time.Since(t0)
	r.contentionCPU = r.contender.cpu() - cont0
}

// runKey is one measurement of a round.
type runKey struct {
	t          traffic
	cfg        string
	rate       uint64
	contention string
}

func (k runKey) hasCapture() bool { return k.cfg != "xdp-drop" && k.cfg != "bare" }

// udpSink listens on a loopback UDP port, reads and discards until the
// cleanups close it, and returns its address.
func udpSink(c *cleanups) (string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("ipfix sink: %w", err)
	}
	c.push("ipfix sink", pc.Close)
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String(), nil
}
