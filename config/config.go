//go:build linux

package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// DefaultPath is where stenod run looks for its configuration file when
// --config is not given; a missing file there means the defaults.
const DefaultPath = "/etc/stenod/config.json"

// Default values of the daemon's own settings.
const (
	DefaultUser      = "stenod"
	DefaultSpoolDir  = "/var/lib/stenod/spool"
	DefaultDemoSpool = "/var/lib/stenod/demo"
	DefaultDemoRate  = 1000
	// DefaultDemoMaxBytes bounds the demo's spool: about two hours of the
	// demo traffic, so a forgotten demo never fills the disk.
	DefaultDemoMaxBytes = 2 << 30
)

// Config is everything stenod run is told. The zero value is not useful:
// start from Default.
type Config struct {
	// User is the account the daemon runs as once its XDP programs are
	// attached and its sockets open (when started as root). "" keeps the
	// identity it was started with.
	User string
	// Capture, Spool and API are the packages' own configurations. Their
	// fields that the file does not set keep the packages' defaults;
	// Capture.SnapLen is not set here (it follows Spool.SnapLen).
	Capture capture.Config
	Spool   spool.Config
	API     api.Config
	// Demo is used by stenod run --demo only.
	Demo Demo
}

// Demo configures the demo tap (internal/demotap).
type Demo struct {
	// Spool is the spool directory the demo stores into, instead of
	// Spool.Dirs, so a demo never mixes with a real sensor's history.
	Spool string
	// Captures is a directory (searched recursively) or a file of pcap or
	// pcapng captures to replay. "" takes the sample captures when they
	// are found ($STENOD_TESTDATA, the checkout's testdata/pcaps) and
	// generated traffic otherwise.
	Captures string
	// Rate is the number of packets per second replayed.
	Rate int
	// MaxBytes is the spool budget (spool.Config.MaxBytes) of the demo.
	MaxBytes int64
}

// Default returns the configuration stenod run uses without a file: capture
// needs Capture.Interfaces still, the rest works as it is.
func Default() Config {
	c := Config{
		User:    DefaultUser,
		Capture: capture.DefaultConfig(),
		Spool:   spool.DefaultConfig(),
		API:     api.DefaultConfig(),
		Demo: Demo{
			Spool:    DefaultDemoSpool,
			Rate:     DefaultDemoRate,
			MaxBytes: DefaultDemoMaxBytes,
		},
	}
	c.Spool.Dirs = []string{DefaultSpoolDir}
	c.Capture.Interfaces = []string{}
	c.Capture.CPUs = []int{}
	c.Capture.DropRules = []xdp.DropRule{}
	return c
}

// Errors, to test with errors.Is on what Load, Parse, Set and Validate
// return.
var (
	// ErrUnknownKey: the file names a key the format does not have.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInvalidValue: a key's value has the wrong type or is out of range.
	ErrInvalidValue = errors.New("invalid value")
)

// KeyError is an error about one key.
type KeyError struct {
	// Source is the file ("" when the value came from elsewhere, a flag).
	Source string
	// Key is the key's path: "spool.max_bytes", "capture.drop_rules[2]".
	Key string
	// Err is ErrUnknownKey or what is wrong with the value.
	Err error
}

