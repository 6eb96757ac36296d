package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// A device that cannot take an offer (here: too big for its slot) says it
// refuses it, and the server stops offering it at every check.
func TestRefusedOfferIsNotOfferedAgain(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 200<<10)
	d := h.newDeviceSized("small", agent.APINative, 128<<10)
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	_, err := d.agent.CheckOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Fatalf("first check: %v, want the refusal", err)
	}
	if evs := strings.Join(h.events("small"), ", "); !strings.Contains(evs, "refused 1.0.4") {
		t.Fatalf("server events %s, want the refusal", evs)
	}
	res, err := d.agent.CheckOnce(context.Background())
	if err != nil || res.Updated || !strings.Contains(res.Message, "refused") {
		t.Fatalf("second check: %+v %v, want no offer because it was refused", res, err)
	}
	if n := strings.Count(strings.Join(h.events("small"), ", "), "session-opened"); n != 1 {
		t.Fatalf("%d sessions opened, want 1", n)
	}
}
