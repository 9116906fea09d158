package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/stenod/stenod/config"
	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

func cmdImport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "import", "FILE...", "Stores every packet of the pcap or pcapng FILEs in the spool, indexed,\nthrough the same parser, index and spool code as live capture.")
	dir := fs.String("spool", "", "spool `directory` (required)")
	stream := fs.String("stream", "import", "stream `name` the files are stored under")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() == 0 {
		fs.Usage()
		return usagef("--spool and at least one FILE are required")
	}
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{*dir}
	cfg.DirectIO = true // a bulk write: the page cache would only cost
	// Every record is stored whole, up to the largest a capture file may
	// hold and a query reads back (BIG TCP and GRO records of up to 256
	// KiB): capture's snap length is capture's business, an import keeps
	// what the file has.
	cfg.SnapLen = spool.MaxSnapLen
	sp, err := spool.Open(cfg, e.log)
	if err != nil {
		return err
	}
	w, err := sp.NewWriter(*stream, *stream)
	if err != nil {
		return errors.Join(err, sp.Close())
	}
	var errs []error
	var total spool.ImportResult
	for _, path := range fs.Args() {
		res, err := importFile(ctx, w, path)
		total.Packets += res.Packets
		total.Bytes += res.Bytes
		if err != nil {
			errs = append(errs, err)
			fmt.Fprintf(e.stderr, "%v\n", err)
			continue
		}
		e.log.Info("imported", "file", path, "packets", res.Packets, "bytes", res.Bytes)
	}
	// Seal what was stored even when a file failed: nothing stored is lost.
	if err := errors.Join(w.Close(), sp.Close()); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "stored %d packets (%d bytes) from %d files in %s\n", total.Packets, total.Bytes, fs.NArg(), *dir)
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d files had errors (packets before each error were stored)", len(errs), fs.NArg())
	}
	return nil
}

func importFile(ctx context.Context, w *spool.Writer, path string) (spool.ImportResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return spool.ImportResult{}, err
	}
	defer f.Close()
	return spool.Import(ctx, w, path, f)
}

func cmdQuery(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "query", "QUERY...", "Writes the packets matching QUERY (stenographer's query language, see\n"+
		"docs/query-language.md) from the spool as pcap, merged from every spool\n"+
		"directory in timestamp order. The directories are --spool's; without it,\n"+
		"spool.dirs of --config's file, or of "+config.DefaultPath+" when it exists.\n"+
		"Damaged records of the spool are left out: their count goes to stderr and\n"+
		"the exit status is 3 (docs/operations.md, What stenod promises on damage).")
	var dirs listFlag
	fs.Var(&dirs, "spool", "spool `directories`: repeat the flag or separate them with commas (default: the configuration's spool.dirs)")
	configPath := fs.String("config", "", "configuration `file` whose spool.dirs to read (default "+config.DefaultPath+" when it exists and --spool is not given)")
	limitPackets := fs.Int64("limit-packets", 0, "stop after `N` packets (0: no limit)")
	limitBytes := fs.Int64("limit-bytes", 0, "stop before exceeding `N` bytes of pcap records (0: no limit)")
	format := fs.String("format", "pcap", "output `format`: pcap (nanosecond) or pcapng")
	outPath := fs.String("w", "", "write to `FILE` instead of standard output ('-': standard output)")
	seed := fs.Int("community-id-seed", 0, "`seed` the IDs given to community-id were made with (default: the configuration's api.community_id_seed, else 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usagef("a QUERY is required")
	}
	seedGiven := false
	fs.Visit(func(f *flag.Flag) { seedGiven = seedGiven || f.Name == "community-id-seed" })
	if *limitPackets < 0 || *limitBytes < 0 {
		return usagef("limits must not be negative")
	}
	if len(dirs) > 0 && *configPath != "" {
		return usagef("give --spool or --config, not both")
	}
	if len(dirs) == 0 {
		path := *configPath
		if path == "" {
			if _, err := os.Stat(config.DefaultPath); err != nil {
				fs.Usage()
				return usagef("--spool is required (or --config, or a configuration file at %s)", config.DefaultPath)
			}
			path = config.DefaultPath
		}
		cfg, err := config.Load(path)
		if err != nil {
			return err
		}
		dirs = cfg.Spool.Dirs
		if len(dirs) == 0 {
			return usagef("%s: spool.dirs is empty", path)
		}
		if !seedGiven {
			*seed = cfg.API.CommunityIDSeed
		}
	}
	if *seed < 0 || *seed > 0xffff {
		return usagef("--community-id-seed %d: want 0 to 65535", *seed)
	}
	q, err := query.ParseWith(strings.Join(fs.Args(), " "), time.Now(), query.Options{CommunityIDSeed: uint16(*seed)})
	if err != nil {
		return usageError{err}
	}
	toStdout := *outPath == "" || *outPath == "-"
	if toStdout {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usagef("refusing to write pcap to a terminal: use -w FILE or pipe into 'tcpdump -r -'")
		}
	}
	sp, err := openSpoolReadOnly(dirs, e)
	if err != nil {
		return err
	}
	defer sp.Close()
	var out io.Writer = e.stdout
	var tmp *os.File
	if !toStdout {
		// The answer goes to a temporary file (mode 0600: packets are
		// secret) renamed once it is whole, so a query that fails never
		// leaves a whole-looking pcap behind.
		if tmp, err = os.CreateTemp(filepath.Dir(*outPath), "."+filepath.Base(*outPath)+".*.tmp"); err != nil {
			return err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		out = tmp
	}
	// The answer's header says the largest record it may hold: the spool
	// may hold imported records longer than capture's snap length.
	pw, err := newPacketWriter(*format, out, spool.MaxSnapLen)
	if err != nil {
		return err
	}
	res, err := engine.Run(ctx, sp, q, pw, engine.Options{LimitPackets: *limitPackets, LimitBytes: *limitBytes})
	if err != nil {
		return err
	}
	if res.Limited {
		fmt.Fprintf(e.stderr, "stopped at a limit after %d packets (%d bytes); more packets matched\n", res.Packets, res.Bytes)
	}
	if tmp != nil {
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), *outPath); err != nil {
			return err
		}
		tmp = nil
	}
	if res.Damaged > 0 {
		return damagedAnswer{n: res.Damaged, first: res.FirstDamage.Error()}
	}
	return nil
}

// listFlag is a flag that may be repeated, each value a comma separated
// list: --spool /a --spool /b,/c is [/a /b /c].
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// openSpoolReadOnly opens existing spool directories for queries.
func openSpoolReadOnly(dirs []string, e *env) (*spool.Spool, error) {
	for _, dir := range dirs {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("spool %s: %w", dir, err)
		}
	}
	cfg := spool.DefaultConfig()
	cfg.Dirs = dirs
	cfg.ReadOnly = true
	return spool.Open(cfg, e.log)
}

func newPacketWriter(format string, w io.Writer, snapLen int) (pcapio.PacketWriter, error) {
	switch format {
	case "pcap":
		return pcapio.NewPcapWriter(w, snapLen)
	case "pcapng":
		return pcapio.NewPcapngWriter(w, snapLen)
	}
	return nil, usagef("unknown format %q (want pcap or pcapng)", format)
}
