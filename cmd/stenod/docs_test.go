//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/config"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/ipfix"
	"github.com/stenod/stenod/xdp"
)

// TestDocs checks what README.md and docs/*.md name against the code, so
// that the docs cannot teach a key, a flag or a metric that does not
// exist. The conventions it relies on (write the docs so):
//
//   - A configuration key is written in backticks as section.key
//     (`spool.max_bytes`), alone in its code span; `capture.afpacket_*`
//     names every key it matches, at least one. A span of that form that
//     is not a key must be a field of the /v1/stats answer
//     (`spool.retention`). Spans with capitals are Go (`spool.Config`).
//   - docs/configuration.md's key tables (| `key` | `default` | `--flag` |
//     meaning |) list every key, in the order of the file, with its
//     default as stenod run --print-config writes it and the stenod run
//     flag that sets it, if any; its ```json blocks are configuration
//     files, which must load.
//   - A flag after `stenod COMMAND` (in a code span or a code block, up to
//     a pipe, ;, && or a # comment) is a flag of COMMAND. A code span that
//     starts with a flag (`--max-bytes`) is a flag of some stenod command,
//     unless it is another tool's and listed in foreignFlags.
//   - A metric is written stenod_SUBSYSTEM_name, anywhere; stenod_xdp (one
//     underscore) is the XDP program, not a metric. {a,b} right after an _
//     lists alternatives (stenod_spool_{files,bytes}); any other {...} is a
//     label set and ends the name. A name ending in _ or _* is a prefix
//     (stenod_xsk_*), which some metric must have. Every other name must be
//     one that /metrics serves: the test starts the API with the daemon's
//     registry on a spool with packets and scrapes it; capture's metrics,
//     which exist only while capture runs, are taken from their
//     descriptions.
func TestDocs(t *testing.T) {
	docs := readDocs(t)
	stats, metrics := scrapeAPI(t)
	flags := commandFlags(t)

	t.Run("keys", func(t *testing.T) {
		var names []string
		sections := map[string]bool{}
		for _, k := range config.Keys() {
			names = append(names, k.Name)
			if sec, _, ok := strings.Cut(k.Name, "."); ok {
				sections[sec] = true
			}
		}
		keyLike := regexp.MustCompile(`^([a-z]+)\.[a-z0-9_*]+$`)
		checked := 0
		for _, d := range docs {
			for _, s := range d.spans {
				m := keyLike.FindStringSubmatch(s.text)
				if m == nil || !sections[m[1]] {
					continue
				}
				checked++
				if strings.Contains(s.text, "*") {
					if !slices.ContainsFunc(names, func(n string) bool { ok, _ := path.Match(s.text, n); return ok }) {
						t.Errorf("%s: %s matches no configuration key", s.at, s.text)
					}
				} else if !slices.Contains(names, s.text) && !stats[s.text] {
					t.Errorf("%s: %s is neither a configuration key nor a field of /v1/stats", s.at, s.text)
				}
			}
		}
		if checked < 100 {
			t.Errorf("only %d keys found in the docs: is the convention still followed?", checked)
		}
	})

	t.Run("configuration.md", func(t *testing.T) {
		d := docs["docs/configuration.md"]
		row := regexp.MustCompile("^\\| `([a-z_.]+)` \\| `([^`]*)` \\| (?:`--([a-z-]+)`)? *\\|")
		flagOf := map[string]string{}
		for _, f := range runFlags {
			flagOf[f.key] = f.flag
		}
		keys := config.Keys()
		i := 0
		for _, l := range d.lines {
			m := row.FindStringSubmatch(l.text)
			if m == nil {
				continue
			}
			if i >= len(keys) || m[1] != keys[i].Name {
				want := "no more keys"
				if i < len(keys) {
					want = keys[i].Name
				}
				t.Errorf("%s: key %s, want %s: the tables list every key in the order of the file", l.at, m[1], want)
				return
			}
			if m[2] != keys[i].Default {
				t.Errorf("%s: %s's default is %s, not %s", l.at, m[1], keys[i].Default, m[2])
			}
			if m[3] != flagOf[m[1]] {
				t.Errorf("%s: %s's flag is %q, not %q", l.at, m[1], flagOf[m[1]], m[3])
			}
			i++
		}
		for _, k := range keys[i:] {
			t.Errorf("docs/configuration.md does not list key %s", k.Name)
		}
		for _, b := range d.json {
			if _, err := config.Parse([]byte(b.text), b.at); err != nil {
				t.Errorf("%s: the example does not load: %v", b.at, err)
			}
		}
		if len(d.json) == 0 {
			t.Error("docs/configuration.md has no example file")
		}
	})

	t.Run("flags", func(t *testing.T) {
		var cmds []string
		for c := range flags {
			cmds = append(cmds, regexp.QuoteMeta(c))
		}
		after := regexp.MustCompile(`\bstenod (` + strings.Join(cmds, "|") + `)\b`)
		flag := regexp.MustCompile(`(?:^|[\s\[])--([a-z][a-z0-9_-]*)`)
		checked := 0
		for _, d := range docs {
			for _, s := range slices.Concat(d.spans, d.code) {
				if m := flag.FindStringSubmatch(s.text); m != nil && strings.HasPrefix(s.text, "--") {
					checked++
					if !slices.ContainsFunc(slices.Collect(maps.Values(flags)), func(fs []string) bool { return slices.Contains(fs, m[1]) }) && foreignFlags[m[1]] == "" {
						t.Errorf("%s: --%s is no stenod command's flag", s.at, m[1])
					}
				}
				for _, loc := range after.FindAllStringSubmatchIndex(s.text, -1) {
					cmd := s.text[loc[2]:loc[3]]
					for _, m := range flag.FindAllStringSubmatch(commandLine(s.text[loc[1]:]), -1) {
						checked++
						if !slices.Contains(flags[cmd], m[1]) {
							t.Errorf("%s: stenod %s has no flag --%s (%s)", s.at, cmd, m[1], s.text)
						}
					}
				}
			}
		}
		if checked < 50 {
			t.Errorf("only %d flags found in the docs: is the convention still followed?", checked)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		checked := 0
		for _, d := range docs {
			for _, l := range d.lines {
				for _, name := range metricNames(l.text) {
					checked++
					if prefix, ok := strings.CutSuffix(strings.TrimSuffix(name, "*"), "_"); ok || strings.HasSuffix(name, "*") {
						if !slices.ContainsFunc(metrics, func(m string) bool { return strings.HasPrefix(m, prefix+"_") }) {
							t.Errorf("%s: no metric starts with %s", l.at, name)
						}
					} else if !slices.Contains(metrics, name) {
						t.Errorf("%s: /metrics does not serve %s", l.at, name)
					}
				}
			}
		}
		if checked < 50 {
			t.Errorf("only %d metrics found in the docs: is the convention still followed?", checked)
		}
	})
}

// foreignFlags are other tools' flags that the docs write as a code span
// of their own, with the tool.
var foreignFlags = map[string]string{
	"qdisc-path":   "trafgen",
	"no-sock-mem":  "trafgen",
	"rate":         "trafgen",
	"gap":          "trafgen",
	"filter":       "stenotype",
	"threads":      "stenotype",
	"uid":          "stenotype",
	"blockage_sec": "stenotype",
}

// commandLine cuts s at the end of the command it starts: a pipe, ;, &&
// or a comment, outside brackets ([--socket PATH | --server URL] is one
// command's usage).
func commandLine(s string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '[':
			depth++
		case c == ']':
			depth--
		case depth > 0:
		case c == ';', c == '#' && (i == 0 || s[i-1] == ' '),
			c == '|' && strings.HasPrefix(s[i:], "| ") && i > 0 && s[i-1] == ' ',
			c == '&' && strings.HasPrefix(s[i:], "&&"):
			return s[:i]
		}
	}
	return s
}

