package main

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelpCommand: 'stenod help CMD' prints CMD's own usage, the text of
// 'stenod CMD -h', to standard output with status 0, for every command;
// never the list of commands.
func TestHelpCommand(t *testing.T) {
	_, top, _ := runCmd(t, "help")
	if !strings.Contains(top, "commands:") {
		t.Fatalf("stenod help: %q", top)
	}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, "help", c.name)
			if code != 0 || stderr != "" {
				t.Fatalf("stenod help %s: exit %d, stderr %q", c.name, code, stderr)
			}
			if !strings.HasPrefix(out, "usage: stenod "+c.name) || strings.Contains(out, "commands:") {
				t.Errorf("stenod help %s printed:\n%s", c.name, out)
			}
			hcode, hout, herr := runCmd(t, c.name, "-h")
			if hcode != 2 || hout != "" {
				t.Errorf("stenod %s -h: exit %d, stdout %q", c.name, hcode, hout)
			}
			if herr != out {
				t.Errorf("stenod help %s differs from stenod %s -h:\n%s\n---\n%s", c.name, c.name, out, herr)
			}
		})
	}
	for _, args := range [][]string{{"help", "nosuch"}, {"help", "run", "read"}, {"help", "--completion", "zsh"}} {
		if code, out, stderr := runCmd(t, args...); code != 2 || out != "" || !strings.Contains(stderr, "stenod help:") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
	if code, out, _ := runCmd(t, "help", "help"); code != 0 || !strings.HasPrefix(out, "usage: stenod help") {
		t.Errorf("stenod help help: exit %d: %q", code, out)
	}
}

// TestDescribeEveryCommand: the man page and the completion learn every
// command's flags by running it with -h; that must stop before anything
// else happens, with the flags all defined.
func TestDescribeEveryCommand(t *testing.T) {
	for _, c := range commands() {
		u, err := describe(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		u.fs.VisitAll(func(*flag.Flag) { n++ })
		if c.name != "version" && n == 0 {
			t.Errorf("%s: no flags", c.name)
		}
		if !strings.HasPrefix(u.name, c.name) {
			t.Errorf("%s: flag set named %q", c.name, u.name)
		}
	}
}

// TestMan: the manual page has a section per command with every flag, and
// man(1) formats it without a warning.
func TestMan(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1764775200") // 2025-12-03
	code, out, stderr := runCmd(t, "help", "--man")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(out, `.\"`) || !strings.Contains(out, `.TH STENOD 1 "2025-12-03" "stenod `) {
		t.Errorf("header:\n%.300s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "'") {
			t.Errorf("a line starts with a control character: %q", line)
		}
	}
	_, us, err := describeAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if !strings.Contains(out, ".SS \"stenod "+u.name) {
			t.Errorf("no section for %s", u.name)
		}
		for _, f := range flagDocs(u.fs) {
			if !strings.Contains(out, `\fB`+roffEscape(f.option())+`\fR`) {
				t.Errorf("%s: flag %s missing", u.name, f.option())
			}
		}
	}
	man, err := exec.LookPath("man")
	if err != nil {
		t.Skip("no man(1) to format the page with")
	}
	page := filepath.Join(t.TempDir(), "stenod.1")
	if err := os.WriteFile(page, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(man, "--warnings", "-E", "UTF-8", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_DISABLE_SECCOMP=1")
	var warn strings.Builder
	cmd.Stderr = &warn
	text, err := cmd.Output()
	if err != nil || warn.Len() > 0 {
		t.Errorf("man -l: %v: %s", err, warn.String())
	}
	if !strings.Contains(string(text), "--spool directory") {
		t.Errorf("formatted page lacks --spool:\n%s", text)
	}
}

// TestBashCompletion runs the completion script in bash and checks what it
// offers for commands, flags, flag values and operands.
func TestBashCompletion(t *testing.T) {
	code, script, stderr := runCmd(t, "help", "--completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "stenod")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"spooldir", "spoolfile"} {
		if d == "spooldir" {
			err = os.Mkdir(filepath.Join(dir, d), 0o755)
		} else {
			err = os.WriteFile(filepath.Join(dir, d), nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	complete := func(words ...string) string {
		t.Helper()
		// COMP_WORDS as bash splits a line (at "=" too); the last word
		// is the one completed.
		var q []string
		for _, w := range words {
			q = append(q, "'"+w+"'")
		}
		prog := "source " + path + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n_stenod\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", words, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"stenod", "ru"}, "run"},
		{[]string{"stenod", "he"}, "help"},
		{[]string{"stenod", "run", "--rot"}, "--rotate-age\n--rotate-size"},
		{[]string{"stenod", "query", "-"}, "--community-id-seed\n--config\n--format\n--limit-bytes\n--limit-packets\n--spool\n-w"},
		{[]string{"stenod", "query", "--spool", "spool"}, "spooldir"},
		{[]string{"stenod", "query", "--spool", "=", "spool"}, "spooldir"},
		{[]string{"stenod", "query", "-w", "spoolf"}, "spoolfile"},
		{[]string{"stenod", "import", "--spool", "spooldir", "spoolf"}, "spoolfile"},
		{[]string{"stenod", "certs", "i"}, "init"},
		{[]string{"stenod", "certs", "init", "--g"}, "--group"},
		{[]string{"stenod", "certs", "init", "spool"}, "spooldir"},
		{[]string{"stenod", "help", "cer"}, "certs"},
		{[]string{"stenod", "help", "--completion", ""}, "bash"},
		{[]string{"stenod", "run", "--demo", "--spo"}, "--spool"},
		{[]string{"stenod", "run", "--snaplen", ""}, ""},
		{[]string{"stenod", "status", "l"}, "lo"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.words, got, tc.want)
		}
	}
}
