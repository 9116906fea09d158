package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/internal/ifacelock"
	"github.com/stenod/stenod/xdp"
)

const statusDoc = `Shows every running sensor, whatever its capture method: per interface, the
sensor's pid, the capture method, packets received and stored, packets the
kernel dropped (AF_XDP socket drops, AF_PACKET ring drops), packets lost to
spool write errors, and how far back the spool reaches. The sensors are found
through their interface locks (/run/stenod/iface), which name each one's API;
the figures come from its /v1/stats, so status needs what a query needs: root
or the group stenod for the Unix socket, --certs for a TLS API.

Then, for interfaces with pinned XDP objects (AF_XDP capture, or AF_PACKET with
drop rules or xdp_observe), the XDP program's counters read from the pinned
maps, as 'bpftool map dump pinned' shows them (root only; docs/bpf.md).

With INTERFACEs, only those. With --socket or --server, only the sensor there.`

func cmdStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "status", "[INTERFACE...]", statusDoc)
	pinRoot := fs.String("pin-root", xdp.DefaultPinRoot, "bpffs `directory` of the pinned XDP objects")
	lockDir := fs.String("lock-dir", ifacelock.DefaultDir, "`directory` of the interface locks")
	socket := fs.String("socket", "", "ask the sensor whose API is this Unix `socket` only")
	server := fs.String("server", "", "ask the sensor whose API is at this `URL` or TCP address only")
	certsDir := fs.String("certs", "", "`directory` with the client certificate (stenod certs init), for sensors whose API uses TLS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *socket != "" && *server != "" {
		return usagef("--socket and --server: give one")
	}
	want := map[string]bool{}
	for _, ifc := range fs.Args() {
		want[ifc] = true
	}
	wanted := func(ifc string) bool { return len(want) == 0 || want[ifc] }

	// The sensors: one per API, with the interfaces it holds.
	var sensors []*sensor
	byAPI := map[string]*sensor{}
	if *socket != "" || *server != "" {
		s := &sensor{api: "unix:" + *socket}
		if *server != "" {
			u, err := serverURL(*server, *certsDir != "")
			if err != nil {
				return usageError{err}
			}
			s.api = "url:" + u
		}
		sensors = append(sensors, s)
	} else {
		held, err := ifacelock.Held(*lockDir)
		if err != nil {
			return err
		}
		for _, h := range held {
			if !wanted(h.Iface) {
				continue
			}
			key := h.API
			if key == "" {
				key = "pid:" + strconv.Itoa(h.PID) // an older stenod, or not listening yet
			}
			s := byAPI[key]
			if s == nil {
				s = &sensor{api: h.API, pid: h.PID}
				byAPI[key] = s
				sensors = append(sensors, s)
			}
			s.ifaces = append(s.ifaces, h.Iface)
		}
	}
	for _, s := range sensors {
		s.stats, s.err = fetchStats(ctx, s.api, *certsDir)
	}

	pinned, pinErr := xdp.PinnedInterfaces(*pinRoot)
	pinned = slices.DeleteFunc(pinned, func(ifc string) bool { return !wanted(ifc) })
	if *socket != "" || *server != "" {
		pinned = nil
	}
	if len(sensors) == 0 && len(pinned) == 0 {
		what := "no running stenod found: no interface lock held in " + *lockDir
		if pinErr == nil {
			what += " and no pinned XDP objects under " + *pinRoot
		}
		if len(want) > 0 {
			what += " for " + strings.Join(fs.Args(), ", ")
		}
		return errors.New(what)
	}

	failed := 0
	if len(sensors) > 0 {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "interface\tsensor pid\tmethod\tpackets\tbytes\tstored\tdropped\tlost\tretention\tAPI\t")
		for _, s := range sensors {
			pid := "-"
			if s.pid != 0 {
				pid = strconv.Itoa(s.pid)
			}
			if s.err != nil {
				failed++
				for _, ifc := range s.ifaces {
					fmt.Fprintf(tw, "%s\t%s\t?\t?\t?\t?\t?\t?\t?\t%s\t\n", ifc, pid, s.apiText())
				}
				continue
			}
			for _, ifc := range s.stats.Capture.Interfaces {
				if !wanted(ifc.Name) {
					continue
				}
				var packets, bytes, stored, dropped, lost uint64
				for _, q := range ifc.Queues {
					packets += q.Packets
					bytes += q.Bytes
					stored += q.Stored
					lost += q.SpoolWriteLost
					dropped += q.Dropped()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", ifc.Name, pid, ifc.Method,
					packets, bytes, stored, dropped, lost, s.stats.Spool.Retention, s.apiText())
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, s := range sensors {
			if s.err != nil {
				fmt.Fprintf(e.stderr, "%s: %v\n", strings.Join(s.ifaces, ", "), s.err)
			}
		}
	}

	if len(pinned) > 0 {
		if len(sensors) > 0 {
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "XDP program (pinned under %s):\n", *pinRoot)
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "interface\tsensor pid\tattached\tpackets\tbytes\tredirected\tpassed\tno socket\tno meta\tringbuf lost\trule drops\tover snap\tflows\t")
		for _, ifc := range pinned {
			st, err := xdp.ReadPinned(*pinRoot, ifc)
			if err != nil {
				tw.Flush()
				if errors.Is(err, os.ErrPermission) {
					return fmt.Errorf("%w (the pinned maps are root's: run as root, or read the figures above)", err)
				}
				return err
			}
			// The sensor capturing it (its interface lock), "-" for pins a
			// dead sensor left.
			sensor := "-"
			if pid, _, err := ifacelock.HolderOf(*lockDir, ifc); err == nil && pid != 0 {
				sensor = strconv.Itoa(pid)
			}
			s := st.Stats
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d/%d\t\n", ifc, sensor, st.Attached, s.Packets, s.Bytes,
				s.Redirected, s.Passed, s.RedirectFailed, s.MetaFailed, s.RingBufFull, s.DroppedByRule, s.OverSnapLen, st.Flows, st.MaxFlows)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if failed > 0 && failed == len(sensors) && len(pinned) == 0 {
		return fmt.Errorf("could not ask any sensor for its figures")
	}
	return nil
}

