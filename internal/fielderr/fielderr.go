// Package fielderr is the error a package's Config.Validate returns for an
// impossible setting: the message, unchanged, and the name of the Config
// field it is about, so that package config can name the key the user
// wrote ("spool.max_bytes") without guessing which field was wrong.
package fielderr

import (
	"errors"
	"fmt"
)

// Error is an error about one field of a Config.
type Error struct {
	// Field is the Go name of the field to blame, "MaxBytes". A check
	// that involves two fields blames the one whose value the message
	// quotes first.
	Field string
	Err   error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Errorf is fmt.Errorf (with %w) about field.
func Errorf(field, format string, args ...any) error {
	return &Error{Field: field, Err: fmt.Errorf(format, args...)}
}

// Field returns the field err blames, "" when it blames none.
func Field(err error) string {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}
