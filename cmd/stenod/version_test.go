package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestBuildVersion: what 'stenod version' says for each way of building.
func TestBuildVersion(t *testing.T) {
	vcs := func(rev, tm, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: tm}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "072bd534719ddd31eda717c1b86172686858ad14"
	for _, tc := range []struct {
		name                string
		ldVersion, ldCommit string
		bi                  *debug.BuildInfo
		want                string
	}{
		{"no build info", "dev", "", nil, "stenod dev (commit unknown)"},
		{"go build -buildvcs=false", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"stenod dev (commit unknown)"},
		{"make build", "v1.2.0-3-g072bd53", "072bd53", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"stenod v1.2.0-3-g072bd53 (commit 072bd53)"},
		{"make build with vcs info", "v1.2.0-3-g072bd53-dirty", "072bd53",
			&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203153531-072bd534719d+dirty"}, Settings: vcs(rev, "2026-12-03T15:35:31Z", "true")},
			"stenod v1.2.0-3-g072bd53-dirty (commit 072bd53-dirty, 2026-12-03T15:35:31Z)"},
		{"go build in a checkout (Go < 1.24)", "dev", "",
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-12-03T15:35:31Z", "false")},
			"stenod dev (commit 072bd534719d, 2026-12-03T15:35:31Z)"},
		{"go build in a checkout", "dev", "",
			&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203153531-072bd534719d+dirty"}, Settings: vcs(rev, "2026-12-03T15:35:31Z", "true")},
			"stenod v0.0.0-20261203153531-072bd534719d+dirty (commit 072bd534719d-dirty, 2026-12-03T15:35:31Z)"},
		{"go install @v1.2.3", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}},
			"stenod v1.2.3 (commit unknown)"},
		{"go install @commit", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.4-0.20261203153531-072bd534719d"}},
			"stenod v1.2.4-0.20261203153531-072bd534719d (commit 072bd534719d, 2026-12-03T15:35:31Z)"},
		{"go install @commit before a pre-release", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0-rc.1.0.20261203153531-072bd534719d"}},
			"stenod v1.3.0-rc.1.0.20261203153531-072bd534719d (commit 072bd534719d, 2026-12-03T15:35:31Z)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildVersion(tc.ldVersion, tc.ldCommit, tc.bi).String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestVersionCommand: 'stenod version' prints one line from this binary's
// build information, and refuses arguments.
func TestVersionCommand(t *testing.T) {
	old := buildInfo
	t.Cleanup(func() { buildInfo = old })
	buildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203153531-072bd534719d"}}, true
	}
	code, out, stderr := runCmd(t, "version")
	if code != 0 || out != "stenod v0.0.0-20261203153531-072bd534719d (commit 072bd534719d, 2026-12-03T15:35:31Z)\n" {
		t.Errorf("exit %d: %q %q", code, out, stderr)
	}
	if code, out, _ := runCmd(t, "--version"); code != 0 || !strings.HasPrefix(out, "stenod v0.0.0-") {
		t.Errorf("--version: exit %d: %q", code, out)
	}
	if code, _, _ := runCmd(t, "version", "extra"); code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}
