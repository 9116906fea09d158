package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/internal/certs"
)

// defaultCertGroup may read client_key.pem when it exists, as stenographer's
// group does for its client key.
const defaultCertGroup = "stenod"

func cmdCerts(_ context.Context, e *env, args []string) error {
	const doc = "Creates a private CA, a server certificate and a client certificate in DIR\n" +
		"with stenographer's file names (ca_cert.pem, ca_key.pem, server_cert.pem,\n" +
		"server_key.pem, client_cert.pem, client_key.pem), ECDSA P-256. The server\n" +
		"certificate names localhost, 127.0.0.1, ::1, this host's name and every --host.\n" +
		"server_key.pem and ca_key.pem get mode 0600, client_key.pem 0640 with --group.\n" +
		"Existing files are never overwritten."
	fs := newFlagSet(e, "certs init", "DIR", doc)
	if len(args) == 0 || args[0] != "init" {
		fs.Usage()
		return usagef("want 'stenod certs init [flags] DIR'")
	}
	var hosts hostList
	fs.Var(&hosts, "host", "extra DNS `name` or IP address for the server certificate (repeatable, or comma separated)")
	group := fs.String("group", defaultCertGroup, "`group` that may read client_key.pem; the default is skipped when no such group exists")
	days := fs.Int("days", 3650, "validity of the certificates in `days`")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("want exactly one DIR")
	}
	if *days < 1 {
		return usagef("--days %d: want at least 1", *days)
	}
	groupSet := false
	fs.Visit(func(f *flag.Flag) { groupSet = groupSet || f.Name == "group" })

	opts := certs.DefaultOptions()
	opts.Hosts = hosts
	opts.Validity = time.Duration(*days) * 24 * time.Hour
	// Only root can give a file any group; for others the default group is
	// a wish, an explicit --group an order that fails when it cannot be met.
	if *group != "" && (groupSet || os.Geteuid() == 0) {
		g, err := user.LookupGroup(*group)
		var unknown user.UnknownGroupError
		switch {
		case err == nil:
			gid, err := strconv.Atoi(g.Gid)
			if err != nil {
				return fmt.Errorf("group %s: gid %q: %w", *group, g.Gid, err)
			}
			opts.GID = gid
		case errors.As(err, &unknown) && !groupSet:
			e.log.Info("no such group; client_key.pem keeps the default group", "group", *group)
		default:
			return fmt.Errorf("--group %s: %w", *group, err)
		}
	}
	dir := fs.Arg(0)
	res, err := certs.Init(dir, opts)
	if err != nil {
		return err
	}
	ips := make([]string, len(res.IPs))
	for i, ip := range res.IPs {
		ips[i] = ip.String()
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", strings.Join(res.Files, ", "))
	fmt.Fprintf(e.stdout, "server certificate names: %s\n", strings.Join(append(res.DNSNames, ips...), ", "))
	fmt.Fprintf(e.stdout, "valid until %s\n", res.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(e.stdout, "give the server this directory as its certs directory; query with: stenod read --certs %s QUERY\n", dir)
	return nil
}

// hostList collects --host values.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*h = append(*h, s)
		}
	}
	return nil
}
