//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/pcapio"
)

// fleetPkt is a packet of a pcapng answer, its bytes as a checksum.
type fleetPkt struct {
	ts    int64
	iface string
	len   int
	sum   uint32
}

func readFleetAnswer(r io.Reader) ([]fleetPkt, error) {
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return nil, err
	}
	var out []fleetPkt
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, fleetPkt{p.Timestamp, rd.Interfaces()[p.Interface].Name, len(p.Data), crc32.ChecksumIEEE(p.Data)})
	}
}

// injector writes frames onto a veth's host end, from the test's own
// namespace, so that they arrive on the peer end in the sensor's.
type injector struct{ fd int }

func newInjector(t *testing.T, iface string) *injector {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: int(ifr.Uint32())}); err != nil {
		t.Fatal(err)
	}
	return &injector{fd: fd}
}

// fleetSensor is one sensor of TestFleetThreeSensors: a stenod run in a
// network namespace of its own, capturing on a veth, its API on another.
type fleetSensor struct {
	name   string
	d      *daemon
	base   string
	iface  string // the captured interface, in the sensor's namespace
	in     *injector
	frames [][]byte
}

// TestFleetThreeSensors: three stenod sensors, each in its own network
// namespace capturing a different part of the test captures, and a fourth
// stenod that asks them as a fleet. One fleet query returns exactly the
// union of the three sensors' answers, merged in time order, on
// "sensor/iface" interfaces; stenod read --fleet says so and exits 0. With
// one sensor killed in the middle of its answer, the fleet answer
// completes from the other two, keeps what the killed one had sent, and
// names it missing; stenod read --fleet then exits 4.
func TestFleetThreeSensors(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	bin := buildStenod(t)
	work := reachableTempDir(t)
	net := 200 + os.Getpid()%50 // 10.NET.i.0/24: the sensors' API links

	certsDir := filepath.Join(work, "certs")
	hosts := []string{"certs", "init", "--user", "", "--group", ""}
	for i := 1; i <= 3; i++ {
		hosts = append(hosts, "--host", fmt.Sprintf("10.%d.%d.2", net, i))
	}
	if code, _, stderr := runCmd(t, append(hosts, certsDir)...); code != 0 {
		t.Fatalf("certs init: %s", stderr)
	}
	tc, err := api.ClientTLSConfig(certsDir)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	direct := &http.Client{Transport: tr, Timeout: time.Minute}

	// The captures, cut in three: a file to each sensor in turn. The
	// second sensor gets its part several times over, so that its answer
	// is much larger than the socket buffers between it and the fleet
	// and a kill lands in its middle.
	var parts [3][][]byte
	var size [3]int
	for k, c := range testpcaps.Ethernet(t, "") {
		for _, p := range c.Packets {
			if len(p.Data) >= 60 && len(p.Data) <= 1514 {
				parts[k%3] = append(parts[k%3], p.Data)
				size[k%3] += len(p.Data)
			}
		}
	}
	for rep := parts[1]; size[1] < 40<<20; {
		parts[1] = append(parts[1], rep...)
		for _, f := range rep {
			size[1] += len(f)
		}
	}
	t.Logf("frames per sensor: %d %d %d, bytes %d %d %d", len(parts[0]), len(parts[1]), len(parts[2]), size[0], size[1], size[2])

	start := time.Now().UTC()
	var sensors []*fleetSensor
	for i := 1; i <= 3; i++ {
		v := testutil.NewVeth(t)
		// The API's link: host end 10.NET.i.1, sensor end 10.NET.i.2.
		ha, sa := fmt.Sprintf("stf%d%da", os.Getpid()%10000, i), fmt.Sprintf("stf%d%db", os.Getpid()%10000, i)
		testutil.Run(t, "ip", "link", "add", ha, "type", "veth", "peer", "name", sa)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", ha).Run() })
		testutil.Run(t, "ip", "link", "set", sa, "netns", v.NS)
		testutil.Run(t, "ip", "addr", "add", fmt.Sprintf("10.%d.%d.1/24", net, i), "dev", ha)
		testutil.Run(t, "ip", "link", "set", ha, "up")
		v.InNS(t, "ip", "addr", "add", fmt.Sprintf("10.%d.%d.2/24", net, i), "dev", sa)
		v.InNS(t, "ip", "link", "set", sa, "up")
		v.InNS(t, "ip", "link", "set", "lo", "up")
		listen := fmt.Sprintf("10.%d.%d.2:1234", net, i)
		d := startStenod(t, "ip", "netns", "exec", v.NS, bin, "run", "--iface", v.Peer, "--capture", "afpacket", "--user", "",
			"--listen", listen, "--certs", certsDir, "--spool", filepath.Join(work, fmt.Sprintf("spool%d", i)),
			"--pin-root", bpffsDir(t, fmt.Sprintf("stenod-fleet-test-%d", i)))
		s := &fleetSensor{name: fmt.Sprintf("s%d", i), d: d, base: "https://" + listen, iface: v.Peer, frames: parts[i-1]}
		waitHealthy(t, d, direct, s.base)
		s.in = newInjector(t, v.Host)
		sensors = append(sensors, s)
	}

	// The fleet: a fourth stenod, on a veth nobody sends on, answering on
	// a Unix socket.
	fv := testutil.NewVeth(t)
	cfgFile := filepath.Join(work, "fleet.json")
	var fs []fleet.Sensor
	for _, s := range sensors {
		fs = append(fs, fleet.Sensor{Name: s.name, URL: s.base, Certs: certsDir})
	}
	cfgJSON, _ := json.Marshal(map[string]any{"fleet": map[string]any{"sensors": fs, "timeout": "2m", "stall_timeout": "10s"}})
	if err := os.WriteFile(cfgFile, cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(work, "run", "fleet.sock")
	fd := startStenod(t, bin, "run", "--config", cfgFile, "--iface", fv.Host, "--capture", "afpacket", "--user", "",
		"--socket", sock, "--spool", filepath.Join(work, "fleetspool"), "--pin-root", bpffsDir(t, "stenod-fleet-test-0"))
	ftr := api.UnixTransport(sock)
	t.Cleanup(ftr.CloseIdleConnections)
	fc := &http.Client{Transport: ftr, Timeout: 5 * time.Minute}
	waitHealthy(t, fd, fc, "http://stenod")

	// The traffic, round robin, so the sensors' times interleave; paced
	// so that no ring overflows.
	for k := 0; ; k++ {
		sent := false
		for _, s := range sensors {
			if k < len(s.frames) {
				if _, err := unix.Write(s.in.fd, s.frames[k]); err != nil {
					t.Fatalf("send to %s: %v", s.name, err)
				}
				sent = true
			}
		}
		if !sent {
			break
		}
		if k%2000 == 1999 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	q := "after " + start.Format(time.RFC3339Nano)
	for _, s := range sensors {
		waitFor(t, s.d, s.name+" to have every frame queryable", time.Minute, func() error {
			resp, err := direct.Get(s.base + "/v1/stats")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var st struct {
				Spool struct {
					Packets int `json:"packets"`
				} `json:"spool"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				return err
			}
			if st.Spool.Packets != len(s.frames) {
				return fmt.Errorf("%d of %d frames", st.Spool.Packets, len(s.frames))
			}
			return nil
		})
	}

	// What each sensor answers by itself, and the union the fleet must give.
	var want []fleetPkt
	per := map[string][]fleetPkt{}
	for _, s := range sensors {
		resp, err := direct.Get(s.base + "/v1/pcap?format=pcapng&q=" + url.QueryEscape(q))
		if err != nil {
			t.Fatal(err)
		}
		pkts, err := readFleetAnswer(resp.Body)
		resp.Body.Close()
		if err != nil || len(pkts) != len(s.frames) {
			t.Fatalf("%s answers %d packets (%v), want %d", s.name, len(pkts), err, len(s.frames))
		}
		for i := range pkts {
			pkts[i].iface = s.name + "/" + pkts[i].iface
		}
		per[s.name] = pkts
		want = append(want, pkts...)
	}
	slices.SortStableFunc(want, func(a, b fleetPkt) int { return int(a.ts - b.ts) })

	askFleet := func(read func(io.Reader) ([]fleetPkt, error)) ([]fleetPkt, fleet.Summary) {
		t.Helper()
		resp, err := fc.Post("http://stenod/v1/fleet/query", "text/plain", strings.NewReader(q))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("fleet query: %s: %s", resp.Status, b)
		}
		got, err := read(resp.Body)
		if err != nil {
			t.Fatalf("fleet answer after %d packets: %v", len(got), err)
		}
		var sum fleet.Summary
		if err := json.Unmarshal([]byte(resp.Trailer.Get(api.TrailerFleetSummary)), &sum); err != nil {
			t.Fatalf("summary trailer %q: %v", resp.Trailer.Get(api.TrailerFleetSummary), err)
		}
		return got, sum
	}

	got, sum := askFleet(readFleetAnswer)
	if len(got) != len(want) {
		t.Fatalf("fleet answer: %d packets, want %d; summary %+v", len(got), len(want), sum)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fleet packet %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	ifaces := map[string]bool{}
	for _, p := range got {
		ifaces[p.iface] = true
	}
	for _, s := range sensors {
		if !ifaces[s.name+"/"+s.iface] {
			t.Errorf("no packets on interface %s/%s: %v", s.name, s.iface, ifaces)
		}
	}
	if len(ifaces) != 3 || len(sum.Missing) != 0 || sum.Packets != int64(len(want)) {
		t.Errorf("interfaces %v, summary %+v", ifaces, sum)
	}
	t.Logf("fleet answer: %d packets, %d bytes in %d ms; sensors %+v", sum.Packets, sum.Bytes, sum.Milliseconds, sum.Sensors)

	out := filepath.Join(work, "fleet.pcapng")
	code, _, stderr := runCmd(t, "read", "--fleet", "--socket", sock, q, "-w", out)
	if code != 0 || !regexp.MustCompile(`(?m)^  s2 +complete `).MatchString(stderr) || strings.Contains(stderr, "failed") {
		t.Errorf("stenod read --fleet: exit %d\n%s", code, stderr)
	}

	// Sensor 2 killed once the answer has started: the client reads the
	// first bytes, and the fleet has read no more of s2 than the socket
	// buffers hold.
	got, sum = askFleet(func(r io.Reader) ([]fleetPkt, error) {
		head := make([]byte, 64<<10)
		if _, err := io.ReadFull(r, head); err != nil {
			return nil, err
		}
		if err := sensors[1].d.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		return readFleetAnswer(io.MultiReader(bytes.NewReader(head), r))
	})
	<-sensors[1].d.done
	sensors[1].d.done <- nil
	t.Logf("after the kill: %d packets; sensors %+v", len(got), sum.Sensors)
	if !slices.Equal(sum.Missing, []string{"s2"}) || sum.Sensors[1].Status != fleet.StatusFailed || sum.Sensors[1].Error == "" {
		t.Fatalf("summary after the kill: %+v", sum)
	}
	bySensor := map[string][]fleetPkt{}
	for _, p := range got {
		name, _, _ := strings.Cut(p.iface, "/")
		bySensor[name] = append(bySensor[name], p)
	}
	for _, name := range []string{"s1", "s3"} {
		if !slices.Equal(bySensor[name], per[name]) {
			t.Errorf("%s: %d packets, want its whole answer of %d", name, len(bySensor[name]), len(per[name]))
		}
	}
	if n := len(bySensor["s2"]); n == 0 || n >= len(per["s2"]) || !slices.Equal(bySensor["s2"], per["s2"][:n]) {
		t.Errorf("s2: %d packets, want a beginning of its %d", n, len(per["s2"]))
	}
	if !slices.IsSortedFunc(got, func(a, b fleetPkt) int { return int(a.ts - b.ts) }) {
		t.Error("the answer after the kill is not in time order")
	}

	code, _, stderr = runCmd(t, "read", "--fleet", "--socket", sock, q, "-w", out)
	if code != exitMissing || !strings.Contains(stderr, "lacks sensors s2") {
		t.Errorf("stenod read --fleet with s2 dead: exit %d, want %d\n%s", code, exitMissing, stderr)
	}
}

// TestReadFleetWithAlert: --fleet and --alert together are refused before
// anything is asked (the fleet answers queries, not events).
func TestReadFleetWithAlert(t *testing.T) {
	code, _, stderr := runCmd(t, "read", "--fleet", "--alert", "event.json", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 2 || !strings.Contains(stderr, "--fleet goes without --alert") {
		t.Errorf("exit %d, %q: want 2 and the usage error", code, stderr)
	}
}