func (e *KeyError) Error() string {
	src := "config"
	if e.Source != "" {
		src = "config " + e.Source
	}
	if errors.Is(e.Err, ErrUnknownKey) {
		return fmt.Sprintf("%s: unknown key %q", src, e.Key)
	}
	return fmt.Sprintf("%s: key %q: %v", src, e.Key, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

// Is makes every KeyError but an unknown key's match ErrInvalidValue.
func (e *KeyError) Is(target error) bool {
	return target == ErrInvalidValue && !errors.Is(e.Err, ErrUnknownKey)
}

// kind is how a key's value is written.
type kind int

const (
	kString    kind = iota
	kStrings        // JSON array of strings; comma separated in Set
	kInts           // JSON array of integers; comma separated in Set
	kInt            // JSON integer
	kBool           // JSON true or false
	kFloat          // JSON number
	kSize           // "1GiB", "500MB" or a JSON integer of bytes
	kDuration       // "5m", "100ms"
	kDropRules      // JSON array of rule strings or objects
)

// key is one key of the file.
type key struct {
	name string
	kind kind
	doc  string
	// field returns a pointer to the key's field in c, of the Go type the
	// kind stores: string, []string, []int, int, bool, float64, int64,
	// time.Duration, []xdp.DropRule.
	field func(c *Config) any
}

// sections are the objects of the file; every other key is a leaf.
var sections = []string{"capture", "spool", "api", "demo"}

// keys lists every key, in the order of the file and of the docs.
var keys = []key{
	{"user", kString, "account to run as after start-up (when started as root); \"\" keeps root", func(c *Config) any { return &c.User }},

	{"capture.interfaces", kStrings, "interfaces to capture from (required, here or with --iface)", func(c *Config) any { return &c.Capture.Interfaces }},
	{"capture.method", kString, "capture method: auto (AF_XDP where the driver does zero-copy, else AF_PACKET), xdp or afpacket", func(c *Config) any { return &c.Capture.Method }},
	{"capture.xdp_mode", kString, "XDP attach mode: auto (native, else generic), native or generic", func(c *Config) any { return &c.Capture.XDPMode }},
	{"capture.cpus", kInts, "CPUs the receive loops are pinned to, round robin over all RX queues; empty: every CPU", func(c *Config) any { return &c.Capture.CPUs }},
	{"capture.umem_frames", kInt, "4 KiB packet buffers per RX queue: how long a disk stall is ridden out", func(c *Config) any { return &c.Capture.UMEMFrames }},
	{"capture.flush_interval", kDuration, "longest time a received packet waits before it is queryable, under load (at most 1s)", func(c *Config) any { return &c.Capture.FlushInterval }},
	{"capture.observe", kBool, "count flows and packets only, store nothing, pass every packet on", func(c *Config) any { return &c.Capture.Observe }},
	{"capture.afpacket_rings", kInt, "AF_PACKET rings per interface (0: one per RX queue, at most half the CPUs)", func(c *Config) any { return &c.Capture.AFPacketRings }},
	{"capture.afpacket_block_size", kSize, "size of each AF_PACKET ring block (a multiple of the page size, at least 64 KiB)", func(c *Config) any { return &c.Capture.AFPacketBlockSize }},
	{"capture.afpacket_blocks", kInt, "blocks per AF_PACKET ring: locked kernel memory of block size × blocks per ring", func(c *Config) any { return &c.Capture.AFPacketBlocks }},
	{"capture.xdp_observe", kBool, "with AF_PACKET capture, also attach the XDP program in observe mode (flow table and counters for bpftool and stenod status)", func(c *Config) any { return &c.Capture.XDPObserve }},
	{"capture.pin_root", kString, "bpffs directory of the pinned XDP objects (one directory per interface)", func(c *Config) any { return &c.Capture.PinRoot }},
	{"capture.drop_rules", kDropRules, "frames dropped before capture, in the XDP program", func(c *Config) any { return &c.Capture.DropRules }},

	{"spool.dirs", kStrings, "spool directories, typically one per disk", func(c *Config) any { return &c.Spool.Dirs }},
	{"spool.snap_length", kInt, "most bytes kept of each packet", func(c *Config) any { return &c.Spool.SnapLen }},
	{"spool.rotate_size", kSize, "a new file is started when the active one would grow past this", func(c *Config) any { return &c.Spool.RotateSize }},
	{"spool.rotate_age", kDuration, "a new file is started when a packet is this much later than the file's first", func(c *Config) any { return &c.Spool.RotateAge }},
	{"spool.write_buffer", kSize, "bytes gathered per write", func(c *Config) any { return &c.Spool.WriteBuffer }},
	{"spool.max_cached_indexes", kInt, "sealed indexes kept in memory", func(c *Config) any { return &c.Spool.MaxCachedIndexes }},
	{"spool.max_bytes", kSize, "most bytes each spool directory may hold (0: no limit); the oldest files go first", func(c *Config) any { return &c.Spool.MaxBytes }},
	{"spool.min_free_percent", kFloat, "share of each spool file system kept free (0: off); the oldest files go first", func(c *Config) any { return &c.Spool.MinFreePercent }},
	{"spool.max_held_percent", kFloat, "share of a spool file system one query may keep allocated in deleted files before it is cut off (0: off)", func(c *Config) any { return &c.Spool.MaxHeldPercent }},
	{"spool.max_files", kInt, "most files each spool directory may hold (0: no limit)", func(c *Config) any { return &c.Spool.MaxFiles }},

	{"api.listen", kString, "TCP address of the HTTP API instead of the Unix socket (\"\": the socket, or 127.0.0.1:1234 with api.certs_dir); loopback without api.certs_dir lets every local user read packets, any other address needs api.certs_dir", func(c *Config) any { return &c.API.Listen }},
	{"api.socket", kString, "Unix socket of the HTTP API, used when api.listen and api.certs_dir are empty; its directory is created mode 0750", func(c *Config) any { return &c.API.Socket }},
	{"api.socket_group", kString, "group that may connect to the socket (mode 0660) besides root; when it does not exist the socket keeps the daemon's own group", func(c *Config) any { return &c.API.SocketGroup }},
	{"api.certs_dir", kString, "directory of 'stenod certs init': serve HTTPS, require client certificates", func(c *Config) any { return &c.API.CertsDir }},
	{"api.pprof", kBool, "serve Go's profiler at /debug/pprof/ (off: 404)", func(c *Config) any { return &c.API.PProf }},
	{"api.query_timeout", kDuration, "longest time a query may run (0s: no limit)", func(c *Config) any { return &c.API.QueryTimeout }},
	{"api.max_query_bytes", kSize, "largest POST /query body", func(c *Config) any { return &c.API.MaxQueryBytes }},
	{"api.max_connections", kInt, "most API connections open at once (0: half of what the open files limit leaves after api.fd_reserve, at most 1024)", func(c *Config) any { return &c.API.MaxConns }},
	{"api.max_connections_per_client", kInt, "most API connections from one client address (0: a quarter of api.max_connections, at most 64)", func(c *Config) any { return &c.API.MaxConnsPerClient }},
	{"api.fd_reserve", kInt, "file descriptors the API's connection caps leave to capture", func(c *Config) any { return &c.API.FDReserve }},

	{"demo.spool", kString, "spool directory of stenod run --demo", func(c *Config) any { return &c.Demo.Spool }},
	{"demo.captures", kString, "pcap/pcapng file or directory the demo replays; \"\": the sample captures if found, else generated traffic", func(c *Config) any { return &c.Demo.Captures }},
	{"demo.rate", kInt, "packets per second the demo replays", func(c *Config) any { return &c.Demo.Rate }},
	{"demo.max_bytes", kSize, "spool budget of the demo", func(c *Config) any { return &c.Demo.MaxBytes }},
}

func lookupKey(name string) *key {
	for i := range keys {
		if keys[i].name == name {
			return &keys[i]
		}
	}
	return nil
}

// KeyInfo describes one key for documentation and tools.
type KeyInfo struct {
	Name    string // "spool.max_bytes"
	Doc     string
	Default string // as Format writes it
}

// Keys lists every key of the file in order, with its default.
func Keys() []KeyInfo {
	d := Default()
	out := make([]KeyInfo, len(keys))
	for i, k := range keys {
		out[i] = KeyInfo{Name: k.name, Doc: k.doc, Default: string(k.marshal(&d))}
	}
	return out
}

// Load reads the file at path over Default and validates it as far as a
// file can be: Capture.Interfaces may still be empty (a flag may give it);
// call Validate once everything is set.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load from bytes; source names them in errors.
func Parse(data []byte, source string) (Config, error) {
	c := Default()
	d := &decoder{dec: json.NewDecoder(bytes.NewReader(data)), data: data, source: source}
	d.dec.UseNumber()
	if err := d.object("", func(name string, raw json.RawMessage) error {
		return d.top(&c, name, raw)
	}); err != nil {
		return Config{}, err
	}
	if _, err := d.dec.Token(); err != io.EOF {
		return Config{}, fmt.Errorf("config %s: data after the top-level object", source)
	}
	if err := c.validate(false); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			ke.Source = source
		}
		return Config{}, err
	}
	return c, nil
}

