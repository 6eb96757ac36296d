package cclient_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/internal/cli"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
)

// buildWithManifest builds version with release notes that make its
// manifest exactly size bytes.
func buildWithManifest(t *testing.T, srv *testserver.Server, version string, img []byte, size int) []byte {
	t.Helper()
	build := func(notes string) ([]byte, int) {
		var out bytes.Buffer
		m, err := bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
			Signer: srv.Signer, FirmwareKey: srv.FWKey, Notes: notes, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return out.Bytes(), m.EncodedSize()
	}
	_, one := build("n")
	b, got := build(strings.Repeat("n", size-one+1))
	if got != size {
		t.Fatalf("manifest of %d bytes, want %d", got, size)
	}
	return b
}

// TestManifestLimit: with the smallest work buffer the C client takes the
// largest manifest `fota release build` lets by without a warning
// (cli.CClientManifestMax), even beside an RSA-4096 signature (base64 of
// 256 bytes more than this RSA-2048 one: made up here by a longer
// manifest); a far longer one is refused, saying what to do.
//
// Each build at its own FOTA_WORK_MIN: 4096 bytes without delta updates,
// 4224 with them (the check-in says 119 bytes more, which the answer must
// not lose).
func TestManifestLimit(t *testing.T) {
	srv := testserver.New(t)
	img := srv.Sample("1.0.4", firmware.Healthy, 16<<10, 0)
	srv.Publish(buildWithManifest(t, srv, "1.0.4", img, cli.CClientManifestMax+344))
	d := newCDev(t, srv, "c1", slotSize, 0)
	if code := d.powerOn("--work-size", "4224"); code != exitReboot {
		t.Fatalf("a manifest at the limit: exit %d\n%s%s", code, d.stdout, d.stderr)
	}
	full := newCDev(t, srv, "c1-full", slotSize, 0)
	full.useFullBuild()
	if code := full.powerOn("--work-size", "4096"); code != exitReboot {
		t.Fatalf("a manifest at the limit, without deltas: exit %d\n%s%s", code, full.stdout, full.stderr)
	}

	srv2 := testserver.New(t)
	srv2.Publish(buildWithManifest(t, srv2, "1.0.4", srv2.Sample("1.0.4", firmware.Healthy, 16<<10, 0), 4000))
	d2 := newCDev(t, srv2, "c2", slotSize, 0)
	if code := d2.powerOn("--work-size", "4224"); code != exitError || d2.errorCode() != "FOTA_ERR_BUFFER" ||
		!strings.Contains(d2.stderr, "larger work buffer") {
		t.Fatalf("a 4,000-byte manifest: exit %d %s\n%s%s", code, d2.errorCode(), d2.stdout, d2.stderr)
	}
	if code := d2.powerOn("--work-size", "8192"); code != exitReboot {
		t.Fatalf("the same with an 8 KiB work buffer: exit %d\n%s%s", code, d2.stdout, d2.stderr)
	}
}
