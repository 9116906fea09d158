package main

import (
	"context"
	"errors"
)

// cmdRead is being written; this placeholder keeps the command list compiling.
func cmdRead(_ context.Context, _ *env, _ []string) error {
	return errors.New("not implemented yet")
}
