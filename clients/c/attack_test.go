package cclient_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/testserver"
)

// attackErrors is the fota_err_t the C client must fail with, per kind
// of attack in the agent's table.
var attackErrors = map[attacktest.Kind]string{
	attacktest.KindSignature:    "FOTA_ERR_SIGNATURE",
	attacktest.KindUntrustedKey: "FOTA_ERR_UNTRUSTED_KEY",
	attacktest.KindManifest:     "FOTA_ERR_MANIFEST",
	attacktest.KindDowngrade:    "FOTA_ERR_DOWNGRADE",
	attacktest.KindCounter:      "FOTA_ERR_COUNTER",
	attacktest.KindHardware:     "FOTA_ERR_HARDWARE",
	attacktest.KindChunkMAC:     "FOTA_ERR_CHUNK_MAC",
	attacktest.KindFrame:        "FOTA_ERR_PROTOCOL",
	attacktest.KindHash:         "FOTA_ERR_HASH",
	attacktest.KindTimeout:      "FOTA_ERR_TIMEOUT",
}

// TestAttackTable runs every row of the Go agent's attack table against
// the C client through the same man in the middle: each must fail with
// its kind's error, leave the running slot and the boot state as they
// were, and let nothing but a prefix of the real image into the update slot.
func TestAttackTable(t *testing.T) {
	for _, a := range attacktest.Attacks() {
		t.Run(a.ID, func(t *testing.T) {
			want, ok := attackErrors[a.Kind]
			if !ok {
				t.Fatalf("no C error for kind %q", a.Kind)
			}
			srv := testserver.New(t)
			attacktest.PublishRelease(srv)
			m := attacktest.NewMITM(t, srv.URL)
			d := newCDev(t, srv, attacktest.DeviceID, slotSize, a.Device.Counter)
			a.Setup(t, srv, m)
			d.server = m.URL
			d.extra = []string{"--chunk-retries", "1", "--retry-attempts", "2", "--retry-base-ms", "1"}
			if a.Device.ChunksPerRequest > 0 {
				d.extra = append(d.extra, "--chunks-per-request", fmt.Sprint(a.Device.ChunksPerRequest))
			}
			if a.Device.UpdateTimeout > 0 {
				// The C client's clock counts seconds: a second, and answers
				// slow enough that the download needs several.
				d.extra = append(d.extra, "--update-timeout", "1")
				m.Delay = max(m.Delay, 300*time.Millisecond)
			}
			m.Settle()
			running := d.slot(0)
			code := d.powerOn()
			if code != exitError || d.errorCode() != want {
				t.Fatalf("exit %d, error %q; want exit %d with %q\n%s%s", code, d.errorCode(), exitError, want, d.stdout, d.stderr)
			}
			if !bytes.Equal(d.slot(0), running) {
				t.Fatal("the running slot changed")
			}
			if got := d.slot(1); !a.OtherImage && !bytes.HasPrefix(attacktest.ReleaseImage(srv), got) {
				t.Fatalf("the update slot holds %d bytes that are not the release's", len(got))
			}
			// Power on with no server: the device boots its image, not on
			// trial, its counter as before.
			d.server = "http://127.0.0.1:1"
			d.extra = append(d.extra, "--retry-attempts", "1")
			d.powerOn()
			if b, ok := d.boot(); !ok || b.version != factoryVersion || b.trial || b.slot != 0 || b.counter != a.Device.Counter {
				t.Fatalf("after the attack the device boots %+v\n%s", b, d.stderr)
			}
			if evs := strings.Join(srv.Events(attacktest.DeviceID), ", "); strings.Contains(evs, "applied") {
				t.Fatalf("the server heard of an install: %s", evs)
			}
			if a.Device.Counter == 0 { // a device above every release's counter is offered none
				attacktest.StillOffered(t, srv, attacktest.DeviceID, d.psk, 0)
			}
		})
	}
}
