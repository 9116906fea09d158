//go:build linux

package demotap

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
)

// Names of the demo's kernel objects.
const (
	Namespace = "stenod-demo"
	HostIface = "stenod-demo0" // captured, in the caller's namespace
	PeerIface = "stenod-demo1" // the sender's end, in Namespace
)

// Bounds of what is replayed.
const (
	// MaxFrame is the largest frame sent: the veth's MTU of 1500 and an
	// Ethernet header.
	MaxFrame = 1514
	// maxPackets and maxBytes bound the packets held in memory.
	maxPackets = 100_000
	maxBytes   = 64 << 20
	// generated is how many packets of generated traffic are looped.
	generated        = 20_000
	linkTypeEthernet = 1
)

// Options configure a tap.
type Options struct {
	// Captures is a pcap or pcapng file, or a directory searched
	// recursively for them. "" replays the built-in sample captures and
	// those in SystemSamplesDir; Generated replays generated traffic.
	Captures string
	// Rate is packets per second; 0 means 1000.
	Rate int
	// Logger receives what the tap does; nil discards it.
	Logger *slog.Logger
}

// Tap is a running demo tap.
type Tap struct {
	source  string
	packets [][]byte
	rate    int
	log     *slog.Logger

	stop chan struct{}
	done chan struct{}
	sent atomic.Uint64
	err  error // the sender's, valid after done is closed

	closeOnce sync.Once
	closeErr  error
}

// Sources of packets besides a configured capture.
const (
	// SystemSamplesDir holds more sample captures, replayed after the
	// built-in ones (a package may install some there).
	SystemSamplesDir = "/usr/share/stenod/demo"
	// Generated, as Options.Captures, replays traffic of
	// internal/trafficgen instead of captures.
	Generated = "generated"
)

// samples are the built-in captures (samples/README.md says what they are
// and where they come from).
//
//go:embed samples/*.pcapng
var samples embed.FS

// systemSamplesDir is SystemSamplesDir; tests point it elsewhere.
var systemSamplesDir = SystemSamplesDir

// Start removes a crashed demo's leftovers, creates the namespace and the
// veth pair, and starts replaying. ctx bounds the set-up only.
func Start(ctx context.Context, opts Options) (_ *Tap, err error) {
	if opts.Rate <= 0 {
		opts.Rate = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tap{rate: opts.Rate, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if t.packets, t.source, err = loadPackets(opts.Captures); err != nil {
		return nil, err
	}
	if err := Cleanup(ctx, opts.Logger); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, Cleanup(context.Background(), nil))
		}
	}()
	if err := create(ctx); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go t.send(ready)
	if err := <-ready; err != nil {
		<-t.done
		return nil, err
	}
	t.log.Info("demo tap ready", "capture", HostIface, "namespace", Namespace, "sender", PeerIface,
		"replaying", t.source, "packets", len(t.packets), "rate", t.rate)
	return t, nil
}

// Source says what is replayed.
func (t *Tap) Source() string { return t.source }

// Sent returns the number of packets sent so far.
func (t *Tap) Sent() uint64 { return t.sent.Load() }

// Close stops the sender and removes the namespace and the veth pair. It
// may be called more than once.
func (t *Tap) Close() error {
	t.closeOnce.Do(func() {
		close(t.stop)
		<-t.done
		t.closeErr = errors.Join(t.err, Cleanup(context.Background(), nil))
		t.log.Info("demo tap removed", "sent", t.sent.Load())
	})
	return t.closeErr
}

