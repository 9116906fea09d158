package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/stenod/stenod/alert"
	"github.com/stenod/stenod/api"
)

func cmdRead(ctx context.Context, e *env, args []string) error {
	const doc = "Sends QUERY to a running stenod (POST /query, as stenoread does) and pipes\n" +
		"the answer into 'tcpdump -r - [tcpdump args...]'. Without --server and --certs\n" +
		"it asks the daemon's Unix socket, which root and the group stenod may use.\n" +
		"QUERY is one argument: quote it. Everything after it goes to tcpdump, e.g.\n" +
		"-nn, -w FILE or a filter.\n" +
		"Without tcpdump on PATH, '-w FILE' alone still works: the pcap is written to\n" +
		"FILE directly. The exit status is non-zero when the server reports an error\n" +
		"or the answer breaks off, and 3 when the answer is whole except for damaged\n" +
		"records of the spool that it left out (their count goes to stderr).\n" +
		"With --alert FILE there is no QUERY: FILE ('-': standard input) holds one\n" +
		"Suricata eve.json record or Zeek JSON log line, and the answer is its\n" +
		"connection's packets (POST /v1/alert), by its community_id or 5-tuple;\n" +
		"tcpdump's arguments then follow --, as in: stenod read --alert a.json -- -nn\n" +
		"With --fleet, the daemon asks its fleet (POST /v1/fleet/query, fleet.sensors)\n" +
		"and the answer is every sensor's packets merged by time, pcapng with interfaces\n" +
		"named sensor/iface; a summary per sensor goes to stderr, and the exit status\n" +
		"is 4 when sensors are missing from the answer (docs/fleet.md)."
	fs := newFlagSet(e, "read", "QUERY [tcpdump args...] | --alert FILE [-- tcpdump args...]", doc)
	limitPackets := fs.Int64("limit-packets", 0, "stop after `N` packets (0: no limit)")
	limitBytes := fs.Int64("limit-bytes", 0, "stop before exceeding `N` bytes of pcap records (0: no limit)")
	server := fs.String("server", "", "API `URL` or TCP address, instead of the Unix socket (default https://"+api.DefaultListen+" with --certs)")
	socket := fs.String("socket", "", "the API's Unix `socket` (default "+api.DefaultSocket+" without --server and --certs)")
	certsDir := fs.String("certs", "", "`directory` holding ca_cert.pem, client_cert.pem and client_key.pem (from 'stenod certs init'); the connection then uses TLS")
	alertPath := fs.String("alert", "", "`FILE` with one Suricata eve.json or Zeek JSON line: read its connection's packets instead of a QUERY's")
	window := fs.String("window", "", "with --alert: how far around the event's time to look (`duration`, default the server's api.alert_window)")
	fleetQuery := fs.Bool("fleet", false, "ask the daemon's fleet of sensors (fleet.sensors) instead of its own spool: one pcapng merged by time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *limitPackets < 0 || *limitBytes < 0 {
		return usagef("limits must not be negative")
	}
	var text, path string
	tdArgs := fs.Args()
	switch {
	case *fleetQuery && *alertPath != "":
		return usagef("--fleet goes without --alert")
	case *alertPath != "":
		ev, err := readEvent(e, *alertPath)
		if err != nil {
			return err
		}
		text, path = string(ev), "/v1/alert"
		if *window != "" {
			path += "?window=" + url.QueryEscape(*window)
		}
	case *window != "":
		return usagef("--window goes with --alert")
	case fs.NArg() == 0 || strings.TrimSpace(fs.Arg(0)) == "":
		fs.Usage()
		return usagef("a QUERY is required")
	default:
		text, path, tdArgs = fs.Arg(0), "/query", fs.Args()[1:]
		if *fleetQuery {
			path = "/v1/fleet/query"
		}
	}
	// Without an address and without certificates, the Unix socket: the
	// daemon's default, which only root and the socket's group reach.
	sock := *socket
	switch {
	case sock != "" && (*server != "" || *certsDir != ""):
		return usagef("--socket goes without --server and --certs")
	case sock == "" && *server == "" && *certsDir == "":
		sock = api.DefaultSocket
	}
	base := "http://stenod"
	if sock == "" {
		var err error
		if base, err = serverURL(*server, *certsDir != ""); err != nil {
			return usageError{err}
		}
	}

	// Decide where the answer goes before asking for it, so a missing
	// tcpdump does not cost a query.
	tcpdump, lookErr := exec.LookPath("tcpdump")
	direct := ""
	if lookErr != nil {
		file, only := onlyWriteArg(tdArgs)
		switch {
		case file == "":
			return fmt.Errorf("tcpdump is not installed (not found on PATH): install it, or give '-w FILE' to write the pcap to FILE")
		case !only:
			return fmt.Errorf("tcpdump is not installed (not found on PATH): without it only '-w FILE' works, not the other tcpdump arguments %q", tdArgs)
		}
		direct = file
		if direct == "-" {
			if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				return usagef("refusing to write pcap to a terminal")
			}
		}
	}

	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
	if sock != "" {
		client.Transport = api.UnixTransport(sock)
	}
	if *certsDir != "" {
		tc, err := api.ClientTLSConfig(*certsDir)
		if err != nil {
			return err
		}
		client.Transport = &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tc}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(text))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if *limitPackets > 0 {
		req.Header.Set(api.HeaderLimitPackets, strconv.FormatInt(*limitPackets, 10))
	}
	if *limitBytes > 0 {
		req.Header.Set(api.HeaderLimitBytes, strconv.FormatInt(*limitBytes, 10))
	}
	resp, err := client.Do(req)
	if err != nil {
		if sock != "" {
			return socketError(sock, err)
		}
		return fmt.Errorf("query %s: %w", base, err)
	}
	defer resp.Body.Close()
	if q := resp.Header.Get(api.HeaderQuery); q != "" {
		fmt.Fprintf(e.stderr, "query: %s\n", q)
	}
	if resp.StatusCode != http.StatusOK {
		msg, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return fmt.Errorf("server answered %s (reading its message: %v)", resp.Status, err)
		}
		return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if direct != "" {
		err = writeAnswer(e, resp.Body, direct)
	} else {
		err = pipeToTcpdump(ctx, e, tcpdump, tdArgs, resp.Body)
	}
	if err != nil {
		return err
	}
	// The trailers are read with the body's end.
	if *fleetQuery {
		return fleetReport(e, resp.Trailer)
	}
	if n, _ := strconv.ParseInt(resp.Trailer.Get(api.TrailerDamaged), 10, 64); n > 0 {
		return damagedAnswer{n: n, first: resp.Trailer.Get(api.TrailerDamage)}
	}
	return nil
}

