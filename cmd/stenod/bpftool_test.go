//go:build linux

package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// recipeMarker precedes, in docs/*.md, a shell block whose every command
// TestBpftoolRecipes runs against a live sensor.
const recipeMarker = "<!-- bpftool recipes:"

// recipe is one documented command: a line, or several joined by a
// trailing pipe or backslash, without comments.
type recipe struct {
	doc, cmd string
}

// docRecipes extracts the commands of every marked block of docs/*.md.
func docRecipes(t *testing.T) []recipe {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("docs: %v", err)
	}
	var out []recipe
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			if !strings.HasPrefix(lines[i], recipeMarker) {
				continue
			}
			if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
				t.Fatalf("%s:%d: the marker is not right above a code block", f, i+1)
			}
			cmd := ""
			for i += 2; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				l := strings.TrimSpace(stripComment(lines[i]))
				if l == "" {
					continue
				}
				cmd += l
				if strings.HasSuffix(l, "|") || strings.HasSuffix(l, "\\") {
					cmd = strings.TrimSuffix(cmd, "\\") + " "
					continue
				}
				out = append(out, recipe{doc: filepath.Base(f), cmd: cmd})
				cmd = ""
			}
		}
	}
	return out
}

// stripComment cuts a shell comment off line: a # at the start or after a
// blank, outside quotes.
func stripComment(line string) string {
	var quote rune
	for i, c := range line {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i]
		}
	}
	return line
}

// TestBpftoolRecipes runs every command of the marked blocks of the docs
// (bpftool and jq recipes, and what stands beside them) against a sensor
// capturing a veth with the XDP program, as root: each must succeed, say
// nothing on stderr that looks like an error, and a jq recipe must print
// something other than null. A recipe added to a marked block is tested
// too; TestDocRecipesFound checks that the blocks are found.
func TestBpftoolRecipes(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []string{"bpftool", "jq", "ip", "ss"} {
		testutil.RequireCommand(t, c)
	}
	recipes := docRecipes(t)
	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	work := reachableTempDir(t)
	pinRoot := bpffsDir(t, "stenod-recipes-test")
	sock := filepath.Join(work, "run", "stenod.sock")
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", "xdp", "--spool", filepath.Join(work, "spool"),
		"--pin-root", pinRoot, "--socket", sock, "--user", "")
	tr := api.UnixTransport(sock)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	waitHealthy(t, d, client, "http://stenod")
	s := testutil.NewSender(t, v)
	for i := range 200 {
		s.Send(t, crashFrame(uint32(i)))
	}
	waitFor(t, d, "packets stored", 30*time.Second, func() error {
		if n, err := queryPacketsWith(client, "http://stenod", "udp and port 7000"); err != nil || n < 200 {
			return errors.New("not yet")
		}
		return nil
	})

	iface := regexp.MustCompile(`\beth[0-9]\b`)
	// The recipes' variables (P=...), for the commands after them.
	var vars []string
	for _, r := range recipes {
		cmd := strings.ReplaceAll(r.cmd, "/sys/fs/bpf/stenod/", pinRoot+"/")
		cmd = iface.ReplaceAllString(cmd, v.Host)
		// A pager is for people: here its input is the output.
		cmd = strings.ReplaceAll(cmd, "| less", "| cat")
		if strings.HasPrefix(cmd, "stenod ") {
			cmd = bin + " " + strings.TrimPrefix(cmd, "stenod ") + " " + v.Host
		}
		if strings.Contains(cmd, "=") && !strings.Contains(cmd, " ") {
			// An assignment (P=...): it holds for the commands after it.
			name, val, _ := strings.Cut(cmd, "=")
			if name == "" || strings.ContainsAny(val, "$`") {
				t.Fatalf("%s: %s: not a plain assignment", r.doc, r.cmd)
			}
			vars = append(vars, cmd)
			continue
		}
		var stdout, stderr bytes.Buffer
		c := exec.Command("bash", "-o", "pipefail", "-c", cmd)
		c.Env = append(os.Environ(), vars...)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		out := stdout.String()
		switch {
		case err != nil:
			t.Errorf("%s: %s\n%v\n%s%s", r.doc, r.cmd, err, out, stderr.String())
		case regexp.MustCompile(`(?i)error|not supported|usage:`).MatchString(stderr.String()):
			t.Errorf("%s: %s\nstderr: %s", r.doc, r.cmd, stderr.String())
		case strings.Contains(cmd, "jq") && (strings.TrimSpace(out) == "" || strings.Contains(out, "null")):
			t.Errorf("%s: %s\nprints %q", r.doc, r.cmd, out)
		}
		if strings.Contains(r.cmd, "$P/stats") && strings.Contains(cmd, "jq") && !strings.Contains(out, `{"stat":0,"total":`) {
			t.Errorf("%s: %s\ndoes not sum the packet counter: %q", r.doc, r.cmd, out)
		}
		if strings.Contains(r.cmd, "sort_by") && !strings.Contains(out, `"packets":`) {
			t.Errorf("%s: %s\nlists no flow: %q", r.doc, r.cmd, out)
		}
		t.Logf("%s: %s: ok (%d bytes)", r.doc, r.cmd, len(out))
	}
	d.stop(t)
}

// TestDocRecipesFound: the marked blocks are found, with the recipes the
// issue named (bpftool -j ... | jq), so a marker lost in an edit fails.
func TestDocRecipesFound(t *testing.T) {
	rs := docRecipes(t)
	docs := map[string]int{}
	jq := 0
	for _, r := range rs {
		docs[r.doc]++
		if strings.Contains(r.cmd, "bpftool -j") && strings.Contains(r.cmd, "| jq") {
			jq++
		}
		if strings.HasSuffix(r.cmd, "|") {
			t.Errorf("%s: %q ends in a pipe", r.doc, r.cmd)
		}
	}
	if docs["bpf.md"] < 10 || docs["operations.md"] < 4 || jq < 4 {
		t.Errorf("recipes found: %v, %d bpftool|jq ones: %v", docs, jq, rs)
	}
}