// Cleanup removes the namespace and the veth pair if they exist, as a
// crashed demo leaves them.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	var errs []error
	if _, err := os.Stat(filepath.Join("/run/netns", Namespace)); err == nil {
		if log != nil {
			log.Info("removing the namespace of an earlier demo", "namespace", Namespace)
		}
		if err := ip(ctx, "netns", "del", Namespace); err != nil {
			errs = append(errs, err)
		}
	}
	// Removing the namespace removes the peer and with it the host end,
	// in the background; a veth left without its namespace is removed here.
	for i := 0; linkExists(HostIface); i++ {
		if i == 50 {
			if err := ip(ctx, "link", "del", HostIface); err != nil && linkExists(HostIface) {
				errs = append(errs, err)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func create(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("demo tap: needs root (it creates a network namespace and a veth pair)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("demo tap: %w (install iproute2)", err)
	}
	steps := [][]string{
		{"netns", "add", Namespace},
		{"link", "add", HostIface, "type", "veth", "peer", "name", PeerIface, "netns", Namespace},
		// Neither end may send anything of its own (IPv6 router
		// solicitations, DAD): only the replay is seen.
		{"-n", Namespace, "link", "set", PeerIface, "up"},
		{"link", "set", HostIface, "up"},
	}
	for i, s := range steps {
		if i == 2 {
			_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+HostIface+"/disable_ipv6", []byte("1"), 0o644)
			_ = exec.CommandContext(ctx, "ip", "netns", "exec", Namespace, "sysctl", "-qw", "net.ipv6.conf."+PeerIface+".disable_ipv6=1").Run()
		}
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("demo tap: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// send replays the packets until stop is closed. It opens its socket
// inside the namespace on a thread that never returns to the runtime's
// pool (it stays in the namespace and dies with the goroutine), and
// reports the set-up on ready.
func (t *Tap) send(ready chan<- error) {
	defer close(t.done)
	runtime.LockOSThread() // never unlocked: the thread ends with us
	fd, err := openSocket()
	ready <- err
	if err != nil {
		t.err = err
		return
	}
	defer unix.Close(fd)

	const tick = 10 * time.Millisecond
	tk := time.NewTicker(tick)
	defer tk.Stop()
	start := time.Now()
	var next int
	var sent uint64
	for {
		select {
		case <-t.stop:
			return
		case now := <-tk.C:
			due := uint64(now.Sub(start).Seconds() * float64(t.rate))
			// After a stall, do not burst: at most a second's worth.
			if due > sent+uint64(t.rate) {
				sent = due - uint64(t.rate)
			}
			for ; sent < due; sent++ {
				if err := unix.Send(fd, t.packets[next], 0); err != nil && !errors.Is(err, unix.ENOBUFS) {
					if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENODEV) {
						t.err = fmt.Errorf("demo tap: send: %w (the tap was removed)", err)
						return
					}
					t.log.Warn("demo tap: send", "err", err)
				}
				next = (next + 1) % len(t.packets)
				t.sent.Add(1)
			}
		}
	}
}

// openSocket moves the calling (locked) thread into the namespace and opens
// an AF_PACKET socket bound to the peer there.
func openSocket() (int, error) {
	ns, err := unix.Open(filepath.Join("/run/netns", Namespace), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("demo tap: open namespace: %w", err)
	}
	defer unix.Close(ns)
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("demo tap: enter namespace: %w", err)
	}
	// Protocol 0: the socket sends only, it receives nothing.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("demo tap: packet socket: %w", err)
	}
	idx, err := ifindex(fd, PeerIface)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: idx})
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("demo tap: bind to %s: %w", PeerIface, err)
	}
	return fd, nil
}

// ifindex looks the interface up in the socket's namespace.
func ifindex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// loadPackets reads what is replayed, and says what it is.
func loadPackets(captures string) ([][]byte, string, error) {
	switch captures {
	case "":
		var r reader
		if err := r.readFS(samples, "samples"); err != nil {
			return nil, "", err
		}
		source := fmt.Sprintf("the built-in sample captures (%d packets)", len(r.out))
		if isDir(systemSamplesDir) {
			n := len(r.out)
			if err := r.readFS(os.DirFS(systemSamplesDir), "."); err != nil {
				return nil, "", err
			}
			source += fmt.Sprintf(" and %s (%d packets)", systemSamplesDir, len(r.out)-n)
		}
		return r.out, source, nil
	case Generated:
		g := trafficgen.New(1, 256)
		pkts := make([][]byte, generated)
		for i := range pkts {
			f, _ := g.Next()
			pkts[i] = append([]byte(nil), f...)
		}
		return pkts, "generated traffic (internal/trafficgen)", nil
	}
	pkts, err := readCaptures(captures)
	if err != nil {
		return nil, "", err
	}
	if len(pkts) == 0 {
		return nil, "", fmt.Errorf("demo tap: %s: no whole Ethernet packet of at most %d bytes", captures, MaxFrame)
	}
	return pkts, captures, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// readCaptures reads the whole Ethernet packets of at most MaxFrame bytes
// of path (a file, or every capture below a directory). Files that are not
// captures are skipped; a damaged file contributes what precedes the damage.
func readCaptures(path string) ([][]byte, error) {
	var r reader
	dir, root := path, "."
	if !isDir(path) {
		dir, root = filepath.Dir(path), filepath.Base(path)
	}
	if err := r.readFS(os.DirFS(dir), root); err != nil {
		return nil, err
	}
	return r.out, nil
}

// reader gathers packets, up to maxPackets and maxBytes.
type reader struct {
	out   [][]byte
	total int
}

// readFS reads every capture at or below root in fsys, in lexical order.
func (r *reader) readFS(fsys fs.FS, root string) error {
	var files []string
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("demo tap: %w", err)
	}
	for _, f := range files {
		if len(r.out) >= maxPackets || r.total >= maxBytes {
			break
		}
		r.out, r.total = readFile(fsys, f, r.out, r.total)
	}
	return nil
}

func readFile(fsys fs.FS, path string, out [][]byte, total int) ([][]byte, int) {
	f, err := fsys.Open(path)
	if err != nil {
		return out, total
	}
	defer f.Close()
	r, err := pcapio.NewReader(f)
	if err != nil {
		return out, total
	}
	var p pcapio.Packet
	for len(out) < maxPackets && total < maxBytes {
		if r.Next(&p) != nil {
			break // the end, or damage: keep what came before
		}
		if p.LinkType != linkTypeEthernet || p.CapLen != p.OrigLen || p.CapLen < 14 || p.CapLen > MaxFrame {
			continue
		}
		out = append(out, append([]byte(nil), p.Data...))
		total += p.CapLen
	}
	return out, total
}
