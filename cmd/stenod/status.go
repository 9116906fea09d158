package main

import (
	"context"
	"errors"
)

// cmdStatus is being written; this placeholder keeps the command list compiling.
func cmdStatus(_ context.Context, _ *env, _ []string) error {
	return errors.New("not implemented yet")
}