// metricNames returns the metric names written in s (see TestDocs).
func metricNames(s string) []string {
	var out []string
	isName := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' }
	for i := 0; i < len(s); i++ {
		if !strings.HasPrefix(s[i:], "stenod_") || i > 0 && (isName(s[i-1]) || s[i-1] == '/') {
			continue
		}
		names := []string{""}
		j := i
	scan:
		for ; j < len(s); j++ {
			switch c := s[j]; {
			case isName(c) || c == '*':
				for k := range names {
					names[k] += string(c)
				}
			case c == '{' && s[j-1] == '_':
				end := strings.IndexByte(s[j:], '}')
				if end < 0 {
					break scan
				}
				var alts []string
				for _, n := range names {
					for _, a := range strings.Split(s[j+1:j+end], ",") {
						alts = append(alts, n+a)
					}
				}
				names, j = alts, j+end
			default:
				break scan
			}
		}
		if strings.Count(names[0], "_") >= 2 {
			out = append(out, names...)
		}
		i = j
	}
	return out
}

// text is a piece of a doc and where it is.
type text struct {
	at   string // "docs/operations.md:12"
	text string
}

type mdoc struct {
	lines []text // every line
	spans []text // inline code spans (a span may cross a line break)
	code  []text // the lines of code blocks, fenced or indented
	json  []text // ```json blocks, at their first line
}

