package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stenod/stenod/internal/certs"
)

// defaultCertGroup may read client_key.pem when it exists, as stenographer's
// group does for its client key.
const defaultCertGroup = "stenod"

// defaultCertUser is the user the systemd unit runs stenod as: it gets
// server_key.pem when it exists.
const defaultCertUser = "stenod"

func cmdCerts(_ context.Context, e *env, args []string) error {
	const doc = "Creates a private CA, a server certificate and a client certificate in DIR\n" +
		"with stenographer's file names (ca_cert.pem, ca_key.pem, server_cert.pem,\n" +
		"server_key.pem, client_cert.pem, client_key.pem), ECDSA P-256. The server\n" +
		"certificate names localhost, 127.0.0.1, ::1, this host's name and every --host.\n" +
		"server_key.pem and ca_key.pem get mode 0600, client_key.pem 0640 with --group.\n" +
		"server_key.pem belongs to --user, the user the server runs as (the systemd\n" +
		"unit runs stenod as stenod), so that the service reads it; without one, the\n" +
		"chown that lets the service read it is printed. Existing files are never\n" +
		"overwritten."
	fs := newFlagSet(e, "certs init", "DIR", doc)
	var hosts hostList
	fs.Var(&hosts, "host", "extra DNS `name` or IP address for the server certificate (repeatable, or comma separated)")
	group := fs.String("group", defaultCertGroup, "`group` that may read client_key.pem; the default is skipped when no such group exists")
	svcUser := fs.String("user", defaultCertUser, "`user` the server runs as, owner of server_key.pem (\"\": none); the default is skipped when no such user exists or when not root")
	days := fs.Int("days", 3650, "validity of the certificates in `days`")
	switch {
	case len(args) > 0 && args[0] == "init":
		args = args[1:]
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		// stenod certs -h: the usage of certs init, as for any command.
	default:
		fs.Usage()
		return usagef("want 'stenod certs init [flags] DIR'")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("want exactly one DIR")
	}
	if *days < 1 {
		return usagef("--days %d: want at least 1", *days)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	opts := certs.DefaultOptions()
	opts.Hosts = hosts
	opts.Validity = time.Duration(*days) * 24 * time.Hour
	// Only root can give a file any group or owner; for others the default
	// group and user are a wish, an explicit --group or --user an order that
	// fails when it cannot be met.
	if *group != "" && (given["group"] || os.Geteuid() == 0) {
		g, err := user.LookupGroup(*group)
		var unknown user.UnknownGroupError
		switch {
		case err == nil:
			gid, err := strconv.Atoi(g.Gid)
			if err != nil {
				return fmt.Errorf("group %s: gid %q: %w", *group, g.Gid, err)
			}
			opts.GID = gid
		case errors.As(err, &unknown) && !given["group"]:
			e.log.Info("no such group; client_key.pem keeps the default group", "group", *group)
		default:
			return fmt.Errorf("--group %s: %w", *group, err)
		}
	}
	if *svcUser != "" && (given["user"] || os.Geteuid() == 0) {
		u, err := user.Lookup(*svcUser)
		var unknown user.UnknownUserError
		switch {
		case err == nil:
			uid, err := strconv.Atoi(u.Uid)
			if err != nil {
				return fmt.Errorf("user %s: uid %q: %w", *svcUser, u.Uid, err)
			}
			opts.ServerUID = uid
		case errors.As(err, &unknown) && !given["user"]:
			e.log.Info("no such user; server_key.pem stays its creator's", "user", *svcUser)
		default:
			return fmt.Errorf("--user %s: %w", *svcUser, err)
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
	serviceAccess(e, dir, *svcUser, opts.ServerUID)
	fmt.Fprintf(e.stdout, "give the server this directory as its certs directory; query with: stenod read --certs %s QUERY\n", dir)
	return nil
}

// serviceAccess says who reads the server key and, when the service user
// cannot, the commands that let it: the systemd unit runs stenod as the
// user stenod, not as root.
func serviceAccess(e *env, dir, name string, uid int) {
	if name == "" {
		name = defaultCertUser
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	key := filepath.Join(abs, certs.ServerKey)
	if uid < 0 {
		owner := strconv.Itoa(os.Geteuid())
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		fmt.Fprintf(e.stdout, "server_key.pem belongs to %s (mode %#o): a server that runs as another user cannot read it\n"+
			"(the systemd unit runs stenod as the user %s). To give it to %s, as root:\n"+
			"  chown %s %s\n"+
			"(the Debian package and 'make install' create the user %s; or run 'stenod certs init --user USER DIR' as root)\n",
			owner, certs.ModeServerKey, defaultCertUser, name, shellQuote(name), shellQuote(key), defaultCertUser)
		return
	}
	fmt.Fprintf(e.stdout, "server_key.pem belongs to %s (mode %#o): the server, running as %s, reads it\n", name, certs.ModeServerKey, name)
	// A directory certs init did not create keeps its mode: say so when
	// the user cannot pass through it.
	st, err := os.Stat(abs)
	if err != nil {
		return
	}
	if !canSearch(st, uid) {
		fmt.Fprintf(e.stdout, "but %s (mode %#o) keeps the user %s out; to let it reach its key, as root:\n  chmod o+x %s\n",
			abs, st.Mode().Perm(), name, shellQuote(abs))
	}
}

// canSearch reports whether user uid may pass through the directory st,
// as its owner, through one of its groups or as anyone.
func canSearch(st os.FileInfo, uid int) bool {
	perm := st.Mode().Perm()
	sys, ok := st.Sys().(*syscall.Stat_t)
	if perm&0o001 != 0 || !ok {
		return perm&0o001 != 0
	}
	if int(sys.Uid) == uid {
		return perm&0o100 != 0
	}
	if perm&0o010 == 0 {
		return false
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return false
	}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	return slices.Contains(gids, strconv.Itoa(int(sys.Gid)))
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
