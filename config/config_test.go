//go:build linux

package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/ipfix"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/xdp"
)

var update = flag.Bool("update", false, "rewrite etc/stenod.json from Default")

// TestExampleFileIsDefault: etc/stenod.json is Default written out, with
// every key, so the documented example never drifts from the code
// (go test ./config -run TestExampleFileIsDefault -update rewrites it).
func TestExampleFileIsDefault(t *testing.T) {
	path := filepath.Join("..", "etc", "stenod.json")
	d := Default()
	if *update {
		if err := os.WriteFile(path, d.Format(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := d.Format(); !bytes.Equal(data, want) {
		t.Errorf("%s differs from Default().Format(); regenerate it:\n%s", path, want)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, d) {
		t.Errorf("Load(%s) = %+v, want Default() %+v", path, c, d)
	}
	for _, k := range keys {
		leaf := k.name[strings.LastIndex(k.name, ".")+1:]
		if !bytes.Contains(data, []byte(`"`+leaf+`":`)) {
			t.Errorf("%s lacks key %s", path, k.name)
		}
	}
}

// TestEveryKeyParsed sets every key to a value other than its default and
// checks that the field changed to exactly that value.
func TestEveryKeyParsed(t *testing.T) {
	file := `{
  "user": "sensor",
  "capture": {
    "interfaces": ["eth1", "eth2"],
    "method": "xdp",
    "xdp_mode": "native",
    "cpus": [2, 3],
    "umem_frames": 131072,
    "flush_interval": "250ms",
    "observe": true,
    "afpacket_rings": 4,
    "afpacket_block_size": "8MiB",
    "afpacket_blocks": 32,
    "xdp_observe": true,
    "pin_root": "/sys/fs/bpf/sensor",
    "drop_rules": ["udp and port 53", {"proto": "tcp", "port": 22, "src": "192.0.2.0/24", "dst": "198.51.100.7"}, "net 10.0.0.0/8", {"proto": 50, "dst": "2001:db8::/32"}, "icmp"],
    "cutoff": "20KB",
    "cutoff_rules": ["port 443 => 64KiB", "tcp and port 22 => 5p", "host 10.0.0.5 or net 2001:db8::/32 => never", "udp => 1.5MB+100p"],
    "cutoff_jitter": 10
  },
  "spool": {
    "dirs": ["/data1/spool", "/data2/spool"],
    "snap_length": 9000,
    "rotate_size": "512MiB",
    "rotate_age": "2m",
    "max_live_index": "256MiB",
    "write_buffer": "2MiB",
    "max_cached_indexes": 100,
    "max_bytes": "4TB",
    "min_free_percent": 5.5,
    "max_held_percent": 2.5,
    "max_files": 10000
  },
  "api": {
    "listen": "0.0.0.0:1234",
    "socket": "/run/sensor/api.sock",
    "socket_group": "analysts",
    "certs_dir": "/etc/stenod/certs",
    "pprof": true,
    "query_timeout": "15m",
    "max_query_bytes": 1048576,
    "max_connections": 200,
    "max_connections_per_client": 20,
    "fd_reserve": 4096,
    "community_id_seed": 7,
    "alert_window": "90s"
  },
  "ipfix": {
    "collectors": ["udp://127.0.0.1:2055", "tcp://[2001:db8::9]:4739"],
    "active_timeout": "2m",
    "idle_timeout": "20s",
    "template_refresh": "30s",
    "sensor_id": 4294967295,
    "enterprise_number": 12345,
    "base_url": "https://sensor1.example:1234"
  },
  "demo": {
    "spool": "/tmp/demo",
    "captures": "/srv/pcaps",
    "rate": 50,
    "max_bytes": "3GiB"
  },
  "fleet": {
    "sensors": [{"name": "dc1", "url": "https://10.0.0.2:1234", "certs": "/etc/stenod/fleet"}, {"name": "local", "url": "http://127.0.0.1:1235"}],
    "timeout": "2m",
    "stall_timeout": "10s"
  }
}`
	c, err := Parse([]byte(file), "test.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.User = "sensor"
	want.Capture.Interfaces = []string{"eth1", "eth2"}
	want.Capture.Method = "xdp"
	want.Capture.XDPMode = "native"
	want.Capture.CPUs = []int{2, 3}
	want.Capture.UMEMFrames = 131072
	want.Capture.FlushInterval = 250 * time.Millisecond
	want.Capture.Observe = true
	want.Capture.AFPacketRings = 4
	want.Capture.AFPacketBlockSize = 8 << 20
	want.Capture.AFPacketBlocks = 32
	want.Capture.XDPObserve = true
	want.Capture.PinRoot = "/sys/fs/bpf/sensor"
	want.Capture.DropRules = []xdp.DropRule{
		{Proto: 17, Port: 53},
		{Proto: 6, Port: 22, Src: netip.MustParsePrefix("192.0.2.0/24"), Dst: netip.MustParsePrefix("198.51.100.7/32")},
		{Src: netip.MustParsePrefix("10.0.0.0/8")},
		{Dst: netip.MustParsePrefix("10.0.0.0/8")},
		{Proto: 50, Dst: netip.MustParsePrefix("2001:db8::/32")},
		{Proto: 1, Src: netip.MustParsePrefix("0.0.0.0/0")},
	}
	want.Capture.Cutoff = xdp.CutoffConfig{
		Default: xdp.Limit{Bytes: 20000},
		Rules: []xdp.CutoffRule{
			{Name: "port 443", Match: []xdp.DropRule{{Port: 443}}, Limit: xdp.Limit{Bytes: 64 << 10}},
			{Name: "tcp and port 22", Match: []xdp.DropRule{{Proto: 6, Port: 22}}, Limit: xdp.Limit{Packets: 5}},
			{Name: "host 10.0.0.5 or net 2001:db8::/32", Match: []xdp.DropRule{
				{Src: netip.MustParsePrefix("10.0.0.5/32")}, {Dst: netip.MustParsePrefix("10.0.0.5/32")},
				{Src: netip.MustParsePrefix("2001:db8::/32")}, {Dst: netip.MustParsePrefix("2001:db8::/32")},
			}},
			{Name: "udp", Match: []xdp.DropRule{{Proto: 17}}, Limit: xdp.Limit{Bytes: 1.5e6, Packets: 100}},
		},
		JitterPercent: 10,
	}
	want.Spool.Dirs = []string{"/data1/spool", "/data2/spool"}
	want.Spool.SnapLen = 9000
	want.Spool.RotateSize = 512 << 20
	want.Spool.RotateAge = 2 * time.Minute
	want.Spool.MaxLiveIndex = 256 << 20
	want.Spool.WriteBuffer = 2 << 20
	want.Spool.MaxCachedIndexes = 100
	want.Spool.MaxBytes = 4e12
	want.Spool.MinFreePercent = 5.5
	want.Spool.MaxHeldPercent = 2.5
	want.Spool.MaxFiles = 10000
	want.API.Listen = "0.0.0.0:1234"
	want.API.Socket = "/run/sensor/api.sock"
	want.API.SocketGroup = "analysts"
	want.API.CertsDir = "/etc/stenod/certs"
	want.API.PProf = true
	want.API.QueryTimeout = 15 * time.Minute
	want.API.MaxQueryBytes = 1 << 20
	want.API.MaxConns = 200
	want.API.MaxConnsPerClient = 20
	want.API.FDReserve = 4096
	want.API.CommunityIDSeed = 7
	want.API.AlertWindow = 90 * time.Second
	want.IPFIX = ipfix.Config{Collectors: []string{"udp://127.0.0.1:2055", "tcp://[2001:db8::9]:4739"}, ActiveTimeout: 2 * time.Minute,
		IdleTimeout: 20 * time.Second, TemplateRefresh: 30 * time.Second, SensorID: 4294967295, EnterpriseNumber: 12345,
		BaseURL: "https://sensor1.example:1234"}
	want.Demo = Demo{Spool: "/tmp/demo", Captures: "/srv/pcaps", Rate: 50, MaxBytes: 3 << 30}
	want.Fleet = fleet.Config{Sensors: []fleet.Sensor{
		{Name: "dc1", URL: "https://10.0.0.2:1234", Certs: "/etc/stenod/fleet"},
		{Name: "local", URL: "http://127.0.0.1:1235"},
	}, Timeout: 2 * time.Minute, StallTimeout: 10 * time.Second}

	// Every key must differ from its default in the test file, or the test
	// would not show that it is parsed.
	def := Default()
	for _, k := range keys {
		got := k.value(&c).Interface()
		if reflect.DeepEqual(got, k.value(&def).Interface()) {
			t.Errorf("key %s: the test file leaves it at its default", k.name)
		}
		if w := k.value(&want).Interface(); !reflect.DeepEqual(got, w) {
			t.Errorf("key %s = %#v, want %#v", k.name, got, w)
		}
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config:\n got %+v\nwant %+v", c, want)
	}

	// Format and Parse round-trip.
	back, err := Parse(c.Format(), "formatted")
	if err != nil {
		t.Fatalf("parse formatted: %v\n%s", err, c.Format())
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, c)
	}
}

// TestBadFiles: every bad file is refused with the offending key named.
func TestBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		key        string // named in the error as `key "…"` or `unknown key "…"`
		unknown    bool
	}{
		{"unknown top key", `{"usr": "x"}`, "usr", true},
		{"unknown section key", `{"spool": {"budgt": "1GiB"}}`, "spool.budgt", true},
		{"unknown section", `{"capture": {}, "storage": {}}`, "storage", true},
		{"unknown rule field", `{"capture": {"drop_rules": [{"proto": 6, "prot": 7}]}}`, "capture.drop_rules[0].prot", true},
		{"duplicate key", `{"spool": {"max_files": 2, "max_files": 3}}`, "spool.max_files", false},
		{"null", `{"api": {"listen": null}}`, "api.listen", false},
		{"string for int", `{"capture": {"umem_frames": "many"}}`, "capture.umem_frames", false},
		{"float for int", `{"spool": {"max_files": 2.5}}`, "spool.max_files", false},
		{"int for string list", `{"capture": {"interfaces": "eth1"}}`, "capture.interfaces", false},
		{"bad size unit", `{"spool": {"max_bytes": "10 GiBs"}}`, "spool.max_bytes", false},
		{"negative size", `{"spool": {"max_bytes": -1}}`, "spool.max_bytes", false},
		{"fractional bytes", `{"spool": {"rotate_size": "1.5B"}}`, "spool.rotate_size", false},
		{"number for duration", `{"spool": {"rotate_age": 300}}`, "spool.rotate_age", false},
		{"bad duration", `{"capture": {"flush_interval": "soon"}}`, "capture.flush_interval", false},
		{"negative duration", `{"api": {"query_timeout": "-1s"}}`, "api.query_timeout", false},
		{"bool as string", `{"capture": {"observe": "yes"}}`, "capture.observe", false},
		{"bad rule word", `{"capture": {"drop_rules": ["ip proto 17", "portt 53"]}}`, "capture.drop_rules[1]", false},
		{"empty rule", `{"capture": {"drop_rules": [{}]}}`, "capture.drop_rules[0]", false},
		{"rule host bits", `{"capture": {"drop_rules": ["net 10.0.0.1/8"]}}`, "capture.drop_rules[0]", false},
		{"rule mixed families", `{"capture": {"drop_rules": ["src net 10.0.0.0/8 and dst host ::1"]}}`, "capture.drop_rules[0]", false},
		{"rule old syntax", `{"capture": {"drop_rules": ["udp port 53"]}}`, "capture.drop_rules[0]", false},
		{"rule not", `{"capture": {"drop_rules": ["tcp", "not port 22"]}}`, "capture.drop_rules[1]", false},
		{"rule time", `{"capture": {"drop_rules": ["after 1h ago"]}}`, "capture.drop_rules[0]", false},
		{"rule number", `{"capture": {"drop_rules": [53]}}`, "capture.drop_rules[0]", false},
		{"rules not array", `{"capture": {"drop_rules": "tcp"}}`, "capture.drop_rules", false},
		{"unknown sensor member", `{"fleet": {"sensors": [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "b", "cert": "/x"}]}}`, "fleet.sensors[1].cert", true},
		{"sensor not object", `{"fleet": {"sensors": ["https://a:1234"]}}`, "fleet.sensors[0]", false},
		{"sensor name number", `{"fleet": {"sensors": [{"name": 1}]}}`, "fleet.sensors[0].name", false},
		{"sensor name slash", `{"fleet": {"sensors": [{"name": "a/b", "url": "http://127.0.0.1:1"}]}}`, "fleet.sensors", false},
		{"sensor twice", `{"fleet": {"sensors": [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "a", "url": "http://127.0.0.1:2"}]}}`, "fleet.sensors", false},
		{"sensor https without certs", `{"fleet": {"sensors": [{"name": "a", "url": "https://10.0.0.1:1234"}]}}`, "fleet.sensors", false},
		{"sensor http on the network", `{"fleet": {"sensors": [{"name": "a", "url": "http://10.0.0.1:1234"}]}}`, "fleet.sensors", false},
		{"sensor url path", `{"fleet": {"sensors": [{"name": "a", "url": "https://10.0.0.1:1234/query", "certs": "/c"}]}}`, "fleet.sensors", false},
		{"fleet timeout", `{"fleet": {"timeout": "0s"}}`, "fleet.timeout", false},
		{"fleet stall timeout", `{"fleet": {"stall_timeout": "0"}}`, "fleet.stall_timeout", false},
		{"rule object host bits", `{"capture": {"drop_rules": [{"src": "10.0.0.1/8"}]}}`, "capture.drop_rules[0].src", false},
		{"rule object bad address", `{"capture": {"drop_rules": [{"dst": "10.0.0.0/8 or port 1"}]}}`, "capture.drop_rules[0].dst", false},
		{"rule bad port", `{"capture": {"drop_rules": [{"port": 0}]}}`, "capture.drop_rules[0].port", false},
		{"rule bad proto", `{"capture": {"drop_rules": [{"proto": "gre"}]}}`, "capture.drop_rules[0].proto", false},
		{"too many rules", `{"capture": {"drop_rules": [` + strings.Repeat(`"port 1",`, 16) + `"port 2"]}}`, "capture.drop_rules", false},
		{"cutoff unit", `{"capture": {"cutoff": "20 parsecs"}}`, "capture.cutoff", false},
		{"cutoff negative", `{"capture": {"cutoff": -1}}`, "capture.cutoff", false},
		{"cutoff packets twice", `{"capture": {"cutoff": "5p+6p"}}`, "capture.cutoff", false},
		{"cutoff fractional", `{"capture": {"cutoff": "1.5B"}}`, "capture.cutoff", false},
		{"cutoff rule no arrow", `{"capture": {"cutoff_rules": ["port 443 20KB"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule two arrows", `{"capture": {"cutoff_rules": ["port 443 => 20KB => 5p"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule no query", `{"capture": {"cutoff_rules": [" => 20KB"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule bad query", `{"capture": {"cutoff_rules": ["tcp => 1p", "portt 53 => 20KB"]}}`, "capture.cutoff_rules[1]", false},
		{"cutoff rule not", `{"capture": {"cutoff_rules": ["not port 22 => never"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule time", `{"capture": {"cutoff_rules": ["after 1h ago => 5p"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule bad limit", `{"capture": {"cutoff_rules": ["port 22 => lots"]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rule number", `{"capture": {"cutoff_rules": [22]}}`, "capture.cutoff_rules[0]", false},
		{"cutoff rules not array", `{"capture": {"cutoff_rules": "port 22 => 5p"}}`, "capture.cutoff_rules", false},
		{"cutoff rule repeated", `{"capture": {"cutoff_rules": ["port 22 => 5p", "port  22 => 10p"]}}`, "capture.cutoff_rules[1]", false},
		{"cutoff rules too many matches", `{"capture": {"cutoff_rules": [` + strings.Repeat(`"net 10.0.0.0/8 or net 10.1.0.0/16 or net 10.2.0.0/16 or net 10.3.0.0/16 => 5p", `, 1) +
			`"net 11.0.0.0/8 or net 11.1.0.0/16 or net 11.2.0.0/16 or net 11.3.0.0/16 => 5p", "net 12.0.0.0/8 or net 12.1.0.0/16 or net 12.2.0.0/16 or net 12.3.0.0/16 => 5p", ` +
			`"net 13.0.0.0/8 or net 13.1.0.0/16 or net 13.2.0.0/16 or net 13.3.0.0/16 => 5p", "port 1 => 5p"]}}`, "capture.cutoff_rules", false},
		{"cutoff jitter", `{"capture": {"cutoff_jitter": 101}}`, "capture.cutoff_jitter", false},
		{"cutoff jitter negative", `{"capture": {"cutoff_jitter": -1}}`, "capture.cutoff_jitter", false},
		{"cutoff jitter string", `{"capture": {"cutoff_jitter": "10%"}}`, "capture.cutoff_jitter", false},
		// Ranges the packages' Validate methods own, named by key.
		{"method", `{"capture": {"method": "pcap"}}`, "capture.method", false},
		{"xdp mode", `{"capture": {"xdp_mode": "offload"}}`, "capture.xdp_mode", false},
		{"negative cpu", `{"capture": {"cpus": [0, -1]}}`, "capture.cpus", false},
		{"umem frames", `{"capture": {"umem_frames": 10}}`, "capture.umem_frames", false},
		{"afpacket rings", `{"capture": {"afpacket_rings": -1}}`, "capture.afpacket_rings", false},
		{"afpacket block size", `{"capture": {"afpacket_block_size": "100KB"}}`, "capture.afpacket_block_size", false},
		{"afpacket blocks", `{"capture": {"afpacket_blocks": 1}}`, "capture.afpacket_blocks", false},
		{"flush interval", `{"capture": {"flush_interval": "2s"}}`, "capture.flush_interval", false},
		{"long interface name", `{"capture": {"interfaces": ["a-very-long-interface"]}}`, "capture.interfaces", false},
		{"no spool dir", `{"spool": {"dirs": []}}`, "spool.dirs", false},
		{"spool dir twice", `{"spool": {"dirs": ["/a", "/a/"]}}`, "spool.dirs", false},
		{"snap length", `{"spool": {"snap_length": 10}}`, "spool.snap_length", false},
		{"rotate size", `{"spool": {"rotate_size": "1KiB"}}`, "spool.rotate_size", false},
		{"rotate age", `{"spool": {"rotate_age": "10ms"}}`, "spool.rotate_age", false},
		{"max live index", `{"spool": {"max_live_index": "64KiB"}}`, "spool.max_live_index", false},
		{"write buffer", `{"spool": {"write_buffer": 100}}`, "spool.write_buffer", false},
		{"cached indexes", `{"spool": {"max_cached_indexes": 0}}`, "spool.max_cached_indexes", false},
		{"max bytes", `{"spool": {"max_bytes": "1GiB"}}`, "spool.max_bytes", false},
		{"min free", `{"spool": {"min_free_percent": 100}}`, "spool.min_free_percent", false},
		{"max files", `{"spool": {"max_files": 1}}`, "spool.max_files", false},
		{"listen without TLS", `{"api": {"listen": "0.0.0.0:1234"}}`, "api.listen", false},
		{"listen no port", `{"api": {"listen": "127.0.0.1"}}`, "api.listen", false},
		{"max query bytes", `{"api": {"max_query_bytes": "1GiB"}}`, "api.max_query_bytes", false},
		{"relative socket", `{"api": {"socket": "stenod.sock"}}`, "api.socket", false},
		{"max connections", `{"api": {"max_connections": -1}}`, "api.max_connections", false},
		{"fd reserve", `{"api": {"fd_reserve": -1}}`, "api.fd_reserve", false},
		{"community id seed", `{"api": {"community_id_seed": 65536}}`, "api.community_id_seed", false},
		{"alert window", `{"api": {"alert_window": "0s"}}`, "api.alert_window", false},
		{"ipfix collector", `{"ipfix": {"collectors": ["http://x:1"]}}`, "ipfix.collectors", false},
		{"ipfix idle", `{"ipfix": {"idle_timeout": "0s"}}`, "ipfix.idle_timeout", false},
		{"ipfix sensor id", `{"ipfix": {"sensor_id": 4294967296}}`, "ipfix.sensor_id", false},
		{"ipfix pen", `{"ipfix": {"enterprise_number": 0}}`, "ipfix.enterprise_number", false},
		{"ipfix base url", `{"ipfix": {"base_url": "sensor:1234"}}`, "ipfix.base_url", false},
		{"user", `{"user": "a:b"}`, "user", false},
		{"demo rate", `{"demo": {"rate": 0}}`, "demo.rate", false},
		{"demo budget", `{"demo": {"max_bytes": "1MiB"}}`, "demo.max_bytes", false},
		{"section not object", `{"spool": ["x"]}`, "spool", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file), "/etc/stenod/config.json")
			if err == nil {
				t.Fatalf("accepted %s", tc.file)
			}
			want := `key "` + tc.key + `"`
			if tc.unknown {
				want = `unknown key "` + tc.key + `"`
			}
			if !strings.HasPrefix(err.Error(), "config /etc/stenod/config.json: ") || !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name the file and %s", err, want)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error %v is not a *KeyError", err)
			}
			if tc.unknown != errors.Is(err, ErrUnknownKey) {
				t.Errorf("errors.Is(%v, ErrUnknownKey) = %v", err, !tc.unknown)
			}
			if ke != nil && !tc.unknown && !errors.Is(err, ErrInvalidValue) {
				t.Errorf("errors.Is(%v, ErrInvalidValue) = false", err)
			}
		})
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, file := range []string{``, `{`, "{\n\"user\": \"x\",\n}", `[]`, `{"user": "x"} {}`, `"x"`} {
		_, err := Parse([]byte(file), "f.json")
		if err == nil || !strings.HasPrefix(err.Error(), "config f.json: ") {
			t.Errorf("%q: error %v does not name the file", file, err)
		}
	}
	_, err := Parse([]byte("{\n\"user\": \"x\",\n}"), "f.json")
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error %v does not name line 3", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestValidateNeedsInterface: a file may leave the interfaces out, the
// running daemon may not.
func TestValidateNeedsInterface(t *testing.T) {
	c, err := Parse([]byte(`{}`), "f")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "capture.interfaces" {
		t.Errorf("Validate without interfaces: %v", err)
	}
	if err := c.Set("capture.interfaces", "eth1, eth2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestSetGet(t *testing.T) {
	c := Default()
	for _, tc := range []struct{ key, value, get string }{
		{"capture.interfaces", "eth1,eth2", "eth1,eth2"},
		{"capture.cpus", "1, 3", "1,3"},
		{"capture.observe", "true", "true"},
		{"capture.flush_interval", "200ms", "200ms"},
		{"capture.drop_rules", "udp and port 53; src net 10.0.0.0/8 or icmp6", "udp and port 53; src net 10.0.0.0/8; icmp6"},
		{"capture.cutoff", "20KB", "20kB"},
		{"capture.cutoff", "64KiB", "64KiB"},
		{"capture.cutoff", "5P", "5p"},
		{"capture.cutoff", "never", "0"},
		{"capture.cutoff", "1.5MB", "1500kB"},
		{"capture.cutoff_rules", " port 443 => 20KB;tcp and port 22 => 5p ; host 10.0.0.5 => 0;", "port 443 => 20kB; tcp and port 22 => 5p; host 10.0.0.5 => never"},
		{"capture.cutoff_jitter", "25", "25"},
		{"spool.max_bytes", "500000000000", "500GB"},
		{"spool.rotate_size", "256MiB", "256MiB"},
		{"spool.write_buffer", "64KiB", "64KiB"},
		{"spool.min_free_percent", "2.5", "2.5"},
		{"spool.rotate_age", "1h", "1h"},
		{"api.listen", "[::1]:9000", "[::1]:9000"},
		{"api.pprof", "true", "true"},
		{"api.socket", "/run/x/api.sock", "/run/x/api.sock"},
		{"demo.rate", "10", "10"},
	} {
		if err := c.Set(tc.key, tc.value); err != nil {
			t.Errorf("Set(%s, %q): %v", tc.key, tc.value, err)
			continue
		}
		if got, err := c.Get(tc.key); err != nil || got != tc.get {
			t.Errorf("Get(%s) = %q, %v, want %q", tc.key, got, err, tc.get)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for _, tc := range []struct{ key, value string }{
		{"spool.budget", "1"}, {"capture.umem_frames", "x"}, {"spool.max_bytes", "-5"},
		{"capture.cpus", "a"}, {"capture.observe", "maybe"}, {"api.query_timeout", "1 hour"},
		{"capture.drop_rules", "port"}, {"capture.drop_rules", "tcp; vlan 1"},
		{"capture.cutoff", "20KB5p"}, {"capture.cutoff", "-5p"}, {"capture.cutoff", "p"},
		{"capture.cutoff_rules", "port 443 => 20KB; vlan 1 => 5p"}, {"capture.cutoff_rules", "port 443"},
		{"capture.cutoff_jitter", "-1"}, {"capture.cutoff_jitter", "ten"},
	} {
		if err := c.Set(tc.key, tc.value); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("Set(%s, %q) = %v, want an error naming the key", tc.key, tc.value, err)
		}
	}
	// Validate names the key a flag set out of range.
	c = Default()
	_ = c.Set("capture.interfaces", "eth1")
	_ = c.Set("capture.umem_frames", "1")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `key "capture.umem_frames"`) {
		t.Errorf("Validate: %v", err)
	}
}

func TestSize(t *testing.T) {
	for s, want := range map[string]Size{
		"0": 0, "1048576": 1 << 20, "1GiB": 1 << 30, "1 GiB": 1 << 30, "500MB": 500e6, "1.5TiB": 3 << 39,
		"64kib": 64 << 10, "2kB": 2000, "7B": 7, "1PB": 1e15,
	} {
		var got Size
		if err := got.UnmarshalText([]byte(s)); err != nil || got != want {
			t.Errorf("Size(%q) = %d, %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GiB", "1 G", "-1", "1.2.3MB", "0.5B", "9999999PiB", "1e3"} {
		var n Size
		if err := n.UnmarshalText([]byte(s)); err == nil {
			t.Errorf("Size(%q) = %d, want an error", s, n)
		}
	}
	for n, want := range map[Size]string{0: "0", 1 << 30: "1GiB", 1536: "1536", 3 << 20: "3MiB", 1000: "1kB", 1001: "1001", 500e9: "500GB"} {
		if got := n.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", n, got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"0": 0, "0s": 0, "5m": 5 * time.Minute, "100ms": 100 * time.Millisecond, "7d": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute,
	} {
		var got Duration
		if err := got.UnmarshalText([]byte(s)); err != nil || time.Duration(got) != want {
			t.Errorf("Duration(%q) = %v, %v, want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "5", "-1m", "1 day", "xd"} {
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err == nil {
			t.Errorf("Duration(%q): no error", s)
		}
	}
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Second: "1m30s", 0: "0s", 100 * time.Millisecond: "100ms"} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v).String() = %q, want %q", d, got, want)
		}
	}
}

// TestDropRules: the string form is the query language's (query tests it
// in depth); the object form means the same as the query it is written as.
func TestDropRules(t *testing.T) {
	p := netip.MustParsePrefix
	for in, want := range map[string]DropRules{
		`["udp and port 53"]`:                    {{Proto: 17, Port: 53}},
		`[{"proto": "udp", "port": 53}]`:         {{Proto: 17, Port: 53}},
		`[{"proto": 17}, {"proto": "ICMP6"}]`:    {{Proto: 17}, {Proto: 58, Src: p("::/0")}},
		`[{"src": "::ffff:10.0.0.0/104"}]`:       {{Src: p("10.0.0.0/8")}},
		`[{"dst": "2001:db8::1", "port": 443}]`:  {{Port: 443, Dst: p("2001:db8::1/128")}},
		`["host 10.0.0.1", {"src": "10.0.0.1"}]`: {{Src: p("10.0.0.1/32")}, {Dst: p("10.0.0.1/32")}, {Src: p("10.0.0.1/32")}},
		`["tcp or udp", "net 10.9.0.0/16"]`:      {{Proto: 6}, {Proto: 17}, {Src: p("10.9.0.0/16")}, {Dst: p("10.9.0.0/16")}},
		`[]`:                                     {},
	} {
		var got DropRules
		if err := json.Unmarshal([]byte(in), &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, %v, want %v", in, got, err, want)
			continue
		}
		// Written out and read back: the same rules.
		text, _ := got.MarshalText()
		var back DropRules
		if err := back.UnmarshalText(text); err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("%s: written %q, read back %v, %v", in, text, back, err)
		}
	}
}

// TestCutoffLimit: every form of a limit, written back in its shortest
// form and read back the same.
func TestCutoffLimit(t *testing.T) {
	for in, want := range map[string]xdp.Limit{
		"0": {}, "never": {}, "NEVER": {}, "0B": {}, "0p": {},
		"20KB": {Bytes: 20000}, "20kB": {Bytes: 20000}, "1.5MB": {Bytes: 1.5e6}, "64KiB": {Bytes: 64 << 10}, "20000": {Bytes: 20000},
		"5p": {Packets: 5}, " 5P ": {Packets: 5}, "20KB+10p": {Bytes: 20000, Packets: 10}, "10p + 1MiB": {Bytes: 1 << 20, Packets: 10},
	} {
		var got CutoffLimit
		if err := got.UnmarshalText([]byte(in)); err != nil || xdp.Limit(got) != want {
			t.Errorf("%q: %+v, %v, want %+v", in, got, err, want)
			continue
		}
		var back CutoffLimit
		if err := back.UnmarshalText([]byte(got.String())); err != nil || back != got {
			t.Errorf("%q: written %q, read back %+v, %v", in, got.String(), back, err)
		}
		raw, _ := json.Marshal(got)
		var fromJSON CutoffLimit
		if err := json.Unmarshal(raw, &fromJSON); err != nil || fromJSON != got {
			t.Errorf("%q: JSON %s read back %+v, %v", in, raw, fromJSON, err)
		}
	}
	for _, in := range []string{"", "p", "5", "-5p", "5p+6p", "1KB+2KB", "1.5p", "20 parsecs", "nevermore", "5 packets", "+"} {
		var l CutoffLimit
		err := l.UnmarshalText([]byte(in))
		if in == "5" {
			// A bare number is bytes, as a Size.
			if err != nil || l.Bytes != 5 {
				t.Errorf("%q: %+v, %v", in, l, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), `"5p"`) {
			t.Errorf("%q: %+v, error %v does not say what a limit is", in, l, err)
		}
	}
}

// TestCutoffRules: the rules' errors name the rule and carry the query
// parser's position; a rule written out reads back the same.
func TestCutoffRules(t *testing.T) {
	var rs CutoffRules
	err := rs.UnmarshalText([]byte("port 443 => 20KB; tcp and portt 22 => 5p"))
	if err == nil || !strings.Contains(err.Error(), `cutoff rule "tcp and portt 22 => 5p": query: at 8 ("portt")`) {
		t.Errorf("bad query: %v", err)
	}
	err = rs.UnmarshalText([]byte("port 443 => 20 KBs"))
	if err == nil || !strings.Contains(err.Error(), `cutoff rule "port 443 => 20 KBs": limit "20 KBs": want a size`) {
		t.Errorf("bad limit: %v", err)
	}
	err = rs.UnmarshalText([]byte("src port 53 => 5p"))
	if err == nil || !strings.Contains(err.Error(), `cutoff rule "src port 53 => 5p"`) || !errors.Is(err, query.ErrDropRule) {
		t.Errorf("inexpressible query: %v", err)
	}

	// From the file: the key and the item named, with the file.
	_, err = Parse([]byte(`{"capture": {"cutoff_rules": ["port 443 => 20KB", "host 10.0.0.500 => never"]}}`), "c.json")
	if err == nil || !strings.HasPrefix(err.Error(), `config c.json: key "capture.cutoff_rules[1]": cutoff rule "host 10.0.0.500 => never": query: at 5 ("10.0.0.500")`) {
		t.Errorf("file: %v", err)
	}

	for _, in := range []string{
		"port 443 => 20kB",
		"tcp and (port 22 or port 3389) => 5p; udp => 1MiB+10p; host 10.0.0.5 or host 2001:db8::5 => never",
		"src net 192.0.2.0/24 => 1kB",
	} {
		if err := rs.UnmarshalText([]byte(in)); err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		text, _ := rs.MarshalText()
		if string(text) != in {
			t.Errorf("%q written back as %q", in, text)
		}
		var back CutoffRules
		raw, _ := json.Marshal(rs)
		if err := json.Unmarshal(raw, &back); err != nil || !reflect.DeepEqual(back, rs) {
			t.Errorf("%q: JSON %s read back %+v, %v", in, raw, back, err)
		}
	}

	// Enabled follows the limits: a never rule alone cuts nothing.
	c := Default()
	if c.Capture.Cutoff.Enabled() {
		t.Error("the default configuration cuts")
	}
	_ = c.Set("capture.cutoff_rules", "host 10.0.0.5 => never")
	if c.Capture.Cutoff.Enabled() {
		t.Error("a never rule alone cuts")
	}
	_ = c.Set("capture.cutoff_rules", "port 22 => 5p")
	if !c.Capture.Cutoff.Enabled() {
		t.Error("a rule with a limit does not cut")
	}
	if f := c.Format(); !bytes.Contains(f, []byte(`"cutoff_rules": ["port 22 => 5p"]`)) {
		t.Errorf("Format writes the rules as\n%s", f)
	}

	// A flag's jitter out of range: Validate names the key.
	c = Default()
	_ = c.Set("capture.interfaces", "eth1")
	if err := c.Set("capture.cutoff_jitter", "150"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `key "capture.cutoff_jitter": cutoff jitter 150%: want a percent from 0 to 100`) {
		t.Errorf("Validate: %v", err)
	}
}
