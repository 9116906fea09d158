package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/spool"
)

func cmdRun(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "run", "", "Captures every packet arriving on the interfaces into the spool, indexed and\nqueryable within a second. SIGINT or SIGTERM stops it cleanly: the indexes are\nsealed and the XDP programs detached and unpinned.")
	def := capture.DefaultConfig()
	sdef := spool.DefaultConfig()
	ifaces := fs.String("iface", "", "`interfaces` to capture from, comma separated (required)")
	dirs := fs.String("spool", "/var/lib/stenod/spool", "spool `directories`, comma separated (one per disk)")
	method := fs.String("capture", def.Method, "capture `method`: auto, xdp or afpacket")
	xdpMode := fs.String("xdp-mode", def.XDPMode, "XDP attach `mode`: auto (native, else generic), native or generic")
	snapLen := fs.Int("snaplen", sdef.SnapLen, "`bytes` kept of each packet")
	cpus := fs.String("cpus", "", "`CPUs` for the receive loops, comma separated (default: round robin over all)")
	flushInterval := fs.Duration("flush-interval", def.FlushInterval, "longest `time` a received packet waits before it is queryable, under load")
	umemFrames := fs.Int("umem-frames", def.UMEMFrames, "4 KiB packet buffers `per RX queue`: how long a disk stall is ridden out")
	pinRoot := fs.String("pin-root", def.PinRoot, "bpffs `directory` for the pinned XDP objects")
	adef := api.DefaultConfig()
	listen := fs.String("listen", adef.Listen, "HTTP API `address`; any but loopback needs --certs")
	certsDir := fs.String("certs", "", "`directory` from 'stenod certs init': serve HTTPS and require client certificates")
	queryTimeout := fs.Duration("query-timeout", 0, "longest `time` a query may run (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *ifaces == "" {
		fs.Usage()
		return usagef("--iface is required")
	}

	cfg := def
	cfg.Interfaces = splitList(*ifaces)
	cfg.Method = *method
	cfg.XDPMode = *xdpMode
	cfg.SnapLen = *snapLen
	cfg.FlushInterval = *flushInterval
	cfg.UMEMFrames = *umemFrames
	cfg.PinRoot = *pinRoot
	for _, s := range splitList(*cpus) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return usagef("--cpus: %q is not a CPU number", s)
		}
		cfg.CPUs = append(cfg.CPUs, n)
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	scfg := sdef
	scfg.Dirs = splitList(*dirs)
	scfg.SnapLen = *snapLen
	if err := scfg.Validate(); err != nil {
		return usageError{err}
	}

	acfg := adef
	acfg.Listen, acfg.CertsDir, acfg.QueryTimeout = *listen, *certsDir, *queryTimeout
	if err := acfg.Validate(); err != nil {
		return usageError{err}
	}

	sp, err := spool.Open(scfg, e.log)
	if err != nil {
		return err
	}
	c, err := capture.Start(ctx, cfg, sp, e.log)
	if err != nil {
		return errors.Join(err, sp.Close())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(c.Collectors()...)
	srv, err := api.New(acfg, api.Options{Spool: sp, Registry: reg, Stats: func() any { return c.Stats() }, Logger: e.log})
	if err != nil {
		return errors.Join(err, c.Close(), sp.Close())
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- srv.ListenAndServe(ctx) }()
	e.log.Info("stenod running", "interfaces", cfg.Interfaces, "spool", scfg.Dirs, "listen", acfg.Listen, "tls", acfg.CertsDir != "")
	var apiErr error
	select {
	case <-ctx.Done():
		apiErr = <-apiDone
	case apiErr = <-apiDone:
		// The API could not listen or failed: stop capturing too, as a
		// sensor nobody can query is not doing its job.
		e.log.Error("API server stopped", "err", apiErr)
	}
	e.log.Info("stopping", "cause", context.Cause(ctx))

	// Capture first: its Close seals the indexes through the spool
	// writers, and the spool's Close waits for those seals.
	cerr := c.Close()
	st := c.Stats()
	packets, bytes, stored := st.Totals()
	e.log.Info("capture stopped", "packets", packets, "bytes", bytes, "stored", stored)
	if err := errors.Join(apiErr, cerr, sp.Close()); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
