package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/config"
	"github.com/stenod/stenod/internal/ifacelock"
	"github.com/stenod/stenod/xdp"
)

const helpUsage = `usage: stenod help [COMMAND]

Prints COMMAND's usage, flags and their defaults to standard output (the same
text as 'stenod COMMAND -h', which prints it to standard error), or without a
COMMAND the list of commands.

  stenod help --man              the manual page stenod(1), as roff
  stenod help --completion bash  the bash completion script

Both are generated from the same command table and flags as this help; the
Debian package installs them.
`

// cmdHelp is 'stenod help': it returns the exit status.
func cmdHelp(ctx context.Context, e *env, args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "stenod help: "+format+"\n", a...)
		fmt.Fprint(e.stderr, helpUsage)
		return 2
	}
	if len(args) == 0 {
		usage(e.stdout)
		return 0
	}
	var err error
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return fail("unexpected arguments %q", args[1:])
		}
		fmt.Fprint(e.stdout, helpUsage)
		return 0
	case "--man", "-man":
		if len(args) > 1 {
			return fail("unexpected arguments %q", args[1:])
		}
		err = writeMan(ctx, e.stdout)
	case "--completion", "-completion":
		if len(args) != 2 || args[1] != "bash" {
			return fail("want '--completion bash' (the one shell supported)")
		}
		err = writeBashCompletion(ctx, e.stdout)
	default:
		if len(args) > 1 {
			return fail("one COMMAND at a time, not %q", args)
		}
		c, ok := lookupCommand(args[0])
		if !ok {
			return fail("unknown command %q (run 'stenod help' for the list)", args[0])
		}
		// The command's own -h, with its usage sent to standard output:
		// asked for, help is the answer, not a complaint.
		if err := c.run(ctx, &env{stdout: e.stdout, stderr: e.stdout, log: e.log}, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stderr, "stenod help: %s -h printed no usage (%v)\n", c.name, err)
			return 1
		}
		return 0
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "stenod help: %v\n", err)
		return 1
	}
	return 0
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// describe runs c with -h, with its output discarded, and returns the
// usage its flag set describes: every command creates its flag set with
// newFlagSet and defines every flag before it parses, so the flag set
// holds them all when -h stops it.
func describe(ctx context.Context, c command) (*usageInfo, error) {
	var u *usageInfo
	e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.DiscardHandler),
		onFlagSet: func(fu *usageInfo) { u = fu }}
	if err := c.run(ctx, e, []string{"-h"}); !errors.Is(err, flag.ErrHelp) || u == nil {
		return nil, fmt.Errorf("command %s: -h did not stop at its usage (%v)", c.name, err)
	}
	return u, nil
}

// describeAll describes every command, in the order of commands().
func describeAll(ctx context.Context) ([]command, []*usageInfo, error) {
	cmds := commands()
	us := make([]*usageInfo, len(cmds))
	for i, c := range cmds {
		u, err := describe(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		us[i] = u
	}
	return cmds, us, nil
}

// flagDoc is one flag as the usage shows it.
type flagDoc struct {
	name    string
	arg     string // the value's name, "" for a boolean flag
	usage   string
	def     string // "" when the default is the type's zero value
	boolean bool
}

// option is the flag as the docs write it: -w, --spool (Go's flag package
// takes one dash or two alike).
func (f flagDoc) option() string {
	if len(f.name) == 1 {
		return "-" + f.name
	}
	return "--" + f.name
}

// flagDocs lists fs's flags in lexical order, as PrintDefaults does.
func flagDocs(fs *flag.FlagSet) []flagDoc {
	var out []flagDoc
	fs.VisitAll(func(f *flag.Flag) {
		arg, use := flag.UnquoteUsage(f)
		d := flagDoc{name: f.Name, arg: arg, usage: use}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			d.boolean, d.arg = true, ""
		}
		if !isZeroDefault(f) {
			d.def = f.DefValue
		}
		out = append(out, d)
	})
	return out
}

// isZeroDefault reports whether f's default is its type's zero value, which
// the usage leaves out (as flag.PrintDefaults does).
func isZeroDefault(f *flag.Flag) bool {
	t := reflect.TypeOf(f.Value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	v, ok := z.Interface().(flag.Value)
	if !ok {
		return false
	}
	defer func() { _ = recover() }() // a Value whose String needs more than its zero value
	return f.DefValue == v.String()
}

// manDate is the date on the manual page: SOURCE_DATE_EPOCH (reproducible
// builds set it; make deb sets it to the commit's time), else the time of
// the commit the binary was built from, else today.
func manDate() string {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC().Format(time.DateOnly)
		}
	}
	if t, err := time.Parse(time.RFC3339, currentVersion().Time); err == nil {
		return t.UTC().Format(time.DateOnly)
	}
	return time.Now().UTC().Format(time.DateOnly)
}

