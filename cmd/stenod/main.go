// Command stenod is the full-packet-capture appliance: the capture daemon
// and the tools that import, query and inspect its spool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, env *env, args []string) error
}

// env is what a command may touch: its output streams and logger.
type env struct {
	stdin          io.Reader // nil: empty
	stdout, stderr io.Writer
	log            *slog.Logger
	// onFlagSet, when set, is told about every flag set a command creates
	// (newFlagSet): how 'stenod help' learns a command's flags.
	onFlagSet func(*usageInfo)
}

func commands() []command {
	return []command{
		{"run", "capture from interfaces into the spool and serve the API", cmdRun},
		{"read", "query a running stenod and pipe the answer to tcpdump (stenoread)", cmdRead},
		{"import", "store pcap/pcapng captures in a spool (no privileges needed)", cmdImport},
		{"query", "answer a query from a spool directory, without a server", cmdQuery},
		{"status", "show every running sensor's capture counters and retention", cmdStatus},
		{"certs", "create a CA, server and client certificates (certs init DIR)", cmdCerts},
		{"version", "print the version and commit", cmdVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	code := run(ctx, os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(e.stderr)
		return 2
	}
	if args[0] == "help" {
		return cmdHelp(ctx, e, args[1:])
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "stenod %s: %v\n", c.name, err)
			return 2
		}
		var ms missingSensors
		if errors.As(err, &ms) {
			fmt.Fprintf(e.stderr, "stenod %s: %v\n", c.name, err)
			return exitMissing
		}
		var de damagedAnswer
		if errors.As(err, &de) {
			fmt.Fprintf(e.stderr, "stenod %s: %v\n", c.name, err)
			return exitDamaged
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "stenod %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(e.stderr, "stenod: unknown command %q\n", args[0])
	usage(e.stderr)
	return 2
}

// exitDamaged is the exit status of a query whose answer is complete except
// for damaged records it left out.
const exitDamaged = 3

// damagedAnswer: the answer was delivered whole, less n damaged records of
// the spool (first says what was wrong with the first of them).
type damagedAnswer struct {
	n     int64
	first string
}

func (d damagedAnswer) Error() string {
	return fmt.Sprintf("%d damaged records left out of the answer (every other matching packet is in it); first: %s", d.n, d.first)
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: stenod COMMAND [flags] [args]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'stenod help COMMAND' (or 'stenod COMMAND -h') for a command's flags.")
}

// usageInfo is what a command's usage says: its name ("certs init" for a
// subcommand), its arguments, its description and its flags.
type usageInfo struct {
	name, args, doc string
	fs              *flag.FlagSet
}

// newFlagSet returns the flag set of command name, whose usage (-h, or a
// mistake) goes to e.stderr.
func newFlagSet(e *env, name, args, doc string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: stenod %s [flags] %s\n\n%s\n\nflags:\n", name, args, doc)
		fs.PrintDefaults()
	}
	if e.onFlagSet != nil {
		e.onFlagSet(&usageInfo{name: name, args: args, doc: doc, fs: fs})
	}
	return fs
}
