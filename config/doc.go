// Package config is stenod run's configuration: one Config that gathers the
// capture, spool and API settings with the daemon's own (the user it runs
// as, the demo tap), its defaults, and the JSON file that sets them.
//
// # What it owns
//
// The file format: the struct file, whose json tags are the keys
// (docs/configuration.md lists them all, with their defaults;
// etc/stenod.json is Default written out by Format), and the types of
// their values: Size ("1GiB", "500MB" or a number of bytes), Duration
// ("5m"), DropRules (pre-capture drop rules, written in the query
// language: query.ParseDropRules), CutoffLimit ("20KB", "5p", "never")
// and CutoffRules (per-connection cutoffs, "QUERY => LIMIT", the query
// as drop rules take it). Each key sets the Config field of the
// same name; its default is the package's DefaultConfig. The ranges
// belong to the packages: a value is impossible when capture.Config,
// spool.Config or api.Config.Validate says so, and those name the field
// (internal/fielderr), which Validate turns into the key.
//
// It does not read flags (cmd/stenod does, and applies the ones given on
// the command line with Config.Set) and holds no global state.
//
// # Errors
//
// Load, Parse, Set and Validate return a *KeyError for anything wrong with
// one key: errors.Is(err, ErrUnknownKey) for a key the format does not
// have, errors.Is(err, ErrInvalidValue) for a value of the wrong type or out
// of range. A file that cannot be read or is not a JSON object gives an
// error that names the file (and, for a syntax error, the line).
package config
