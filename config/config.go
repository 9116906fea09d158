//go:build linux

package config

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/internal/fielderr"
	"github.com/stenod/stenod/ipfix"
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
	// IPFIX is the flow export; no collector, no export.
	IPFIX ipfix.Config
	// Demo is used by stenod run --demo only.
	Demo Demo
	// Fleet lists the sensors the fleet endpoints ask (docs/fleet.md).
	Fleet fleet.Config
}

// Demo configures the demo tap (internal/demotap).
type Demo struct {
	// Spool is the spool directory the demo stores into, instead of
	// Spool.Dirs, so a demo never mixes with a real sensor's history.
	Spool string
	// Captures is a directory (searched recursively) or a file of pcap or
	// pcapng captures to replay. "": the sample captures built into the
	// binary, then those in /usr/share/stenod/demo
	// (demotap.SystemSamplesDir); "generated" (demotap.Generated):
	// synthetic traffic.
	Captures string
	// Rate is the number of packets per second replayed.
	Rate int
	// MaxBytes is the spool budget (spool.Config.MaxBytes) of the demo.
	MaxBytes int64
}

// file is the format of the configuration file: its json tags are the
// keys, in the order of docs/configuration.md, and a struct field is a
// section. Each field sets the Config field of the same name (in Capture,
// Spool, API, IPFIX, Demo or Fleet for a section's), or the one its
// field tag names ("Cutoff.Default": a field of a field), which its type
// converts to: Size, Duration, DropRules, CutoffLimit, CutoffRules and
// FleetSensors are how int64, int, time.Duration, []xdp.DropRule,
// xdp.Limit, []xdp.CutoffRule and []fleet.Sensor are written in the file. What a key means is in
// docs/configuration.md and on the field it sets; its default is the
// package's DefaultConfig.
type file struct {
	User    string `json:"user"`
	Capture struct {
		Interfaces        []string    `json:"interfaces"`
		Method            string      `json:"method"`
		XDPMode           string      `json:"xdp_mode"`
		CPUs              []int       `json:"cpus"`
		UMEMFrames        int         `json:"umem_frames"`
		FlushInterval     Duration    `json:"flush_interval"`
		Observe           bool        `json:"observe"`
		AFPacketRings     int         `json:"afpacket_rings"`
		AFPacketBlockSize Size        `json:"afpacket_block_size"`
		AFPacketBlocks    int         `json:"afpacket_blocks"`
		XDPObserve        bool        `json:"xdp_observe"`
		PinRoot           string      `json:"pin_root"`
		DropRules         DropRules   `json:"drop_rules"`
		Cutoff            CutoffLimit `json:"cutoff" field:"Cutoff.Default"`
		CutoffRules       CutoffRules `json:"cutoff_rules" field:"Cutoff.Rules"`
		CutoffJitter      uint32      `json:"cutoff_jitter" field:"Cutoff.JitterPercent"`
	} `json:"capture"`
	Spool struct {
		Dirs             []string `json:"dirs"`
		SnapLen          int      `json:"snap_length"`
		RotateSize       Size     `json:"rotate_size"`
		RotateAge        Duration `json:"rotate_age"`
		MaxLiveIndex     Size     `json:"max_live_index"`
		WriteBuffer      Size     `json:"write_buffer"`
		MaxCachedIndexes int      `json:"max_cached_indexes"`
		MaxBytes         Size     `json:"max_bytes"`
		MinFreePercent   float64  `json:"min_free_percent"`
		MaxHeldPercent   float64  `json:"max_held_percent"`
		MaxFiles         int      `json:"max_files"`
	} `json:"spool"`
	API struct {
		Listen            string   `json:"listen"`
		Socket            string   `json:"socket"`
		SocketGroup       string   `json:"socket_group"`
		CertsDir          string   `json:"certs_dir"`
		PProf             bool     `json:"pprof"`
		QueryTimeout      Duration `json:"query_timeout"`
		MaxQueryBytes     Size     `json:"max_query_bytes"`
		MaxConns          int      `json:"max_connections"`
		MaxConnsPerClient int      `json:"max_connections_per_client"`
		FDReserve         int      `json:"fd_reserve"`
		CommunityIDSeed   int      `json:"community_id_seed"`
		AlertWindow       Duration `json:"alert_window"`
	} `json:"api"`
	IPFIX struct {
		Collectors       []string `json:"collectors"`
		ActiveTimeout    Duration `json:"active_timeout"`
		IdleTimeout      Duration `json:"idle_timeout"`
		TemplateRefresh  Duration `json:"template_refresh"`
		SensorID         int64    `json:"sensor_id"`
		EnterpriseNumber int64    `json:"enterprise_number"`
		BaseURL          string   `json:"base_url"`
	} `json:"ipfix"`
	Demo struct {
		Spool    string `json:"spool"`
		Captures string `json:"captures"`
		Rate     int    `json:"rate"`
		MaxBytes Size   `json:"max_bytes"`
	} `json:"demo"`
	Fleet struct {
		Sensors      FleetSensors `json:"sensors"`
		Timeout      Duration     `json:"timeout"`
		StallTimeout Duration     `json:"stall_timeout"`
	} `json:"fleet"`
}

