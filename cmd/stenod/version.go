package main

import (
	"context"
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"
	"time"
)

// version and commitFlag are set at build time with
// -ldflags "-X main.version=... -X main.commitFlag=..." (make build and
// make deb do). A build without them (go build, go install) reports what
// the Go toolchain recorded instead: see buildVersion.
var (
	version    = "dev"
	commitFlag string
)

// buildInfo is the build information the binary carries; tests replace it.
var buildInfo = debug.ReadBuildInfo

// versionInfo says what a binary was built from.
type versionInfo struct {
	Version  string // release or module version; "dev" when unknown
	Commit   string // VCS revision; "unknown" when unknown
	Time     string // commit time, RFC 3339 in UTC; "" when unknown
	Modified bool   // built from a tree with uncommitted changes
}

// String is what 'stenod version' prints:
//
//	stenod v1.2.3 (commit 0123456789ab, 2026-12-03T15:35:31Z)
//	stenod dev (commit 0123456789ab-dirty, 2026-12-03T15:35:31Z)
//	stenod dev (commit unknown)
func (v versionInfo) String() string {
	commit := v.Commit
	if v.Modified {
		commit += "-dirty"
	}
	if v.Time != "" {
		commit += ", " + v.Time
	}
	return fmt.Sprintf("stenod %s (commit %s)", v.Version, commit)
}

// pseudoVersion matches the end of a Go module pseudo-version
// (v0.0.0-20261203153531-072bd534719d, v1.2.4-0.20261203153531-072bd534719d,
// v1.2.3-pre.0.20261203153531-072bd534719d), with an optional +suffix:
// the commit time (UTC) and the first 12 hex digits of the revision.
var pseudoVersion = regexp.MustCompile(`[-.](\d{14})-([0-9a-f]{12})(\+[0-9A-Za-z.-]+)?$`)

// buildVersion combines the -ldflags values (ldVersion, ldCommit; "dev" and
// "" mean unset) with the build information Go records, which is all a
// binary built with go build or go install has:
//   - the main module's version: v1.2.3 for go install ...@v1.2.3, a
//     pseudo-version (which holds the commit and its time) for go install
//     ...@COMMIT and, since Go 1.24, for go build in a git checkout;
//     "(devel)" when unknown;
//   - vcs.revision, vcs.time and vcs.modified, for go build in a checkout
//     (unless -buildvcs=false).
//
// The -ldflags values win; what they leave unset comes from the build
// information.
func buildVersion(ldVersion, ldCommit string, bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: "dev", Commit: "unknown"}
	var revision, vcsTime string
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			v.Version = mv
			if m := pseudoVersion.FindStringSubmatch(mv); m != nil {
				if revision == "" {
					revision = m[2]
				}
				if vcsTime == "" {
					if t, err := time.Parse("20060102150405", m[1]); err == nil {
						vcsTime = t.UTC().Format(time.RFC3339)
					}
				}
			}
			v.Modified = v.Modified || strings.HasSuffix(mv, "+dirty")
		}
	}
	if revision != "" {
		// As long as pseudo-versions and git's short hashes go.
		v.Commit = revision[:min(len(revision), 12)]
	}
	v.Time = vcsTime
	if ldVersion != "" && ldVersion != "dev" {
		v.Version = ldVersion
	}
	if ldCommit != "" {
		v.Commit = ldCommit
	}
	return v
}

// currentVersion is this binary's versionInfo.
func currentVersion() versionInfo {
	bi, ok := buildInfo()
	if !ok {
		bi = nil
	}
	return buildVersion(version, commitFlag, bi)
}

func cmdVersion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "", "Prints the version and the commit stenod was built from, with the commit's\n"+
		"time when the build recorded it; \"-dirty\" marks a build from a tree with\n"+
		"uncommitted changes.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("unexpected arguments %q", fs.Args())
	}
	fmt.Fprintln(e.stdout, currentVersion())
	return nil
}
