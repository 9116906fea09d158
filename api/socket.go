package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SocketOwner is the account the Unix socket, and the directories created
// for it, are given: the user a daemon started as root drops to, so that it
// can still remove the socket when it stops. -1 keeps the creator's uid (or
// gid). The group is Config.SocketGroup when it exists; GID is used only
// when it does not.
type SocketOwner struct{ UID, GID int }

// KeepOwner leaves the socket to the identity that creates it.
func KeepOwner() SocketOwner { return SocketOwner{UID: -1, GID: -1} }

// Listen binds the address of cfg.Network, for Serve: a TCP address, or the
// Unix socket, created mode 0660 with cfg.SocketGroup as its group. A
// socket file that no one answers on is stale and replaced; one that
// answers belongs to another daemon and is an error. The socket is removed
// when the listener closes.
func (s *Server) Listen(ctx context.Context, owner SocketOwner) (net.Listener, error) {
	network, addr := s.cfg.Network()
	if network == "tcp" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		return ln, nil
	}
	return listenUnix(ctx, addr, s.cfg.SocketGroup, owner, s.log)
}

// socketMode lets the owner and the group connect (connect(2) needs write
// permission on the socket file), nobody else.
const socketMode = 0o660

// socketDirMode is the mode of directories created for the socket: the
// group may pass through, others may not even see the socket.
const socketDirMode = 0o750

func listenUnix(ctx context.Context, path, group string, owner SocketOwner, log *slog.Logger) (net.Listener, error) {
	gid := owner.GID
	if group != "" {
		g, err := user.LookupGroup(group)
		var unknown user.UnknownGroupError
		switch {
		case err == nil:
			if gid, err = strconv.Atoi(g.Gid); err != nil {
				return nil, fmt.Errorf("api: group %s: gid %q: %w", group, g.Gid, err)
			}
		case errors.As(err, &unknown):
			log.Warn("API socket: the group does not exist, so the socket keeps the daemon's own group: "+
				"only root and that group can connect (create the group and add the analysts to it)",
				"group", group, "socket", path)
		default:
			return nil, fmt.Errorf("api: group %s: %w", group, err)
		}
	}
	dir := filepath.Dir(path)
	if err := makeSocketDir(dir, owner.UID, gid); err != nil {
		return nil, err
	}
	if err := removeStale(ctx, path, log); err != nil {
		return nil, err
	}

	// Bound in a directory of its own (mode 0700), then moved into place
	// once its mode and group are set: whatever the mode of dir, nobody
	// outside the group can connect in between.
	tmp, err := os.MkdirTemp(dir, ".s")
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", path, err)
	}
	defer os.Remove(tmp)
	tmpPath := filepath.Join(tmp, "s")
	if len(tmpPath) > maxSocketPath {
		return nil, fmt.Errorf("api %s: the temporary socket %s is longer than %d bytes: use a shorter path", path, tmpPath, maxSocketPath)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", tmpPath)
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// Closing removes path, not the name the socket was bound to.
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		return nil, errors.Join(fmt.Errorf("api %s: %w", path, err), ul.Close(), os.Remove(tmpPath))
	}
	if err := os.Chmod(tmpPath, socketMode); err != nil {
		return fail(err)
	}
	if err := chownSocket(tmpPath, owner.UID, gid, log); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fail(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ul, path: path, file: st, log: log}, nil
}

// makeSocketDir creates dir and its missing parents mode 0750, owned by
// uid:gid (-1: unchanged). Directories that exist are left as they are.
func makeSocketDir(dir string, uid, gid int) error {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	if err := os.MkdirAll(dir, socketDirMode); err != nil {
		return fmt.Errorf("api: socket directory: %w", err)
	}
	for _, p := range missing {
		// MkdirAll's mode went through the umask.
		if err := os.Chmod(p, socketDirMode); err != nil {
			return fmt.Errorf("api: socket directory: %w", err)
		}
		if uid != -1 || gid != -1 {
			if err := os.Lchown(p, uid, gid); err != nil {
				return fmt.Errorf("api: socket directory: %w", err)
			}
		}
	}
	return nil
}

// chownSocket gives the socket to uid:gid. A daemon that is not root and
// not in the group cannot give it the group: the socket then keeps the
// daemon's own, which lets fewer in, not more.
func chownSocket(path string, uid, gid int, log *slog.Logger) error {
	if uid == -1 && gid == -1 {
		return nil
	}
	err := os.Lchown(path, uid, gid)
	if errors.Is(err, fs.ErrPermission) && uid == -1 {
		log.Warn("API socket: cannot give the socket its group (the daemon is not a member): it keeps the daemon's own group",
			"socket", path, "gid", gid, "err", err)
		return nil
	}
	return err
}

// removeStale removes the socket file at path when no one answers on it
// (what a daemon killed with kill -9 leaves). A socket someone answers on
// belongs to a running daemon, and anything but a socket is not ours:
// both are errors.
func removeStale(ctx context.Context, path string, log *slog.Logger) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api %s: %w", path, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api %s: exists and is not a socket: refusing to replace it", path)
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("api %s: another process answers on this socket (is stenod already running?): refusing to take it over", path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("api %s: cannot tell whether the socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api %s: remove the stale socket: %w", path, err)
	}
	log.Info("removed a stale API socket: no one answered on it", "socket", path)
	return nil
}

// unixListener removes its socket file when closed, unless the file is no
// longer the one it created (a successor's).
type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
	log  *slog.Logger
}

// Addr is the socket's path, not the name it was bound to.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.file) {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			// The next start removes it as stale; not worth failing the
			// shutdown for.
			l.log.Warn("API socket left behind: cannot remove it", "socket", l.path, "err", rerr)
		}
	}
	return err
}

// UnixTransport is an HTTP transport that connects to the Unix socket at
// path whatever the URL names: clients ask for http://stenod/query.
func UnixTransport(path string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
}