// key is one key of the file.
type key struct {
	name    string       // "spool.max_bytes"
	typ     reflect.Type // the file's type of the value: Size
	section string       // "Spool"; "" at the top
	field   string       // "MaxBytes"; "Cutoff.Default" for a field of a field
}

// keys lists every key of file, in order.
var keys = func() []key {
	var out []key
	t := reflect.TypeFor[file]()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Struct {
			out = append(out, key{name: f.Tag.Get("json"), typ: f.Type, field: f.Name})
			continue
		}
		for j := range f.Type.NumField() {
			g := f.Type.Field(j)
			field := g.Name
			if path := g.Tag.Get("field"); path != "" {
				field = path
			}
			out = append(out, key{name: f.Tag.Get("json") + "." + g.Tag.Get("json"), typ: g.Type, section: f.Name, field: field})
		}
	}
	// Every key must have its field (TestEveryKeyParsed runs this).
	var c Config
	for _, k := range out {
		if f := k.value(&c); !f.IsValid() || !k.typ.ConvertibleTo(f.Type()) || !f.Type().ConvertibleTo(k.typ) {
			panic(fmt.Sprintf("config: key %s: no Config field %s.%s of a type %v converts to", k.name, k.section, k.field, k.typ))
		}
	}
	return out
}()

func lookupKey(name string) *key {
	for i := range keys {
		if keys[i].name == name {
			return &keys[i]
		}
	}
	return nil
}

// value returns k's field of c; the zero Value when there is none.
func (k *key) value(c *Config) reflect.Value {
	v := reflect.ValueOf(c).Elem()
	if k.section != "" {
		if v = v.FieldByName(k.section); v.Kind() != reflect.Struct {
			return reflect.Value{}
		}
	}
	for _, name := range strings.Split(k.field, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}
		}
		v = v.FieldByName(name)
	}
	return v
}

// get returns k's value in c as the file's type.
func (k *key) get(c *Config) any { return k.value(c).Convert(k.typ).Interface() }

// set sets k's field of c to v, a pointer to the file's type.
func (k *key) set(c *Config, v reflect.Value) {
	dst := k.value(c)
	dst.Set(v.Elem().Convert(dst.Type()))
}

