package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/config"
	"github.com/stenod/stenod/internal/demotap"
	"github.com/stenod/stenod/ipfix"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// runFlags are stenod run's flags that set a configuration key. A flag
// given on the command line overrides the file; one not given leaves the
// file's value (or the default) alone.
var runFlags = []struct {
	flag, key, usage string
	// boolean flags are given alone (--pprof) or as --pprof=false.
	boolean bool
}{
	{"iface", "capture.interfaces", "`interfaces` to capture from, comma separated (required, here or in the file)", false},
	{"spool", "spool.dirs", "spool `directories`, comma separated (one per disk)", false},
	{"capture", "capture.method", "capture `method`: auto, xdp or afpacket", false},
	{"xdp-mode", "capture.xdp_mode", "XDP attach `mode`: auto (native, else generic), native or generic", false},
	{"snaplen", "spool.snap_length", "`bytes` kept of each packet", false},
	{"cpus", "capture.cpus", "`CPUs` for the receive loops, comma separated (default: round robin over all)", false},
	{"flush-interval", "capture.flush_interval", "longest `time` a received packet waits before it is queryable, under load", false},
	{"umem-frames", "capture.umem_frames", "4 KiB packet buffers `per RX queue`: how long a disk stall is ridden out", false},
	{"pin-root", "capture.pin_root", "bpffs `directory` for the pinned XDP objects", false},
	{"drop", "capture.drop_rules", "pre-capture drop `rules` in the query language, ';' separated, such as 'udp and port 53; net 10.9.0.0/16'", false},
	{"cutoff", "capture.cutoff", "per-connection cutoff: store only the first `SIZE` (such as 20KB) or packets (5p) of each connection, both directions together (0: off)", false},
	{"cutoff-rules", "capture.cutoff_rules", "per-class cutoff `rules`, first match wins, ';' separated: 'QUERY => SIZE|Np|never', such as 'port 22 => 5p; host 10.0.0.5 => never'", false},
	{"cutoff-jitter", "capture.cutoff_jitter", "raise each connection's cutoff by a random 0 to `PCT` percent, against padding past a known cutoff", false},
	{"rotate-size", "spool.rotate_size", "start a new spool file past this `size`", false},
	{"rotate-age", "spool.rotate_age", "start a new spool file after this much packet `time`", false},
	{"max-bytes", "spool.max_bytes", "disk budget per spool directory, such as 2TiB (0: none); the oldest files go first", false},
	{"min-free-percent", "spool.min_free_percent", "`percent` of each spool file system kept free (0: off)", false},
	{"max-files", "spool.max_files", "most files per spool directory (0: no limit)", false},
	{"listen", "api.listen", "HTTP API TCP `address` instead of the Unix socket; loopback without --certs lets every local user read packets, any other address needs --certs", false},
	{"socket", "api.socket", "the API's Unix socket `path`, used when neither --listen nor --certs is given", false},
	{"socket-group", "api.socket_group", "`group` that may connect to the API's Unix socket (besides root)", false},
	{"pprof", "api.pprof", "serve Go's profiler at /debug/pprof/", true},
	{"certs", "api.certs_dir", "`directory` from 'stenod certs init': serve HTTPS and require client certificates", false},
	{"query-timeout", "api.query_timeout", "longest `time` a query may run (0: no limit)", false},
	{"community-id-seed", "api.community_id_seed", "`seed` of the Community IDs shown and matched (Zeek's and Suricata's, usually 0)", false},
	{"ipfix", "ipfix.collectors", "IPFIX `collectors` the flows are exported to, comma separated: udp://HOST:PORT, tcp://HOST:PORT", false},
	{"ipfix-active", "ipfix.active_timeout", "IPFIX active timeout: a flow with packets for this `time` is exported (and again every time as long)", false},
	{"ipfix-idle", "ipfix.idle_timeout", "IPFIX idle timeout: a flow without a packet for this `time` is exported", false},
	{"sensor-id", "ipfix.sensor_id", "`number` identifying this sensor: the IPFIX observation domain", false},
	{"user", "user", "`user` to run as after start-up, when started as root (\"\": stay root)", false},
}

