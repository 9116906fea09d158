//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/internal/ifacelock"
)

// ifaceLockFDEnv hands the demo's daemon the interface lock its supervisor
// took ("IFACE:FD"): the supervisor locks the demo tap's interface before
// it touches the tap, and the daemon holds the same lock, not a new one.
const ifaceLockFDEnv = "STENOD_IFACE_LOCK_FD"

// ifaceLocks are the interface locks a daemon holds for its lifetime.
type ifaceLocks []*ifacelock.Lock

// lockInterfaces takes the lock of every interface (internal/ifacelock),
// before anything of the interface or the spool is touched: a second
// sensor on an interface is refused with the first one's pid and command
// line, while a lock of a dead process is taken over. A lock inherited
// from the demo supervisor (ifaceLockFDEnv) is adopted.
func lockInterfaces(ifaces []string) (ifaceLocks, error) {
	inherited := map[string]*os.File{}
	if v := os.Getenv(ifaceLockFDEnv); v != "" {
		os.Unsetenv(ifaceLockFDEnv)
		name, fdText, _ := strings.Cut(v, ":")
		fd, err := strconv.Atoi(fdText)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("%s=%q: not IFACE:FD", ifaceLockFDEnv, v)
		}
		inherited[name] = os.NewFile(uintptr(fd), name+".lock")
	}
	var locks ifaceLocks
	for _, iface := range ifaces {
		var l *ifacelock.Lock
		var err error
		if f, ok := inherited[iface]; ok {
			delete(inherited, iface)
			l, err = ifacelock.Adopt(f, "", iface)
		} else {
			l, err = ifacelock.Acquire("", iface)
		}
		if err != nil {
			return nil, errors.Join(err, locks.Close())
		}
		locks = append(locks, l)
	}
	for _, f := range inherited {
		f.Close()
	}
	return locks, nil
}

// Close releases the locks.
func (ls ifaceLocks) Close() error {
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// setAPI notes the API's address in every lock (ifacelock.Lock.SetAPI).
func (ls ifaceLocks) setAPI(addr string) error {
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.SetAPI(addr))
	}
	return errors.Join(errs...)
}

// apiAddress is where the API of cfg listens, as the interface locks note
// it: "unix:PATH", "tcp:HOST:PORT" or, with client certificates,
// "tls:HOST:PORT"; bound is the listener's address (the port a ":0" got).
func apiAddress(cfg api.Config, bound net.Addr) string {
	network, addr := cfg.Network()
	switch {
	case network == "unix":
		// The socket was bound elsewhere and moved into place.
		return "unix:" + addr
	case cfg.CertsDir != "":
		return "tls:" + bound.String()
	}
	return "tcp:" + bound.String()
}