// decoder walks a JSON document object by object, keeping key order and
// refusing duplicate keys, so errors name keys in the file's order.
type decoder struct {
	dec    *json.Decoder
	data   []byte
	source string
}

func (d *decoder) syntaxErr(err error) error {
	var se *json.SyntaxError
	off := d.dec.InputOffset()
	if errors.As(err, &se) {
		off = se.Offset
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	line := 1 + bytes.Count(d.data[:min(int(off), len(d.data))], []byte("\n"))
	return fmt.Errorf("config %s: line %d: %w", d.source, line, err)
}

// object reads one object at the decoder's position, calling f for each
// member with its path (prefix + name).
func (d *decoder) object(prefix string, f func(name string, raw json.RawMessage) error) error {
	tok, err := d.dec.Token()
	if err != nil {
		return d.syntaxErr(err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		what := "the file"
		if prefix != "" {
			what = "key " + strconv.Quote(strings.TrimSuffix(prefix, "."))
		}
		return fmt.Errorf("config %s: %s: want a JSON object, got %v", d.source, what, tokenString(tok))
	}
	seen := map[string]bool{}
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return d.syntaxErr(err)
		}
		name := prefix + tok.(string)
		if seen[name] {
			return &KeyError{Source: d.source, Key: name, Err: errors.New("given twice")}
		}
		seen[name] = true
		var raw json.RawMessage
		if err := d.dec.Decode(&raw); err != nil {
			return d.syntaxErr(err)
		}
		if err := f(name, raw); err != nil {
			return err
		}
	}
	if _, err := d.dec.Token(); err != nil {
		return d.syntaxErr(err)
	}
	return nil
}