func cmdRun(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "run", "", "Captures every packet arriving on the interfaces into the spool, indexed and\n"+
		"queryable within a second, and serves the API. Settings come from the\n"+
		"configuration file (docs/configuration.md), then from the flags given.\n"+
		"Started as root, it drops to --user once capture and the API are set up.\n"+
		"SIGINT or SIGTERM stops it cleanly: the indexes are sealed and the XDP\n"+
		"programs detached and unpinned.\n\n"+
		"With --demo it creates a demo tap (the veth stenod-demo0, fed from the\n"+
		"network namespace stenod-demo with the sample captures) and captures it.")
	def := config.Default()
	configPath := fs.String("config", "", "configuration `file` (default "+config.DefaultPath+" when it exists)")
	demo := fs.Bool("demo", false, "capture a demo tap fed with sample traffic (needs root)")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as a configuration file and exit")
	keyOfFlag := map[string]string{}
	for _, f := range runFlags {
		v, err := def.Get(f.key)
		if err != nil {
			panic(err)
		}
		if f.boolean {
			fs.Bool(f.flag, v == "true", f.usage)
		} else {
			fs.String(f.flag, v, f.usage)
		}
		keyOfFlag[f.flag] = f.key
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("unexpected arguments %q", fs.Args())
	}

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	given := map[string]string{} // key -> flag, for the flags given
	var setErr error
	fs.Visit(func(f *flag.Flag) {
		key, ok := keyOfFlag[f.Name]
		if !ok || setErr != nil {
			return
		}
		given[key] = f.Name
		if err := cfg.Set(key, f.Value.String()); err != nil {
			setErr = usagef("--%s: %v", f.Name, errors.Unwrap(err))
		}
	})
	if setErr != nil {
		return setErr
	}
	if *demo {
		if _, ok := given["capture.interfaces"]; ok {
			return usagef("--demo captures its own tap: leave --iface out")
		}
		return runDemo(ctx, e, cfg, given, *printConfig)
	}
	if err := cfg.Validate(); err != nil {
		return configError(err, given)
	}
	if *printConfig {
		_, err := e.stdout.Write(cfg.Format())
		return err
	}
	return runDaemon(ctx, e, cfg)
}

// loadConfig reads the file at path, or DefaultPath when path is empty and
// the file exists, or returns the defaults.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		if _, err := os.Stat(config.DefaultPath); err != nil {
			return config.Default(), nil
		}
		path = config.DefaultPath
	}
	cfg, err := config.Load(path)
	var ke *config.KeyError
	if errors.As(err, &ke) {
		return cfg, usageError{err}
	}
	return cfg, err
}

// configError names the flag along with the key when a flag set it.
func configError(err error, given map[string]string) error {
	var ke *config.KeyError
	if errors.As(err, &ke) {
		if f, ok := given[ke.Key]; ok {
			return usagef("--%s: %v", f, ke.Err)
		}
	}
	return usageError{err}
}

