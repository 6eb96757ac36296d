package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/simulator"
)

// `fota device run` says when a verified update waits for its maintenance
// window, and until when.
func TestDeviceRunPrintsDeferredInstall(t *testing.T) {
	at := time.Date(2026, 5, 2, 2, 0, 0, 0, time.UTC)
	for _, row := range []struct {
		name     string
		deferred *agent.DeferredError
		want     string
	}{
		{"window opens later", &agent.DeferredError{Version: "1.0.4", Until: at},
			"dev1: 1.0.4 download complete; install deferred until " + at.Local().Format(time.DateTime) + " (maintenance window)\n"},
		{"window closed", &agent.DeferredError{Version: "1.0.4", Closed: at},
			"dev1: 1.0.4 download complete; install deferred: its maintenance window closed at " + at.Local().Format(time.DateTime) + "; checking again later\n"},
	} {
		t.Run(row.name, func(t *testing.T) {
			var out bytes.Buffer
			p := newEventPrinter(&out, "dev1")
			p.print(simulator.Event{Kind: "progress", Progress: &agent.Progress{State: agent.StateVerifying, Version: "1.0.4"}})
			out.Reset()
			p.print(simulator.Event{Kind: "progress", Progress: &agent.Progress{State: agent.StateDeferred, Version: "1.0.4", Deferred: row.deferred}})
			if out.String() != row.want {
				t.Fatalf("printed %q\nwant    %q", out.String(), row.want)
			}
		})
	}
}
