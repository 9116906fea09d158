package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/fleet"
)

// exitMissing is the exit status of stenod read --fleet when sensors are
// missing from the answer: what it holds is right, but not everything.
const exitMissing = 4

// missingSensors: a fleet answer was delivered without the named sensors'
// packets (all or some of them).
type missingSensors struct{ names []string }

func (m missingSensors) Error() string {
	return fmt.Sprintf("the answer lacks sensors %s (see above)", strings.Join(m.names, ", "))
}

// fleetReport prints the fleet summary of trailer on stderr and says
// whether sensors are missing or damaged records were left out.
func fleetReport(e *env, trailer http.Header) error {
	line := trailer.Get(api.TrailerFleetSummary)
	if line == "" {
		return fmt.Errorf("the answer has no %s trailer: is the server a stenod with fleet support?", api.TrailerFleetSummary)
	}
	var sum fleet.Summary
	if err := json.Unmarshal([]byte(line), &sum); err != nil {
		return fmt.Errorf("read %s trailer: %w", api.TrailerFleetSummary, err)
	}
	limited := ""
	if sum.Limited {
		limited = " (stopped at the limit)"
	}
	fmt.Fprintf(e.stderr, "fleet: %d packets, %d bytes from %d sensors in %d ms%s\n", sum.Packets, sum.Bytes, len(sum.Sensors), sum.Milliseconds, limited)
	tw := tabwriter.NewWriter(e.stderr, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  sensor\tstatus\tpackets\tbytes\tfirst ms\tms\terror")
	for _, s := range sum.Sensors {
		first := "-"
		if s.FirstMilliseconds != nil {
			first = strconv.FormatInt(*s.FirstMilliseconds, 10)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\t%d\t%s\n", s.Name, s.Status, s.Packets, s.Bytes, first, s.Milliseconds, s.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(sum.Missing) > 0 {
		return missingSensors{names: sum.Missing}
	}
	if n, _ := strconv.ParseInt(trailer.Get(api.TrailerDamaged), 10, 64); n > 0 {
		return damagedAnswer{n: n, first: "see the sensors' logs"}
	}
	return nil
}