// runDaemon captures and serves until ctx is done. cfg is valid.
func runDaemon(ctx context.Context, e *env, cfg config.Config) error {
	// A daemon whose log reader went away (a closed terminal, a killed
	// supervisor) must still stop cleanly: unpin, detach, seal. Without
	// this, its next log line would kill it with SIGPIPE.
	signal.Ignore(unix.SIGPIPE)
	ctx = watchSupervisor(ctx, e)
	// A typo in an interface's name is said as such, before anything is
	// locked, opened or tried (a capture method failing on a missing
	// interface would blame itself).
	if err := capture.CheckInterfaces(cfg.Capture.Interfaces); err != nil {
		return err
	}
	// First of all: a second sensor on an interface must not touch the
	// first one's pins, link, rings or spool. The locks outlive the
	// privilege drop (a descriptor) and are released last, once the XDP
	// programs are detached and unpinned.
	locks, err := lockInterfaces(cfg.Capture.Interfaces)
	if err != nil {
		return err
	}
	defer locks.Close()
	priv, err := preparePrivileges(cfg, e.log)
	if err != nil {
		return err
	}
	fdLimit := raiseFileLimit(e.log)
	// Only the IPFIX export reads the flows' TCP flags.
	cfg.Spool.TCPFlags = len(cfg.IPFIX.Collectors) > 0
	sp, err := priv.openSpool(cfg.Spool, e.log)
	if err != nil {
		return err
	}
	c, err := capture.Start(ctx, cfg.Capture, sp, e.log)
	if err != nil {
		return errors.Join(err, sp.Close())
	}
	export, err := startExport(cfg, sp, e.log)
	if err != nil {
		return errors.Join(err, c.Close(), sp.Close())
	}
	stopCapture := func() error {
		// Capture first: its Close seals the indexes through the spool
		// writers, and the spool's Close waits for those seals. The
		// export stops in between: its last scan finds every packet.
		cerr := c.Close()
		st := c.Stats()
		packets, bytes, stored := st.Totals()
		e.log.Info("capture stopped", "packets", packets, "bytes", bytes, "stored", stored)
		export.stop()
		return errors.Join(cerr, sp.Close())
	}
	opts := api.Options{Spool: sp, Registry: metricsRegistry(c, export.x), Stats: func() any { return c.Stats() }, Health: c.Health, Logger: e.log,
		FDLimit: fdLimit, Config: cfg.Format(), Fleet: cfg.Fleet}
	if cfg.Capture.Cutoff.Enabled() {
		opts.Cutoff = c
	}
	srv, err := api.New(cfg.API, opts)
	if err != nil {
		return errors.Join(err, stopCapture())
	}
	// The listener is bound before privileges are dropped, so a port below
	// 1024 needs no capability afterwards, and the socket is given to the
	// user the daemon becomes, so that it can remove it when it stops.
	ln, err := srv.Listen(ctx, priv.socketOwner())
	if err != nil {
		return errors.Join(err, stopCapture())
	}
	// stenod status finds the API through the interface locks.
	if err := locks.setAPI(apiAddress(cfg.API, ln.Addr())); err != nil {
		e.log.Warn("cannot note the API's address in the interface locks: stenod status will not find this sensor's counters", "err", err)
	}
	if err := priv.drop(); err != nil {
		return errors.Join(err, ln.Close(), stopCapture())
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- srv.Serve(ctx, ln) }()
	e.log.Info("stenod running", "interfaces", cfg.Capture.Interfaces, "spool", cfg.Spool.Dirs,
		"listen", ln.Addr().String(), "tls", cfg.API.CertsDir != "", "uid", os.Getuid())
	var apiErr error
	select {
	case <-ctx.Done():
		apiErr = <-apiDone
	case apiErr = <-apiDone:
		// The API failed: stop capturing too, as a sensor nobody can
		// query is not doing its job.
		e.log.Error("API server stopped", "err", apiErr)
	}
	e.log.Info("stopping", "cause", context.Cause(ctx))
	if err := errors.Join(apiErr, stopCapture()); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// metricsRegistry returns what /metrics serves besides the API's and the
// spool's own metrics, which api.New adds: Go's, the process's, capture's
// and the IPFIX export's (x nil: no export).
func metricsRegistry(c *capture.Capture, x *ipfix.Exporter) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(c.Collectors()...)
	if x != nil {
		reg.MustRegister(x.Collectors()...)
	}
	return reg
}

// export is the running IPFIX exporter, if any.
type export struct {
	x      *ipfix.Exporter // nil: no collector configured
	cancel context.CancelFunc
	done   chan struct{}
}