func tokenString(tok json.Token) string {
	if tok == nil {
		return "null"
	}
	if s, ok := tok.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(tok)
}

// top decodes one member of the top-level object.
func (d *decoder) top(c *Config, name string, raw json.RawMessage) error {
	for _, s := range sections {
		if name != s {
			continue
		}
		sub := &decoder{dec: json.NewDecoder(bytes.NewReader(raw)), data: raw, source: d.source}
		sub.dec.UseNumber()
		return sub.object(name+".", func(name string, raw json.RawMessage) error {
			return d.leaf(c, name, raw)
		})
	}
	return d.leaf(c, name, raw)
}

func (d *decoder) leaf(c *Config, name string, raw json.RawMessage) error {
	k := lookupKey(name)
	if k == nil {
		return &KeyError{Source: d.source, Key: name, Err: ErrUnknownKey}
	}
	if err := k.unmarshal(c, raw, d.source); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			return err
		}
		return &KeyError{Source: d.source, Key: name, Err: err}
	}
	return nil
}

// unmarshal decodes raw into k's field of c.
func (k *key) unmarshal(c *Config, raw json.RawMessage, source string) error {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return errors.New("null: leave the key out for its default")
	}
	var err error
	switch p := k.field(c).(type) {
	case *string:
		err = strict(raw, p, "a string")
	case *[]string:
		var v []string
		if err = strict(raw, &v, "an array of strings"); err == nil {
			*p = nonNil(v)
		}
	case *[]int:
		var v []int
		if err = strict(raw, &v, "an array of integers"); err == nil {
			*p = nonNil(v)
		}
	case *int:
		var n int64
		if k.kind == kSize {
			n, err = jsonSize(raw)
		} else {
			n, err = jsonInt(raw)
		}
		if err == nil {
			*p = int(n)
		}
	case *bool:
		err = strict(raw, p, "true or false")
	case *float64:
		err = strict(raw, p, "a number")
	case *int64:
		*p, err = jsonSize(raw)
	case *time.Duration:
		var s string
		if err = strict(raw, &s, `a duration string such as "5m" or "100ms"`); err == nil {
			*p, err = ParseDuration(s)
		}
	case *[]xdp.DropRule:
		*p, err = jsonDropRules(raw, k.name, source)
	default:
		panic(fmt.Sprintf("config: key %s: field type %T", k.name, p))
	}
	return err
}

func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

// strict decodes raw into v, with a message that says what was wanted.
func strict(raw json.RawMessage, v any, want string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("want %s, got %s", want, abbrev(raw))
	}
	return nil
}

func abbrev(raw json.RawMessage) string {
	s := string(raw)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

func jsonInt(raw json.RawMessage) (int64, error) {
	var n json.Number
	if err := strict(raw, &n, "an integer"); err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %s", n)
	}
	return v, nil
}

// jsonSize accepts a size string or an integer number of bytes.
func jsonSize(raw json.RawMessage) (int64, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		return ParseSize(s)
	}
	n, err := jsonInt(raw)
	if err != nil {
		return 0, fmt.Errorf(`want a size such as "1GiB", "500MB" or a number of bytes, got %s`, abbrev(raw))
	}
	if n < 0 {
		return 0, fmt.Errorf("size %d is negative", n)
	}
	return n, nil
}

