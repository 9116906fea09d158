package main

import (
	"context"
	"errors"
)

// cmdCerts is being written; this placeholder keeps the command list compiling.
func cmdCerts(_ context.Context, _ *env, _ []string) error {
	return errors.New("not implemented yet")
}