// readEvent reads --alert's file: one JSON event, the only non-empty line.
func readEvent(e *env, path string) ([]byte, error) {
	var b []byte
	var err error
	if path == "-" {
		if e.stdin != nil {
			b, err = io.ReadAll(io.LimitReader(e.stdin, alert.MaxEventBytes+1))
		}
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			b, err = io.ReadAll(io.LimitReader(f, alert.MaxEventBytes+1))
			f.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--alert: %w", err)
	}
	if len(b) > alert.MaxEventBytes {
		return nil, fmt.Errorf("--alert %s: more than the %d bytes of one event", path, alert.MaxEventBytes)
	}
	var lines [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			lines = append(lines, l)
		}
	}
	switch len(lines) {
	case 0:
		return nil, fmt.Errorf("--alert %s: empty: want one eve.json or Zeek JSON line", path)
	case 1:
		return lines[0], nil
	}
	return nil, fmt.Errorf("--alert %s: %d lines: give one event (e.g. grep its flow_id or uid into a file)", path, len(lines))
}

// serverURL completes --server: the default address, and a scheme that
// follows whether client certificates are given.
func serverURL(s string, tls bool) (string, error) {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	switch {
	case s == "":
		s = scheme + api.DefaultListen
	case !strings.Contains(s, "://"):
		s = scheme + s
	case strings.HasPrefix(s, "http://") && tls:
		return "", fmt.Errorf("--server %s is plain http, but --certs asks for TLS", s)
	case strings.HasPrefix(s, "https://") && !tls:
		return "", fmt.Errorf("--server %s is https: give --certs DIR with the client certificate", s)
	case !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://"):
		return "", fmt.Errorf("--server %s: want an http:// or https:// URL", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// socketError says what a failure to reach the socket usually means.
func socketError(sock string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("query %s: %w: only root and the members of the socket's group (stenod by default) may read packets "+
			"(docs/operations.md, Access)", sock, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ECONNREFUSED):
		return fmt.Errorf("query %s: %w: is stenod running? (one listening on TCP needs --server, and --certs for TLS)", sock, err)
	}
	return fmt.Errorf("query %s: %w", sock, err)
}

// onlyWriteArg finds tcpdump's -w FILE (or -wFILE) in args, and reports
// whether it is all there is.
func onlyWriteArg(args []string) (file string, only bool) {
	for i, a := range args {
		switch {
		case a == "-w" && i+1 < len(args):
			return args[i+1], len(args) == 2
		case strings.HasPrefix(a, "-w") && len(a) > 2:
			return a[2:], len(args) == 1
		}
	}
	return "", false
}

// writeAnswer stores the answer in path through a temporary file renamed at
// the end, so an answer that breaks off never leaves a whole-looking pcap.
func writeAnswer(e *env, body io.Reader, path string) error {
	if path == "-" {
		n, err := io.Copy(e.stdout, body)
		if err != nil {
			return fmt.Errorf("answer broke off after %d bytes: %w", n, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	n, err := io.Copy(f, body)
	if err != nil {
		err = fmt.Errorf("answer broke off after %d bytes, %s not written: %w", n, path, err)
	} else {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	fmt.Fprintf(e.stderr, "wrote %d bytes to %s (tcpdump not found; wrote the pcap directly)\n", n, path)
	return nil
}

// readError marks a failure to read the answer, as opposed to a failure to
// write it to tcpdump.
type readError struct{ err error }

func (r readError) Error() string { return r.err.Error() }
func (r readError) Unwrap() error { return r.err }

type answerReader struct{ r io.Reader }

func (a answerReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// pipeToTcpdump runs tcpdump -r - ARGS and feeds it the answer.
func pipeToTcpdump(ctx context.Context, e *env, tcpdump string, args []string, body io.Reader) error {
	cmd := exec.CommandContext(ctx, tcpdump, append([]string{"-r", "-"}, args...)...)
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start tcpdump: %w", err)
	}
	n, copyErr := io.Copy(stdin, answerReader{body})
	closeErr := stdin.Close()
	waitErr := cmd.Wait()
	var re readError
	switch {
	case errors.As(copyErr, &re):
		return fmt.Errorf("answer broke off after %d bytes; tcpdump saw an incomplete capture: %w", n, re.err)
	case waitErr != nil:
		return fmt.Errorf("tcpdump: %w", waitErr)
	case copyErr != nil:
		// tcpdump stopped reading and exited cleanly (-c N): it has what it
		// wanted.
		return nil
	}
	if closeErr != nil && !errors.Is(closeErr, os.ErrClosed) {
		return fmt.Errorf("tcpdump: close its input: %w", closeErr)
	}
	return nil
}