// Set sets one key from its string form, as a flag gives it: lists comma
// separated, sizes and durations as in the file, drop rules as one rule
// string (which replaces the configured rules). It does not validate
// ranges; Validate does.
func (c *Config) Set(name, value string) error {
	k := lookupKey(name)
	if k == nil {
		return &KeyError{Key: name, Err: ErrUnknownKey}
	}
	if err := k.set(c, value); err != nil {
		return &KeyError{Key: name, Err: err}
	}
	return nil
}

func (k *key) set(c *Config, value string) error {
	var err error
	switch p := k.field(c).(type) {
	case *string:
		*p = value
	case *[]string:
		*p = splitList(value)
	case *[]int:
		var v []int
		for _, s := range splitList(value) {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%q is not an integer", s)
			}
			v = append(v, n)
		}
		*p = nonNil(v)
	case *int:
		if k.kind == kSize {
			var n int64
			if n, err = ParseSize(value); err == nil {
				*p = int(n)
			}
			return err
		}
		var n int64
		if n, err = strconv.ParseInt(value, 10, 64); err != nil {
			return fmt.Errorf("%q is not an integer", value)
		}
		*p = int(n)
	case *bool:
		if *p, err = strconv.ParseBool(value); err != nil {
			return fmt.Errorf("%q is not true or false", value)
		}
	case *float64:
		if *p, err = strconv.ParseFloat(value, 64); err != nil {
			return fmt.Errorf("%q is not a number", value)
		}
	case *int64:
		*p, err = ParseSize(value)
	case *time.Duration:
		*p, err = ParseDuration(value)
	case *[]xdp.DropRule:
		var rules []xdp.DropRule
		for _, s := range strings.Split(value, ";") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			r, err := ParseDropRule(s)
			if err != nil {
				return err
			}
			rules = append(rules, r...)
		}
		*p = nonNil(rules)
	default:
		panic(fmt.Sprintf("config: key %s: field type %T", k.name, p))
	}
	return err
}

// Get returns a key's value in its string form, as Set takes it.
func (c *Config) Get(name string) (string, error) {
	k := lookupKey(name)
	if k == nil {
		return "", &KeyError{Key: name, Err: ErrUnknownKey}
	}
	switch p := k.field(c).(type) {
	case *[]string:
		return strings.Join(*p, ","), nil
	case *[]int:
		s := make([]string, len(*p))
		for i, n := range *p {
			s[i] = strconv.Itoa(n)
		}
		return strings.Join(s, ","), nil
	case *string:
		return *p, nil
	case *[]xdp.DropRule:
		s := make([]string, len(*p))
		for i, r := range *p {
			s[i] = FormatDropRule(r)
		}
		return strings.Join(s, "; "), nil
	case *int64:
		return FormatSize(*p), nil
	case *int:
		if k.kind == kSize {
			return FormatSize(int64(*p)), nil
		}
	case *time.Duration:
		return FormatDuration(*p), nil
	}
	return strings.Trim(string(k.marshal(c)), `"`), nil
}