// writeMan writes stenod(1) as roff (man macros).
func writeMan(ctx context.Context, w io.Writer) error {
	cmds, us, err := describeAll(ctx)
	if err != nil {
		return err
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(".\\\" Generated by 'stenod help --man' from the commands' own usage; do not edit.\n")
	p(".TH STENOD 1 %s %s \"User Commands\"\n", roffQuote(manDate()), roffQuote("stenod "+currentVersion().Version))
	p(".SH NAME\nstenod \\- full-packet capture: store every packet, index its flows, answer queries as pcap\n")
	p(".SH SYNOPSIS\n.B stenod\n.I command\n.RI [ flags ]\n.RI [ args ]\n.br\n.B stenod help\n.RI [ command ]\n")
	p(".SH DESCRIPTION\n")
	p("%s", roffText("stenod sits on a tap or span port, writes every packet it sees to local disk, "+
		"keeps as much history as the disk holds and answers queries in stenographer's query "+
		"language with the matching packets, as pcap. One binary holds the capture daemon "+
		"(stenod run) and the tools that query, import and inspect its spool.\n\n"+
		"Every command prints its usage with -h, or with 'stenod help COMMAND'. "+
		"Flags are given as -flag or --flag, with their value as the next argument or after '='."))
	p(".SH COMMANDS\n")
	for i, c := range cmds {
		u := us[i]
		p(".SS %s\n", roffQuote(strings.TrimSpace("stenod "+u.name+" [flags] "+u.args)))
		p("%s", roffText(strings.ToUpper(c.summary[:1])+c.summary[1:]+".\n\n"+u.doc))
		for _, f := range flagDocs(u.fs) {
			p(".TP\n\\fB%s\\fR", roffEscape(f.option()))
			if f.arg != "" {
				p(" \\fI%s\\fR", roffEscape(f.arg))
			}
			p("\n")
			text := f.usage
			if f.def != "" {
				text += " (default: " + f.def + ")"
			}
			p("%s", roffText(text))
		}
	}
	p(".SS %s\n%s", roffQuote("stenod help [COMMAND]"), roffText("Prints COMMAND's usage and flags, "+
		"or the list of commands. 'stenod help --man' prints this manual page, "+
		"'stenod help --completion bash' the bash completion script."))
	p(".SH EXIT STATUS\n")
	for _, s := range [][2]string{
		{"0", "Success."},
		{"1", "An error, described on standard error."},
		{"2", "A mistake in the command line, or the usage asked for with -h."},
		{"3", "stenod read and stenod query: the answer is complete except for damaged records of the spool, whose count is on standard error."},
	} {
		p(".TP\n.B %s\n%s", s[0], roffText(s[1]))
	}
	def := config.Default()
	p(".SH FILES\n")
	for _, f := range [][2]string{
		{config.DefaultPath, "The configuration, read by stenod run when it exists (every key: configuration.md)."},
		{strings.Join(def.Spool.Dirs, ", "), "The default spool directory."},
		{api.DefaultSocket, "The API's Unix socket: root and the group " + def.API.SocketGroup + " may connect."},
		{ifacelock.DefaultDir + "/IFACE.lock", "Held by the sensor capturing IFACE: one sensor per interface."},
		{xdp.DefaultPinRoot + "/IFACE/", "The XDP program, link and maps of the sensor on IFACE, pinned (bpftool, stenod status)."},
		{"/usr/share/doc/stenod/", "The documentation: operations.md, configuration.md, query-language.md, api.md and more."},
	} {
		p(".TP\n.I %s\n%s", roffEscape(f[0]), roffText(f[1]))
	}
	p(".SH SEE ALSO\n.BR tcpdump (8),\n.BR bpftool (8),\n.BR systemctl (1)\n")
	_, err = io.WriteString(w, b.String())
	return err
}

// leadingDashes matches the dashes that start an option in running text
// (-h, --group, '-w FILE'): roff must print them as minus signs (\-), not
// hyphens, so that the option can be searched and pasted.
var leadingDashes = regexp.MustCompile(`(^|[\s('"\[])(-+)`)

// roffEscape escapes s for use inside a roff line.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return leadingDashes.ReplaceAllStringFunc(s, func(m string) string {
		i := strings.IndexByte(m, '-')
		return m[:i] + strings.Repeat(`\-`, len(m)-i)
	})
}