// readDocs reads README.md and docs/*.md.
func readDocs(t *testing.T) map[string]*mdoc {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(files) < 5 {
		t.Fatalf("docs: %v %v", files, err)
	}
	docs := map[string]*mdoc{}
	for _, f := range append(files, "../../README.md") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(f, "../../")
		docs[name] = parseDoc(name, string(data))
	}
	return docs
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func parseDoc(name, s string) *mdoc {
	d := &mdoc{}
	var para []text // prose lines since the last blank line
	flush := func() {
		if len(para) == 0 {
			return
		}
		// Join the paragraph's lines, keeping offsets, to find spans
		// that cross line breaks; a table row is a paragraph of its own.
		var joined strings.Builder
		starts := []int{}
		for _, l := range para {
			starts = append(starts, joined.Len())
			joined.WriteString(l.text + " ")
		}
		for _, m := range codeSpan.FindAllStringSubmatchIndex(joined.String(), -1) {
			k, _ := slices.BinarySearch(starts, m[0]+1)
			d.spans = append(d.spans, text{para[k-1].at, strings.Join(strings.Fields(joined.String()[m[2]:m[3]]), " ")})
		}
		para = nil
	}
	var fence *text // the open fenced block: its first line and info string
	var block strings.Builder
	prevBlank := true
	for i, line := range strings.Split(s, "\n") {
		l := text{fmt.Sprintf("%s:%d", name, i+1), line}
		d.lines = append(d.lines, l)
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			flush()
			if fence == nil {
				fence = &text{l.at, strings.TrimPrefix(trimmed, "```")}
				block.Reset()
			} else {
				if fence.text == "json" {
					d.json = append(d.json, text{fence.at, block.String()})
				}
				fence = nil
			}
		case fence != nil:
			d.code = append(d.code, l)
			block.WriteString(line + "\n")
		case trimmed == "":
			flush()
		case (strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")) && prevBlank && !strings.HasPrefix(trimmed, "- "):
			flush()
			d.code = append(d.code, l)
			continue // prevBlank stays: the block goes on
		case strings.HasPrefix(line, "|"):
			flush()
			para = append(para, l)
			flush()
		default:
			para = append(para, l)
		}
		prevBlank = trimmed == ""
	}
	flush()
	return d
}

