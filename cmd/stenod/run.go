package main

import (
	"context"
	"errors"
)

// cmdRun is being written; this placeholder keeps the command list compiling.
func cmdRun(_ context.Context, _ *env, _ []string) error {
	return errors.New("not implemented yet")
}
