package ipfix

import (
	"testing"
	"time"
)

func TestScanInterval(t *testing.T) {
	for _, c := range []struct {
		idle, active, want time.Duration
	}{
		{DefaultIdleTimeout, DefaultActiveTimeout, 5 * time.Second},
		{2 * time.Second, time.Minute, time.Second},      // never more often than once a second
		{time.Minute, 10 * time.Minute, 5 * time.Second}, // never less often than every 5 s
		{time.Minute, 6 * time.Second, 2 * time.Second},  // the shorter timeout decides
	} {
		cfg := DefaultConfig()
		cfg.IdleTimeout, cfg.ActiveTimeout = c.idle, c.active
		if got := cfg.ScanInterval(); got != c.want {
			t.Errorf("idle %v, active %v: ScanInterval = %v, want %v", c.idle, c.active, got, c.want)
		}
	}
}