// roffQuote makes s one macro argument.
func roffQuote(s string) string {
	return `"` + strings.ReplaceAll(roffEscape(s), `"`, `""`) + `"`
}

// roffText turns plain text (lines; an empty line between paragraphs) into
// roff: each line escaped, none starting with a control character, and an
// empty line becoming a paragraph break.
func roffText(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			b.WriteString(".PP\n")
			continue
		}
		if line[0] == '.' || line[0] == '\'' {
			b.WriteString(`\&`)
		}
		b.WriteString(roffEscape(line))
		b.WriteByte('\n')
	}
	return b.String()
}

// completionKind is what the argument of a flag, or a command's operands,
// complete to in the bash completion: file, dir, iface, group, user,
// command or none.
func completionKind(arg string) string {
	switch a := strings.ToLower(arg); {
	case strings.Contains(a, "file"):
		return "file"
	case strings.Contains(a, "dir"):
		return "dir"
	case strings.Contains(a, "interface"):
		return "iface"
	case a == "path" || a == "socket":
		return "file"
	case a == "group":
		return "group"
	case a == "user":
		return "user"
	}
	return "none"
}

// writeBashCompletion writes a bash completion script for stenod. It needs
// nothing but bash (not the bash-completion package's helpers), so it also
// works when sourced by hand.
func writeBashCompletion(ctx context.Context, w io.Writer) error {
	cmds, us, err := describeAll(ctx)
	if err != nil {
		return err
	}
	names := []string{}
	for _, c := range cmds {
		names = append(names, c.name)
	}
	names = append(names, "help")
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`# bash completion for stenod(1).
# Generated by 'stenod help --completion bash' from the commands' own flags;
# do not edit.

# _stenod_complete KIND WORD: the completions of WORD as a KIND.
_stenod_complete() {
	case $1 in
	file)
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -f -- "$2")
		;;
	dir)
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -d -- "$2")
		;;
	iface) mapfile -t COMPREPLY < <(compgen -W "$(command ls /sys/class/net 2>/dev/null)" -- "$2") ;;
	group) mapfile -t COMPREPLY < <(compgen -g -- "$2") ;;
	user) mapfile -t COMPREPLY < <(compgen -u -- "$2") ;;
	command) mapfile -t COMPREPLY < <(compgen -W %[1]q -- "$2") ;;
	*) COMPREPLY=() ;;
	esac
}

_stenod() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} flag="" flags="" kind="none"
	COMPREPLY=()
	if ((COMP_CWORD == 1)); then
		_stenod_complete command "$cur"
		return
	fi
	# --flag=value: bash splits it at "=" (COMP_WORDBREAKS).
	if [[ $cur == "=" ]]; then
		flag=$prev cur=""
	elif [[ $prev == "=" ]] && ((COMP_CWORD > 2)); then
		flag=${COMP_WORDS[COMP_CWORD - 2]}
	elif [[ $prev == -* ]]; then
		flag=$prev
	fi
	flag=${flag#-}
	flag=${flag#-}
	case ${COMP_WORDS[1]} in
`, strings.Join(names, " "))
	for i, c := range cmds {
		u := us[i]
		fds := flagDocs(u.fs)
		var fl []string
		for _, f := range fds {
			fl = append(fl, f.option())
		}
		p("\t%s)\n", c.name)
		if sub, ok := strings.CutPrefix(u.name, c.name+" "); ok {
			p("\t\tif ((COMP_CWORD == 2)); then\n\t\t\tmapfile -t COMPREPLY < <(compgen -W %q -- \"$cur\")\n\t\t\treturn\n\t\tfi\n", sub)
		}
		p("\t\tflags=%q\n", strings.Join(fl, " "))
		p("\t\tcase $flag in\n")
		for _, f := range fds {
			if !f.boolean {
				p("\t\t%s) kind=%q ;;\n", f.name, completionKind(f.arg))
			}
		}
		p("\t\t*)\n\t\t\tflag=\"\"\n\t\t\tkind=%q\n\t\t\t;;\n\t\tesac\n\t\t;;\n", completionKind(u.args))
	}
	p(`	help)
		flags="--man --completion"
		if [[ $flag == completion ]]; then
			mapfile -t COMPREPLY < <(compgen -W bash -- "$cur")
			return
		fi
		flag=""
		((COMP_CWORD == 2)) && kind="command"
		;;
	*) return ;;
	esac
	if [[ -z $flag && $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
		return
	fi
	_stenod_complete "$kind" "$cur"
}

complete -F _stenod stenod
`)
	_, err = io.WriteString(w, b.String())
	return err
}
