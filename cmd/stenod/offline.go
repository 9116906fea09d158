package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

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
	fs := newFlagSet(e, "query", "QUERY...", "Writes the packets matching QUERY (stenographer's query language, see\ndocs/query-language.md) from the spool as pcap, in timestamp order.\nDamaged records of the spool are left out: their count goes to stderr and\nthe exit status is 3 (docs/operations.md, What stenod promises on damage).")
	dir := fs.String("spool", "", "spool `directory` (required)")
	limitPackets := fs.Int64("limit-packets", 0, "stop after `N` packets (0: no limit)")
	limitBytes := fs.Int64("limit-bytes", 0, "stop before exceeding `N` bytes of pcap records (0: no limit)")
	format := fs.String("format", "pcap", "output `format`: pcap (nanosecond) or pcapng")
	outPath := fs.String("w", "", "write to `FILE` instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() == 0 {
		fs.Usage()
		return usagef("--spool and a QUERY are required")
	}
	if *limitPackets < 0 || *limitBytes < 0 {
		return usagef("limits must not be negative")
	}
	q, err := query.Parse(strings.Join(fs.Args(), " "), time.Now())
	if err != nil {
		return usageError{err}
	}
	var out io.Writer = e.stdout
	if *outPath == "" {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usagef("refusing to write pcap to a terminal: use -w FILE or pipe into 'tcpdump -r -'")
		}
	} else {
		f, err := os.Create(*outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	sp, err := openSpoolReadOnly(*dir, e)
	if err != nil {
		return err
	}
	pw, err := newPacketWriter(*format, out, sp.Config().SnapLen)
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
	if *outPath != "" {
		if f, ok := out.(*os.File); ok {
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
	if res.Damaged > 0 {
		return damagedAnswer{n: res.Damaged, first: res.FirstDamage.Error()}
	}
	return nil
}

// openSpoolReadOnly opens an existing spool directory for queries.
func openSpoolReadOnly(dir string, e *env) (*spool.Spool, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{dir}
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
