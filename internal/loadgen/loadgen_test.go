package loadgen

import (
	"context"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/testserver"
)

func TestLoadRunCompletesUpdates(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			s := testserver.New(t)
			rep, err := Run(context.Background(), Config{Server: s.URL, Token: s.Token, Devices: 6, API: api,
				ReleaseSize: 32 << 10, Signer: s.Signer, FirmwareKey: s.FWKey})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Completed != 6 || rep.Failed != 0 {
				t.Fatalf("completed %d, failed %d, errors %v", rep.Completed, rep.Failed, rep.Errors)
			}
			chunks := int64(6 * (rep.CiphertextBytes + 1023) / 1024)
			if rep.Chunks != chunks || rep.Check.Count < 6 || rep.Chunk.Count == 0 || rep.ConnsPerUpdate < 1 {
				t.Fatalf("report %+v (want %d chunks)", rep, chunks)
			}
			ratio := rep.WireBytesPerUpdate / float64(rep.CiphertextBytes)
			if api == agent.APINative && (ratio < 1 || ratio > 1.3) || api == agent.APIEcoWatt && ratio < 1.3 {
				t.Fatalf("%s: %.2fx the ciphertext on the wire", api, ratio)
			}
			// Every load device confirmed the release.
			devs, _ := s.Admin.Devices(context.Background())
			for _, d := range devs {
				if d.Version != "2.0.0" {
					t.Fatalf("load device %s ended on %s", d.ID, d.Version)
				}
			}
			sessions, _ := s.Admin.Sessions(context.Background())
			if sessions.ActiveSessions != 0 {
				t.Fatalf("%d sessions left open", sessions.ActiveSessions)
			}
		})
	}
}

func TestLoadCheckOnly(t *testing.T) {
	s := testserver.New(t)
	rep, err := Run(context.Background(), Config{Server: s.URL, Token: s.Token, Devices: 20, ReleaseSize: 4 << 10,
		Signer: s.Signer, FirmwareKey: s.FWKey, CheckOnly: true, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 20 || rep.Failed != 0 || rep.Check.Count != 20 || rep.Chunk.Count != 0 {
		t.Fatalf("check-only run: %+v", rep)
	}
	if sessions, _ := s.Admin.Sessions(context.Background()); sessions.ActiveSessions != 0 {
		t.Fatalf("check-ins opened %d sessions", sessions.ActiveSessions)
	}
}
