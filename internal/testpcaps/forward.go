// Package testpcaps forwards to internal/testkit/testpcaps, where the test
// captures' reader now lives. It exists only until capture/'s tests import
// the new path (capture/ was being edited on another branch when the
// helpers moved); it holds no code of its own. To remove it:
//
//	sed -i 's#stenod/internal/testpcaps"#stenod/internal/testkit/testpcaps"#' capture/*_test.go
//	git rm -r internal/testpcaps
package testpcaps

import kit "github.com/stenod/stenod/internal/testkit/testpcaps"

type (
	Packet  = kit.Packet
	Capture = kit.Capture
)

var (
	Dir      = kit.Dir
	RepoRoot = kit.RepoRoot
	Files    = kit.Files
	Read     = kit.Read
	Ethernet = kit.Ethernet
)