// commandFlags returns the flags of every command, from its -h.
func commandFlags(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	def := regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)
	for _, c := range commands() {
		args := []string{c.name, "-h"}
		if c.name == "certs" {
			args = []string{"certs", "init", "-h"}
		}
		if c.name == "version" {
			out[c.name] = nil
			continue
		}
		code, _, stderr := runCmd(t, args...)
		if code != 2 {
			t.Fatalf("stenod %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		name := strings.Join(args[:len(args)-1], " ")
		for _, m := range def.FindAllStringSubmatch(stderr, -1) {
			out[name] = append(out[name], m[1])
		}
		if len(out[name]) == 0 {
			t.Fatalf("stenod %s -h lists no flags:\n%s", name, stderr)
		}
	}
	return out
}

// docsCutoff is a cutoff with one rule on one interface, so that the
// cutoff's metrics and /v1/stats figures exist.
type docsCutoff struct{}

func (docsCutoff) SuspendCutoff(func(k *flow.Key) bool) (int, error) { return 0, nil }
func (docsCutoff) Stats() capture.Stats                              { return capture.Stats{} }
func (docsCutoff) CutoffStats() []capture.InterfaceCutoff {
	return []capture.InterfaceCutoff{{Name: "eth1", CutoffStats: xdp.CutoffStats{Rules: []xdp.RuleCut{{Rule: 0, Name: "port 443"}, {Rule: -1}}}}}
}

// scrapeAPI serves the API with the daemon's registry on a spool with
// packets, over a Unix socket, and returns the paths of the /v1/stats
// answer ("spool.dirs[].retention") and the names of every metric
// /metrics serves, capture's included.
func scrapeAPI(t *testing.T) (stats map[string]bool, metrics []string) {
	t.Helper()
	sp, _, _ := testutil.HeldSpool(t, 2, 1)
	var c capture.Capture // not started: its metrics exist only while it runs
	// An exporter that never runs: its counters exist, at 0, per collector.
	x, err := ipfix.New(ipfix.Config{Collectors: []string{"udp://127.0.0.1:9"}, ActiveTimeout: time.Minute, IdleTimeout: time.Minute,
		TemplateRefresh: time.Minute, EnterpriseNumber: ipfix.DefaultEnterpriseNumber},
		ipfix.Options{Indexes: func(d []ipfix.LiveIndex) []ipfix.LiveIndex { return d }})
	if err != nil {
		t.Fatal(err)
	}
	reg := metricsRegistry(&c, x)
	srv, err := api.New(api.DefaultConfig(), api.Options{Spool: sp, Registry: reg, Logger: slog.New(slog.DiscardHandler), Cutoff: docsCutoff{}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	client := &http.Client{Transport: api.UnixTransport(sock)}
	get := func(path string) []byte {
		resp, err := client.Get("http://stenod" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v\n%s", path, resp.StatusCode, err, body)
		}
		return body
	}

	var answer any
	if err := json.Unmarshal(get("/v1/stats"), &answer); err != nil {
		t.Fatal(err)
	}
	stats = map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				stats[prefix+k] = true
				walk(prefix+k+".", x)
			}
		case []any:
			for _, x := range v {
				walk(strings.TrimSuffix(prefix, ".")+"[].", x)
			}
		}
	}
	walk("", answer)

	get("/healthz") // so that the request metrics have a series
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllSubmatch(get("/metrics"), -1) {
		metrics = append(metrics, string(m[1]))
	}
	descs := make(chan *prometheus.Desc)
	go func() {
		for _, col := range c.Collectors() {
			col.Describe(descs)
		}
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %v", d)
		}
		metrics = append(metrics, m[1])
	}
	if !slices.Contains(metrics, "stenod_xsk_rx_ring_full_total") || !slices.Contains(metrics, "stenod_spool_oldest_packet_timestamp_seconds") ||
		!slices.Contains(metrics, "stenod_api_connections_limit") || !slices.Contains(metrics, "stenod_cutoff_cut_bytes_total") {
		t.Fatalf("metrics missing: %v", metrics)
	}
	return stats, metrics
}