// startExport starts the IPFIX export of the spool's live indexes when
// collectors are configured. Its context is its own, not the daemon's:
// it must outlive capture (stop), to export the last packets.
func startExport(cfg config.Config, sp *spool.Spool, log *slog.Logger) (*export, error) {
	ic := cfg.IPFIX
	if ic.BaseURL == "" {
		ic.BaseURL = baseURL(cfg.API)
	}
	x, err := ipfix.New(ic, ipfix.Options{Indexes: ipfix.SpoolIndexes(sp), CommunityIDSeed: uint16(cfg.API.CommunityIDSeed), Logger: log})
	if err != nil || x == nil {
		return &export{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ex := &export{x: x, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ex.done)
		if err := x.Run(ctx); err != nil {
			log.Error("ipfix export stopped", "err", err)
		}
	}()
	return ex, nil
}

// stop exports what is left and stops the exporter.
func (ex *export) stop() {
	if ex.x == nil {
		return
	}
	ex.cancel()
	<-ex.done
}

// baseURL derives ipfix.base_url from the API's configuration: where a
// collector's user reaches this sensor's API. On the Unix socket nobody
// else can: "".
func baseURL(c api.Config) string {
	network, addr := c.Network()
	if network != "tcp" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	scheme := "http"
	if c.CertsDir != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// raiseFileLimit raises the soft limit on open files to the hard limit and
// returns it (0 when unknown). The API sizes its connection caps from it,
// after a reserve for capture (docs/operations.md, "Connection limits").
func raiseFileLimit(log *slog.Logger) uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read the limit on open files", "err", err)
		return 0
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("cannot raise the soft limit on open files to the hard limit", "soft", rl.Cur, "hard", rl.Max, "err", err)
		} else {
			rl = raised
		}
	}
	log.Info("open files limit", "soft", rl.Cur, "hard", rl.Max)
	return rl.Cur
}

// runDemo runs the demo: it creates the demo tap and supervises a daemon
// that captures it, started from this binary with the effective
// configuration, so the daemon is the real one, privilege drop included,
// while this process keeps the privileges to remove the tap afterwards.
func runDemo(ctx context.Context, e *env, cfg config.Config, given map[string]string, printConfig bool) error {
	cfg.Capture.Interfaces = []string{demotap.HostIface}
	if _, ok := given["spool.dirs"]; !ok {
		cfg.Spool.Dirs = []string{cfg.Demo.Spool}
	}
	if _, ok := given["spool.max_bytes"]; !ok {
		cfg.Spool.MaxBytes = cfg.Demo.MaxBytes
	}
	if err := cfg.Validate(); err != nil {
		return configError(err, given)
	}
	if printConfig {
		_, err := e.stdout.Write(cfg.Format())
		return err
	}
	if os.Geteuid() != 0 {
		return usagef("--demo needs root: it creates a network namespace and a veth pair (sudo make run)")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Before the tap of a running demo is removed: the daemon adopts this
	// lock (ifaceLockFDEnv).
	locks, err := lockInterfaces(cfg.Capture.Interfaces)
	if err != nil {
		return err
	}
	defer locks.Close()
	tap, err := demotap.Start(ctx, demotap.Options{Captures: cfg.Demo.Captures, Rate: cfg.Demo.Rate, Logger: e.log})
	if err != nil {
		return err
	}
	// Whatever happens to the daemon, the tap and its pins go.
	cleanup := func() error {
		return errors.Join(tap.Close(), xdp.RemovePins(cfg.Capture.PinRoot, demotap.HostIface))
	}

	// The lifeline: the daemon stops when its end reads EOF, which is when
	// this process exits, however it exits (kill -9 included).
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return errors.Join(err, cleanup())
	}
	defer lifeW.Close()
	daemon := exec.Command(exe, "run", "--config", "/dev/stdin")
	daemon.Stdin = bytes.NewReader(cfg.Format())
	daemon.Stdout, daemon.Stderr = e.stdout, e.stderr
	daemon.ExtraFiles = []*os.File{lifeR, locks[0].File()}
	daemon.Env = append(os.Environ(), supervisorFDEnv+"=3", ifaceLockFDEnv+"="+demotap.HostIface+":4")
	err = daemon.Start()
	lifeR.Close()
	if err != nil {
		return errors.Join(fmt.Errorf("start the demo daemon: %w", err), cleanup())
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	go announceDemo(ctx, e, cfg)

	var derr error
	select {
	case derr = <-exited:
		// The daemon stopped by itself: an error it has logged.
	case <-ctx.Done():
		_ = daemon.Process.Signal(unix.SIGTERM)
		select {
		case derr = <-exited:
		case <-time.After(demoStopTimeout):
			e.log.Error("the demo daemon did not stop in time: killing it", "pid", daemon.Process.Pid)
			_ = daemon.Process.Kill()
			derr = <-exited
		}
	}
	if derr != nil {
		derr = fmt.Errorf("demo daemon: %w", derr)
	}
	return errors.Join(derr, cleanup())
}

// supervisorFDEnv names the descriptor of the demo's lifeline in the
// daemon it starts.
const supervisorFDEnv = "STENOD_SUPERVISOR_FD"

// watchSupervisor returns ctx, cancelled when the demo supervisor that
// started this daemon exits (its lifeline reads EOF), so a demo killed with
// kill -9 leaves no daemon behind.
func watchSupervisor(ctx context.Context, e *env) context.Context {
	v := os.Getenv(supervisorFDEnv)
	if v == "" {
		return ctx
	}
	os.Unsetenv(supervisorFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return ctx
	}
	f := os.NewFile(uintptr(fd), "supervisor")
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, f)
		f.Close()
		e.log.Warn("the demo supervisor exited: stopping")
		cancel(errors.New("the demo supervisor exited"))
	}()
	return ctx
}