// marshal returns k's value in c as JSON, in the forms Format writes.
func (k *key) marshal(c *Config) []byte {
	var v any
	switch p := k.field(c).(type) {
	case *int64:
		v = sizeJSON(*p)
	case *int:
		v = *p
		if k.kind == kSize {
			v = sizeJSON(int64(*p))
		}
	case *time.Duration:
		v = FormatDuration(*p)
	case *[]xdp.DropRule:
		s := make([]string, len(*p))
		for i, r := range *p {
			s[i] = FormatDropRule(r)
		}
		v = s
	case *[]string:
		v = nonNil(*p)
	case *[]int:
		v = nonNil(*p)
	default:
		v = reflect.ValueOf(p).Elem().Interface()
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
		// Arrays on one line, items separated by ", " as people write them.
		items := make([]string, rv.Len())
		for i := range items {
			items[i] = string(mustJSON(rv.Index(i).Interface()))
		}
		return []byte("[" + strings.Join(items, ", ") + "]")
	}
	return mustJSON(v)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// sizeJSON writes sizes that are a whole number of KiB, MiB, GiB or TiB
// with their unit, others as a number.
func sizeJSON(n int64) any {
	if s := FormatSize(n); strings.HasSuffix(s, "B") {
		return s
	}
	return n
}

// Format writes c as a complete configuration file: every key, in the
// order of docs/configuration.md. Parse(Format(c)) gives c back.
func (c *Config) Format() []byte {
	var b bytes.Buffer
	b.WriteString("{\n")
	section := ""
	for i, k := range keys {
		sec, leaf, nested := strings.Cut(k.name, ".")
		if !nested {
			sec, leaf = "", k.name
		}
		if sec != section {
			if section != "" {
				b.WriteString("\n  }")
			}
			if i > 0 {
				b.WriteString(",\n")
			}
			if sec != "" {
				fmt.Fprintf(&b, "  %q: {\n", sec)
			}
			section = sec
		} else if i > 0 {
			b.WriteString(",\n")
		}
		indent := "  "
		if sec != "" {
			indent = "    "
		}
		fmt.Fprintf(&b, "%s%q: %s", indent, leaf, k.marshal(c))
	}
	if section != "" {
		b.WriteString("\n  }")
	}
	b.WriteString("\n}\n")
	return b.Bytes()
}

// Validate checks everything stenod run needs, naming the key of the first
// impossible value in a *KeyError.
func (c *Config) Validate() error { return c.validate(true) }

// validate checks c; without requireIfaces an empty interface list passes
// (a file need not name them).
func (c *Config) validate(requireIfaces bool) error {
	bad := func(name, format string, args ...any) error {
		return &KeyError{Key: name, Err: fmt.Errorf(format, args...)}
	}
	if requireIfaces && len(c.Capture.Interfaces) == 0 {
		return bad("capture.interfaces", "no interface to capture from (set it, or give --iface)")
	}
	if strings.ContainsAny(c.User, ":/ \t\n") {
		return bad("user", "%q is not a user name", c.User)
	}
	for _, r := range c.Capture.DropRules {
		if err := checkDropRule(r); err != nil {
			return bad("capture.drop_rules", "%v", err)
		}
	}
	switch {
	case c.Demo.Spool == "":
		return bad("demo.spool", "empty")
	case c.Demo.Rate < 1 || c.Demo.Rate > 1_000_000:
		return bad("demo.rate", "%d packets per second outside [1, 1000000]", c.Demo.Rate)
	case c.Demo.MaxBytes != 0 && c.Demo.MaxBytes < 2*c.Spool.RotateSize:
		return bad("demo.max_bytes", "%d: must be 0 (no limit) or at least twice spool.rotate_size", c.Demo.MaxBytes)
	}
	for _, d := range c.Spool.Dirs {
		if d == "" {
			return bad("spool.dirs", "an empty directory name")
		}
	}

	type section struct {
		prefix   string
		validate func(c *Config) error
	}
	for _, s := range []section{
		{"capture.", func(c *Config) error {
			cc := c.Capture
			if !requireIfaces && len(cc.Interfaces) == 0 {
				cc.Interfaces = []string{"placeholder"}
			}
			return cc.Validate()
		}},
		{"spool.", func(c *Config) error { return c.Spool.Validate() }},
		{"api.", func(c *Config) error { return c.API.Validate() }},
	} {
		if err := s.validate(c); err != nil {
			return &KeyError{Key: c.blame(s.prefix, err, s.validate), Err: err}
		}
	}
	return nil
}

// blame finds the key of section prefix responsible for err: the first key
// whose reset to its default changes what validate says. The packages'
// Validate methods own the ranges; this way a new range check there is
// named here without a change. When no single key is to blame, the
// section is named.
func (c *Config) blame(prefix string, err error, validate func(*Config) error) string {
	def := Default()
	// First a key whose reset alone makes the section valid, then one
	// whose reset changes the complaint (two keys out of range).
	for _, fixes := range []bool{true, false} {
		for _, k := range keys {
			if !strings.HasPrefix(k.name, prefix) {
				continue
			}
			try := *c
			dst := reflect.ValueOf(k.field(&try)).Elem()
			src := reflect.ValueOf(k.field(&def)).Elem()
			if reflect.DeepEqual(dst.Interface(), src.Interface()) {
				continue
			}
			dst.Set(src)
			e := validate(&try)
			if e == nil || !fixes && e.Error() != err.Error() {
				return k.name
			}
		}
	}
	return strings.TrimSuffix(prefix, ".")
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	out := []string{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
