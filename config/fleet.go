//go:build linux

package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/stenod/stenod/fleet"
)

// FleetSensors are the peers of a fleet query (fleet.sensors): an array of
// objects {"name": "s1", "url": "https://10.0.0.2:1234", "certs":
// "/etc/stenod/fleet/s1"}. Its text form, for Set and Get, is the same
// JSON.
type FleetSensors []fleet.Sensor

// UnmarshalJSON refuses members it does not know, naming the item in a
// subkeyError ("[1].cert"): a misspelt "certs" must not silently mean
// plain http.
func (fs *FleetSensors) UnmarshalJSON(raw []byte) error {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf(`want an array of sensors ({"name": …, "url": …, "certs": …}), got %s`, abbrev(raw))
	}
	out := FleetSensors{}
	for i, item := range items {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(item, &members); err != nil || !bytes.HasPrefix(bytes.TrimSpace(item), []byte("{")) {
			return &subkeyError{path: fmt.Sprintf("[%d]", i), err: fmt.Errorf(`want an object {"name": …, "url": …, "certs": …}, got %s`, abbrev(item))}
		}
		var s fleet.Sensor
		for name, v := range members {
			var dst *string
			switch name {
			case "name":
				dst = &s.Name
			case "url":
				dst = &s.URL
			case "certs":
				dst = &s.Certs
			default:
				return &subkeyError{path: fmt.Sprintf("[%d].%s", i, name), err: ErrUnknownKey}
			}
			if err := json.Unmarshal(v, dst); err != nil {
				return &subkeyError{path: fmt.Sprintf("[%d].%s", i, name), err: fmt.Errorf("want a string, got %s", abbrev(v))}
			}
		}
		out = append(out, s)
	}
	*fs = out
	return nil
}

func (fs FleetSensors) MarshalJSON() ([]byte, error) {
	return json.Marshal([]fleet.Sensor(slices.Clip(fs)))
}

func (fs *FleetSensors) UnmarshalText(text []byte) error { return fs.UnmarshalJSON(text) }

func (fs FleetSensors) MarshalText() ([]byte, error) { return fs.MarshalJSON() }
