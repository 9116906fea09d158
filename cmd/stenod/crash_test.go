package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/pcapio"
)

// crashFrame is a UDP frame to port 7000 whose payload carries its sequence
// number twice, so a corrupt packet is told apart from a real one.
func crashFrame(seq uint32) []byte {
	f := make([]byte, 14+20+8+16+int(seq%200))
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	copy(ip[12:16], []byte{10, 198, 0, 2})
	copy(ip[16:20], []byte{10, 198, 0, 1})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 7000)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint32(udp[8:], seq)
	binary.BigEndian.PutUint32(udp[12:], ^seq)
	for i := 16; i < len(udp); i++ {
		udp[i] = byte(seq) + byte(i)
	}
	return f
}

func crashBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "stenod")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// crashAnswer queries a running stenod for every test frame and returns
// their sequence numbers; a packet that is not one of ours fails the test.
func crashAnswer(t *testing.T, addr string, sent map[uint32]bool) map[uint32]int {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/query", "text/plain", strings.NewReader("udp and port 7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("query: %v %d %s", err, resp.StatusCode, body)
	}
	r, err := pcapio.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]int{}
	var p pcapio.Packet
	for {
		if err := r.Next(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("answer: %v", err)
		}
		if len(p.Data) < 14+20+8+8 {
			t.Fatalf("short packet in the answer: %x", p.Data)
		}
		seq := binary.BigEndian.Uint32(p.Data[42:])
		if !sent[seq] || !bytes.Equal(p.Data, crashFrame(seq)) {
			t.Fatalf("corrupt or unknown packet in the answer (seq %d): %x", seq, p.Data)
		}
		got[seq]++
	}
	return got
}

type crashDaemon struct {
	cmd  *exec.Cmd
	addr string
	log  *testutil.SyncBuffer
}

func startCrashDaemon(t *testing.T, bin, iface, spoolDir, pinRoot string) *crashDaemon {
	t.Helper()
	d := &crashDaemon{addr: freeAddr(t), log: &testutil.SyncBuffer{}}
	d.cmd = exec.Command(bin, "run", "--iface", iface, "--spool", spoolDir, "--pin-root", pinRoot,
		"--listen", d.addr, "--capture", "xdp", "--umem-frames", "4096",
		// Stay root: the spool is a test's private temporary directory.
		"--user", "")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + d.addr + "/healthz"); err == nil {
			resp.Body.Close()
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("stenod did not come up:\n%s", d.log)
	return nil
}

// TestKill9Recovery kills a capturing stenod with SIGKILL at random points,
// restarts it, and checks that every packet that was queryable before the
// kill is still returned, exactly once, and that no query ever returns a
// packet that was not sent as it was sent.
func TestKill9Recovery(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("restarts a daemon 20 times")
	}
	cycles := testutil.EnvInt(t, "STENOD_SOAK_CYCLES", 20)
	bin := crashBinary(t)
	v := testutil.NewVeth(t)
	pinRoot := testutil.BPFFS(t)
	spoolDir := t.TempDir()
	s := testutil.NewSender(t, v)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 9))
	t.Logf("%d cycles, seed %d", cycles, seed)

	sent := map[uint32]bool{}
	durable := map[uint32]bool{} // queryable before some kill: must survive
	var seq uint32
	for c := range cycles {
		d := startCrashDaemon(t, bin, v.Host, spoolDir, pinRoot)
		got := crashAnswer(t, d.addr, sent)
		for q := range durable {
			if got[q] != 1 {
				t.Fatalf("cycle %d: packet %d returned %d times after restart\n%s", c, q, got[q], d.log)
			}
		}
		for q, n := range got {
			if n != 1 {
				t.Fatalf("cycle %d: packet %d returned %d times", c, q, n)
			}
		}
		// A burst, then wait until all of it is queryable: from then on it
		// was flushed and must survive any kill.
		burst := 5 + rng.IntN(30)
		var ids []uint32
		for range burst {
			seq++
			sent[seq] = true
			ids = append(ids, seq)
			s.Send(t, crashFrame(seq))
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			got = crashAnswer(t, d.addr, sent)
			all := true
			for _, q := range ids {
				all = all && got[q] == 1
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: burst not queryable within 5 s\n%s", c, d.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, q := range ids {
			durable[q] = true
		}
		// More packets, and the kill somewhere in or after them.
		for range rng.IntN(40) {
			seq++
			sent[seq] = true
			s.Send(t, crashFrame(seq))
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = d.cmd.Wait()
	}
	// A last start repairs what the last kill left and answers.
	d := startCrashDaemon(t, bin, v.Host, spoolDir, pinRoot)
	got := crashAnswer(t, d.addr, sent)
	for q := range durable {
		if got[q] != 1 {
			t.Fatalf("final: packet %d returned %d times", q, got[q])
		}
	}
	t.Logf("%d packets sent, %d queryable before a kill, %d returned at the end", len(sent), len(durable), len(got))
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("clean stop: %v\n%s", err, d.log)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no clean stop within 20 s\n%s", d.log)
	}
	ents, _ := os.ReadDir(filepath.Join(pinRoot, v.Host))
	if len(ents) != 0 {
		t.Fatalf("pins left after a clean stop: %v", ents)
	}
	// Every file is sealed after the clean stop.
	pcaps, _ := filepath.Glob(filepath.Join(spoolDir, "*.pcap"))
	for _, p := range pcaps {
		if _, err := os.Stat(strings.TrimSuffix(p, ".pcap") + ".idx"); err != nil {
			t.Errorf("%s has no sealed index: %v", p, err)
		}
	}
}