// demoStopTimeout bounds how long the demo waits for its daemon to seal
// its indexes and stop.
const demoStopTimeout = time.Minute

// announceDemo says how to query the demo once its API answers.
func announceDemo(ctx context.Context, e *env, cfg config.Config) {
	network, addr := cfg.API.Network()
	scheme := "http"
	if cfg.API.CertsDir != "" {
		scheme = "https"
	}
	base, curl, read := scheme+"://"+addr, "curl -s", os.Args[0]+" read --server "+scheme+"://"+addr
	client := &http.Client{Timeout: time.Second}
	if network == "unix" {
		base, curl = "http://stenod", "curl -s --unix-socket "+addr
		read = os.Args[0] + " read"
		if addr != api.DefaultSocket {
			read += " --socket " + addr
		}
		client.Transport = api.UnixTransport(addr)
	}
	if scheme == "http" {
		for ctx.Err() == nil {
			resp, err := client.Get(base + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	e.log.Info("demo running", "api", network+":"+addr)
	// A browser cannot open a Unix socket: the page needs a TCP address
	// (docs/operations.md, The web page).
	page := "the web page: open " + base + "/"
	if network == "unix" {
		page = "the web page: start the demo with --listen 127.0.0.1:8080 (make run RUN_ARGS='--listen 127.0.0.1:8080'), then open http://127.0.0.1:8080/"
	}
	fmt.Fprintf(e.stderr, "\nThe demo is running: packets flow into %s and are queryable at once. Try:\n\n"+
		"  %s --data-binary 'tcp' %s/query | tcpdump -nr -\n"+
		"  %s '%s/v1/flows?q=udp+and+port+53'\n"+
		"  %s 'udp and port 53 and after 1m ago' -n\n"+
		"  %s %s/v1/stats\n"+
		"  %s\n\n"+
		"Ctrl-C stops the demo and removes the tap.\n\n",
		demotap.HostIface, curl, base, curl, base, read, curl, base, page)
}
