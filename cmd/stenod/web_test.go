package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// screenshotsEnv, set to 1, makes TestWebPage write its screenshots to
// docs/img/ (the page's pictures in the docs): off by default, so that a
// test run leaves the tree as it was.
const screenshotsEnv = "STENOD_SCREENSHOTS"

// chromiumPath finds Debian's chromium (or the one STENOD_CHROMIUM names).
// Without one the test is skipped, except in CI (CI=true), where a
// missing browser must not pass for a passing test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STENOD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH: scripts/provision.sh installs it (apt package chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); CI=true makes this a failure")
	return ""
}

// webPackets reads a pcap or pcapng answer as comparable lines: time,
// lengths, interface name and bytes of each packet.
func webPackets(t *testing.T, data []byte) []string {
	t.Helper()
	r, err := pcapio.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var out []string
	var p pcapio.Packet
	for {
		err := r.Next(&p)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("answer packet %d: %v", len(out), err)
		}
		iface := ""
		if r.IsPcapng() {
			iface = r.Interfaces()[p.Interface].Name
		}
		out = append(out, fmt.Sprintf("%d %d/%d %s %x", p.Timestamp, p.CapLen, p.OrigLen, iface, p.Data))
	}
}

// TestWebPage drives the page at / in headless chromium against the API
// stenod serves, over a spool of the demo tap's sample traffic stored by
// `stenod import`: a query fills the flow table and the histogram, a flow's
// packets open with one packet's bytes in hex, the whole answer downloads
// as pcapng and holds exactly what `stenod query` returns, a selected
// flow downloads too, and a bad query shows the parser's message with a
// caret under the offending token. STENOD_SCREENSHOTS=1 saves screenshots
// to docs/img/.
func TestWebPage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := chromiumPath(t)

	// The demo tap's sample captures, in two streams, so that the flows
	// come from two interfaces.
	samples, err := filepath.Glob("../../internal/demotap/samples/*.pcapng")
	if err != nil || len(samples) < 4 {
		t.Fatalf("demo samples: %v %v", samples, err)
	}
	dir := t.TempDir()
	half := len(samples) / 2
	for i, files := range [][]string{samples[:half], samples[half:]} {
		args := append([]string{"import", "--spool", dir, "--stream", fmt.Sprintf("demo%d", i)}, files...)
		if code, _, stderr := runCmd(t, args...); code != 0 {
			t.Fatalf("import: exit %d: %s", code, stderr)
		}
	}

	// The API as `stenod run` serves it, over that spool, on loopback.
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{dir}
	cfg.ReadOnly = true
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	acfg := api.DefaultConfig()
	acfg.Listen = "127.0.0.1:0"
	srv, err := api.New(acfg, api.Options{Spool: sp, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()

	downloads := t.TempDir()
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1680, 1000),
	)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	// wait polls a JavaScript predicate until it holds.
	wait := func(what, predicate string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v\nstatus: %s", what, predicate, err, eval(`document.getElementById("status").textContent`))
		}
	}
	shot := func(name string) {
		t.Helper()
		if os.Getenv(screenshotsEnv) != "1" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join("..", "..", "docs", "img", name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", p)
	}

	// The header: retention from /v1/stats.
	do("open the page", chromedp.Navigate(base+"/"))
	// A JavaScript error on the page fails the test; the browser's note
	// of the bad query's 400 answer does not.
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == "error" && !strings.Contains(m.Text, "status of 400") {
				t.Errorf("page console: %s: %s", m.Type, m.Text)
			}
		}
	}()

	wait("the header", `document.getElementById("st-oldest").textContent.endsWith("UTC")`)
	// The first search (everything) ends with its time in the status line.
	wait("the first search", `/ · \d+ ms$/.test(document.getElementById("status").textContent)`)
	// typeQuery types text into the emptied query box and searches.
	typeQuery := func(text string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { const q = document.getElementById("q"); q.value = ""; q.focus(); })()`)); err != nil {
			t.Fatal(err)
		}
		do("type "+text, chromedp.SendKeys(chromedp.CSS("#q"), text), chromedp.Click(chromedp.CSS("#run")))
	}

	// A query: flows and histogram.
	const text = "tcp or udp"
	typeQuery(text)
	wait("the search", `document.getElementById("status").textContent.startsWith("tcp or udp · ")`)
	wait("flow rows", `document.querySelectorAll("#flows tbody tr").length > 0`)
	wait("histogram bars", `document.querySelectorAll("#hist svg rect.bar-p").length > 0 && document.querySelectorAll("#hist svg rect.bar-b").length > 0`)
	rows := eval(`String(document.querySelectorAll("#flows tbody tr").length)`)
	info := eval(`document.getElementById("flows-info").textContent`)
	ifaces := eval(`[...new Set([...document.querySelectorAll("#flows tbody tr td:nth-child(13)")].map(c => c.textContent))].sort().join(",")`)
	t.Logf("%s rows on the first page, %s; interfaces %s; histogram: %s", rows, info, ifaces,
		eval(`document.getElementById("hist-info").textContent`))
	if ifaces != "demo0,demo1" {
		t.Errorf("interfaces in the table: %q", ifaces)
	}
	if h := eval(`location.hash`); !strings.Contains(h, "q=tcp+or+udp") {
		t.Errorf("the URL does not hold the query: %q", h)
	}
	shot("web-flows.png")

	// Sort by packets: the column's header says so, the first row has
	// the most.
	do("sort by packets", chromedp.Click(chromedp.CSS(`th[data-sort="packets"]`)))
	wait("sorted by packets", `document.querySelector('th[data-sort="packets"]').getAttribute("aria-sort") === "descending"`)
	wait("rows sorted by packets", `(() => {
		const n = [...document.querySelectorAll("#flows tbody tr td:nth-child(9)")].map(c => Number(c.textContent.replace(/,/g, "")));
		return n.length > 1 && n.every((v, i) => i === 0 || v <= n[i-1]);
	})()`)

	// A flow's packets, and one packet's bytes.
	do("open a flow", chromedp.Click(chromedp.CSS("#flows tbody tr:first-child td:nth-child(2)")))
	wait("packet rows", `document.querySelectorAll("#packets tbody tr").length > 0`)
	want := eval(`document.querySelector("#flows tbody tr:first-child td:nth-child(9)").textContent.replace(/,/g, "")`)
	got := eval(`String(document.querySelectorAll("#packets tbody tr").length)`)
	if want != got && !(got == "100" && len(want) > 2) {
		t.Errorf("the flow has %s packets, its list %s", want, got)
	}
	do("open a packet", chromedp.Click(chromedp.CSS("#packets tbody tr:first-child")))
	wait("the hex view", `/\n0000  [0-9a-f]{2} /.test(document.getElementById("hex").textContent)`)
	t.Logf("packet: %s", strings.SplitN(eval(`document.getElementById("hex").textContent`), "\n\n", 2)[0])
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`document.getElementById("packets-section").scrollIntoView()`)); err != nil {
		t.Fatal(err)
	}
	shot("web-packets.png")

	// Download the whole answer as pcapng: exactly what stenod query says.
	if _, err := chromedp.Run(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		on := true
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: &on})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	download := func(sel string) []byte {
		t.Helper()
		progress := chromedp.Events(ctx, browser.DownloadProgress)
		do("download "+sel, chromedp.Click(chromedp.CSS(sel)))
		for ev, err := range progress {
			if err != nil {
				t.Fatalf("download %s: %v", sel, err)
			}
			switch ev.State {
			case browser.DownloadProgressStateCompleted:
				data, err := os.ReadFile(filepath.Join(downloads, ev.GUID))
				if err != nil {
					t.Fatal(err)
				}
				return data
			case browser.DownloadProgressStateCanceled:
				t.Fatalf("download %s cancelled", sel)
			}
		}
		t.Fatalf("download %s: no end", sel)
		return nil
	}
	href := eval(`document.getElementById("dl-pcapng").getAttribute("href")`)
	u, err := url.Parse(href)
	if err != nil || u.Path != "/v1/pcap" || u.Query().Get("format") != "pcapng" {
		t.Fatalf("download link %q", href)
	}
	whole := download("#dl-pcapng")
	ref := filepath.Join(t.TempDir(), "ref.pcapng")
	if code, _, stderr := runCmd(t, "query", "--spool", dir, "--format", "pcapng", "-w", ref, u.Query().Get("q")); code != 0 {
		t.Fatalf("stenod query: exit %d: %s", code, stderr)
	}
	refData, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := webPackets(t, whole), webPackets(t, refData); !slices.Equal(g, w) {
		t.Errorf("the page's pcapng: %d packets, stenod query %q: %d", len(g), u.Query().Get("q"), len(w))
	} else {
		t.Logf("downloaded %d packets (%d bytes), as stenod query %q", len(g), len(whole), u.Query().Get("q"))
	}
	// The histogram counted the same packets, from the index.
	if n := eval(`document.querySelector("#hist svg").getAttribute("aria-label").match(/: (\d+) packets/)[1]`); n != strconv.Itoa(len(webPackets(t, refData))) {
		t.Errorf("histogram: %s packets, the answer %d", n, len(webPackets(t, refData)))
	}

	// Select the first flow and download its packets, both directions.
	do("select a flow", chromedp.Click(chromedp.CSS("#flows tbody tr:first-child input[type=checkbox]")))
	wait("a selection", `document.getElementById("sel-count").textContent === "1"`)
	selHref := eval(`document.getElementById("dl-sel-pcap").getAttribute("href")`)
	su, err := url.Parse(selHref)
	if err != nil || su.Query().Get("q") == "" {
		t.Fatalf("selection link %q", selHref)
	}
	sel := download("#dl-sel-pcap")
	refSel := filepath.Join(t.TempDir(), "sel.pcap")
	if code, _, stderr := runCmd(t, "query", "--spool", dir, "-w", refSel, su.Query().Get("q")); code != 0 {
		t.Fatalf("stenod query %q: exit %d: %s", su.Query().Get("q"), code, stderr)
	}
	refSelData, _ := os.ReadFile(refSel)
	if g, w := webPackets(t, sel), webPackets(t, refSelData); !slices.Equal(g, w) || len(g) < 2 {
		t.Errorf("selected flow: %d packets, stenod query %q: %d", len(g), su.Query().Get("q"), len(w))
	} else {
		t.Logf("selected flow: %d packets for %q", len(g), su.Query().Get("q"))
	}

	// A bad query: the parser's message, the caret under the token.
	typeQuery("port 53 and host 1.2.3")
	wait("the error", `!document.getElementById("query-error").hidden`)
	msg := eval(`document.getElementById("qe-msg").textContent`)
	lines := strings.Split(eval(`document.getElementById("qe-line").textContent`), "\n")
	if !strings.Contains(msg, "host needs an IPv4 or IPv6 address") || len(lines) != 2 ||
		lines[1] != strings.Repeat(" ", len("port 53 and host "))+"^~~~~" {
		t.Errorf("error shown: %q %q", msg, lines)
	}
	if eval(`document.getElementById("q").getAttribute("aria-invalid")`) != "true" {
		t.Error("the query box is not marked invalid")
	}
	shot("web-error.png")

	// A shared URL: the state comes back from the fragment.
	do("open a shared URL", chromedp.Navigate(base+"/#q=udp&sort=first&page=0"))
	wait("the shared view", `document.getElementById("q").value === "udp" && document.querySelectorAll("#flows tbody tr").length > 0 &&
		document.querySelector('th[data-sort="first"]').getAttribute("aria-sort") === "ascending"`)
	if d := eval(`document.getElementById("flows-info").textContent`); d == "" {
		t.Error("no flow count")
	}
}