// Default returns the configuration stenod run uses without a file: capture
// needs Capture.Interfaces still, the rest works as it is.
func Default() Config {
	c := Config{
		User:    DefaultUser,
		Capture: capture.DefaultConfig(),
		Spool:   spool.DefaultConfig(),
		API:     api.DefaultConfig(),
		IPFIX:   ipfix.DefaultConfig(),
		Demo: Demo{
			Spool:    DefaultDemoSpool,
			Rate:     DefaultDemoRate,
			MaxBytes: DefaultDemoMaxBytes,
		},
		Fleet: fleet.DefaultConfig(),
	}
	c.Spool.Dirs = []string{DefaultSpoolDir}
	c.Capture.Interfaces = []string{}
	c.Capture.CPUs = []int{}
	c.Capture.DropRules = []xdp.DropRule{}
	c.Capture.Cutoff.Rules = []xdp.CutoffRule{}
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

// subkeyError is an error about a part of a key's value, such as one drop
// rule: the key named is the key's followed by path ("[2]", "[0].port").
type subkeyError struct {
	path string
	err  error
}

func (e *subkeyError) Error() string { return e.err.Error() }
func (e *subkeyError) Unwrap() error { return e.err }

// keyError names key (and the part of its value a subkeyError names) in err.
func keyError(key string, err error) error {
	var ke *KeyError
	if errors.As(err, &ke) {
		return err
	}
	var se *subkeyError
	if errors.As(err, &se) {
		return &KeyError{Key: key + se.path, Err: se.err}
	}
	return &KeyError{Key: key, Err: err}
}

// KeyInfo describes one key for documentation and tools.
type KeyInfo struct {
	Name    string // "spool.max_bytes"
	Default string // as Format writes it
}

// Keys lists every key of the file in order, with its default.
func Keys() []KeyInfo {
	d := Default()
	out := make([]KeyInfo, len(keys))
	for i := range keys {
		out[i] = KeyInfo{Name: keys[i].name, Default: string(keys[i].marshal(&d))}
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
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc json.RawMessage
	if err := dec.Decode(&doc); err != nil {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		line := 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n"))
		return Config{}, fmt.Errorf("config %s: line %d: %w", source, line, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, fmt.Errorf("config %s: data after the top-level object", source)
	}
	c := Default()
	err := walk(doc, "", c.decode)
	if err == nil {
		err = c.validate(false)
	}
	if err != nil {
		var ke *KeyError
		if !errors.As(err, &ke) {
			return Config{}, fmt.Errorf("config %s: %w", source, err)
		}
		ke.Source = source
		return Config{}, err
	}
	return c, nil
}

// walk calls leaf for every member of the JSON object doc (valid JSON) in
// the order of the file, with its dotted name, descending into the
// sections. A name given twice is refused.
func walk(doc json.RawMessage, prefix string, leaf func(name string, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %s", abbrev(doc))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		name := prefix + tok.(string)
		var raw json.RawMessage
		_ = dec.Decode(&raw)
		if seen[name] {
			return &KeyError{Key: name, Err: errors.New("given twice")}
		}
		seen[name] = true
		var err error
		if prefix == "" && isSection(name) {
			err = walk(raw, name+".", leaf)
		} else {
			err = leaf(name, raw)
		}
		if err != nil {
			return keyError(name, err)
		}
	}
	return nil
}

// isSection reports whether name is a section of the file: an object of
// keys.
func isSection(name string) bool {
	for _, k := range keys {
		if strings.HasPrefix(k.name, name+".") {
			return true
		}
	}
	return false
}

// decode sets key name of c from its JSON value raw.
func (c *Config) decode(name string, raw json.RawMessage) error {
	k := lookupKey(name)
	if k == nil {
		return &KeyError{Key: name, Err: ErrUnknownKey}
	}
	if string(bytes.TrimSpace(raw)) == "null" {
		return errors.New("null: leave the key out for its default")
	}
	v := reflect.New(k.typ)
	if err := json.Unmarshal(raw, v.Interface()); err != nil {
		if _, ok := v.Interface().(json.Unmarshaler); ok {
			return err
		}
		return fmt.Errorf("want %s, got %s", want(k.typ), abbrev(raw))
	}
	k.set(c, v)
	return nil
}

// want says what a value of type t is written as.
func want(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "an array of strings"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Int:
		return "an array of integers"
	case t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.Uint32:
		return "an integer, at least 0"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a string"
}

func abbrev(raw []byte) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// Set sets one key from its string form, as a flag gives it: lists comma
// separated, sizes and durations as in the file, drop rules separated by
// ';' (which replace the configured rules). It does not validate ranges;
// Validate does.
func (c *Config) Set(name, value string) error {
	k := lookupKey(name)
	if k == nil {
		return &KeyError{Key: name, Err: ErrUnknownKey}
	}
	v := reflect.New(k.typ)
	if err := setText(v, value); err != nil {
		// A flag sets the whole key: name it, not a part.
		return &KeyError{Key: name, Err: err}
	}
	k.set(c, v)
	return nil
}

// setText sets *p from s: lists comma separated, other values as JSON but
// strings, which are taken as they are.
func setText(p reflect.Value, s string) error {
	switch u := p.Interface().(type) {
	case encoding.TextUnmarshaler:
		return u.UnmarshalText([]byte(s))
	case *string:
		*u = s
		return nil
	}
	if v := p.Elem(); v.Kind() == reflect.Slice {
		items := splitList(s)
		v.Set(reflect.MakeSlice(v.Type(), len(items), len(items)))
		for i, item := range items {
			if err := setText(v.Index(i).Addr(), item); err != nil {
				return err
			}
		}
		return nil
	}
	if json.Unmarshal([]byte(s), p.Interface()) != nil {
		return fmt.Errorf("%q is not %s", s, want(p.Elem().Type()))
	}
	return nil
}

// Get returns a key's value in its string form, as Set takes it.
func (c *Config) Get(name string) (string, error) {
	k := lookupKey(name)
	if k == nil {
		return "", &KeyError{Key: name, Err: ErrUnknownKey}
	}
	return getText(reflect.ValueOf(k.get(c))), nil
}

func getText(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, _ := m.MarshalText()
		return string(b)
	}
	if v.Kind() == reflect.Slice {
		s := make([]string, v.Len())
		for i := range s {
			s[i] = getText(v.Index(i))
		}
		return strings.Join(s, ",")
	}
	return fmt.Sprint(v.Interface())
}

// marshal returns k's value in c as JSON, as Format writes it: arrays on
// one line, items separated by ", " as people write them.
func (k *key) marshal(c *Config) []byte {
	b, err := marshalUnescaped(k.get(c))
	if err != nil {
		panic(err)
	}
	var items []json.RawMessage
	if k.typ.Kind() == reflect.Slice && json.Unmarshal(b, &items) == nil {
		s := make([]string, len(items))
		for i, item := range items {
			s[i] = string(item)
		}
		return []byte("[" + strings.Join(s, ", ") + "]")
	}
	return b
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
	if err := validateCutoff(&c.Capture.Cutoff); err != nil {
		return err
	}
	cc := c.Capture
	if !requireIfaces && len(cc.Interfaces) == 0 {
		cc.Interfaces = []string{"placeholder"}
	}
	for _, s := range []struct {
		section string
		err     error
	}{
		{"Capture", cc.Validate()},
		{"Spool", c.Spool.Validate()},
		{"API", c.API.Validate()},
		{"IPFIX", c.IPFIX.Validate()},
		{"Fleet", c.Fleet.Validate()},
	} {
		if s.err == nil {
			continue
		}
		// The package names the field; the section when the field is
		// not a key.
		name := strings.ToLower(s.section)
		for _, k := range keys {
			if k.section == s.section && k.field == fielderr.Field(s.err) {
				name = k.name
			}
		}
		return &KeyError{Key: name, Err: s.err}
	}
	return nil
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