// sensor is a running stenod: its API (as its interface locks note it:
// "unix:PATH", "tcp:ADDR", "tls:ADDR"; "url:URL" from --server; "" when
// not noted) and what it answered.
type sensor struct {
	api    string
	pid    int
	ifaces []string
	stats  *sensorStats
	err    error
}

func (s *sensor) apiText() string {
	if s.api == "" {
		return "-"
	}
	return strings.TrimPrefix(s.api, "url:")
}

// sensorStats is what status reads of /v1/stats (docs/api.md).
type sensorStats = api.PeerStats

// fetchStats asks the API at addr for /v1/stats.
func fetchStats(ctx context.Context, addr, certsDir string) (*sensorStats, error) {
	network, where, _ := strings.Cut(addr, ":")
	client := &http.Client{Timeout: 10 * time.Second}
	var base string
	switch network {
	case "unix":
		tr := api.UnixTransport(where)
		defer tr.CloseIdleConnections()
		client.Transport, base = tr, "http://stenod"
	case "tcp":
		client.Transport, base = &http.Transport{}, "http://"+where
	case "tls", "url":
		base = where
		if network == "tls" {
			base = "https://" + where
		}
		if strings.HasPrefix(base, "https://") {
			if certsDir == "" {
				return nil, fmt.Errorf("the API at %s uses TLS: give --certs DIR with the client certificate", base)
			}
			tc, err := api.ClientTLSConfig(certsDir)
			if err != nil {
				return nil, err
			}
			client.Transport = &http.Transport{TLSClientConfig: tc}
		} else {
			client.Transport = &http.Transport{}
		}
	case "":
		return nil, errors.New("the sensor has not noted its API's address in its interface lock (not listening yet, or a stenod from before status asked the API): use --socket or --server")
	default:
		return nil, fmt.Errorf("unknown API address %q in the interface lock", addr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		if network == "unix" {
			return nil, statusSocketError(where, err)
		}
		return nil, fmt.Errorf("ask %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask %s: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var st sensorStats
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("ask %s: /v1/stats: %w", base, err)
	}
	if st.Capture == nil {
		return nil, fmt.Errorf("ask %s: /v1/stats has no capture counters: is it a capturing stenod?", base)
	}
	return &st, nil
}

// statusSocketError says what a failure to reach the socket usually means.
func statusSocketError(sock string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("ask %s: %w: only root and the members of the socket's group (stenod by default) may ask a sensor", sock, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("ask %s: %w: the sensor's socket is gone", sock, err)
	}
	return fmt.Errorf("ask %s: %w", sock, err)
}
