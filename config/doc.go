// Package config is stenod run's configuration: one Config that gathers the
// capture, spool and API settings with the daemon's own (the user it runs
// as, the demo tap), its defaults, and the JSON file that sets them.
//
// # What it owns
//
// The file format and its key names (docs/configuration.md lists them all,
// with their defaults; etc/stenod.json is Default written out by Format),
// the string forms of sizes ("1GiB", "500MB" or a number of bytes),
// durations ("5m") and pre-capture drop rules ("proto 17 port 53",
// "net 10.0.0.0/8"), and the mapping of every validation error to the key
// that caused it. The ranges themselves belong to the packages: a value is
// impossible when capture.Config.Validate, spool.Config.Validate or
// api.Config.Validate says so, and Config.Validate names the key.
//
// It does not read flags (cmd/stenod does, and applies the ones given on
// the command line with Config.Set) and holds no global state.
//
// # Errors
//
// Load, Parse, Set and Validate return a *KeyError for anything wrong with
// one key: errors.Is(err, ErrUnknownKey) for a key the format does not
// have, errors.Is(err, ErrInvalidValue) for a value of the wrong type or out
// of range. A file that cannot be read or is not JSON gives an error that
// names the file (and, for a syntax error, the line).
package config
