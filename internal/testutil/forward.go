// Package testutil forwards to internal/testkit/testutil, where the test
// helpers now live. It exists only until capture/'s tests import the new
// path (capture/ was being edited on another branch when the helpers
// moved); it holds no code of its own. To remove it:
//
//	sed -i 's#stenod/internal/testutil"#stenod/internal/testkit/testutil"#' capture/*_test.go
//	git rm -r internal/testutil
package testutil

import kit "github.com/stenod/stenod/internal/testkit/testutil"

type (
	Sender     = kit.Sender
	Veth       = kit.Veth
	SyncBuffer = kit.SyncBuffer
)

var (
	NewSender         = kit.NewSender
	BPFFS             = kit.BPFFS
	HeldSpool         = kit.HeldSpool
	InCI              = kit.InCI
	SkipOrFail        = kit.SkipOrFail
	RequireRoot       = kit.RequireRoot
	RequireCommand    = kit.RequireCommand
	Run               = kit.Run
	NewVeth           = kit.NewVeth
	EnvInt            = kit.EnvInt
	WiresharkProblems = kit.WiresharkProblems
)
