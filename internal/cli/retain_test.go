package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRetention(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"90d", 90 * 24 * time.Hour, ""},
		{"2w", 14 * 24 * time.Hour, ""},
		{"36h", 36 * time.Hour, ""},
		{"0", 0, ""},
		{" 7d ", 7 * 24 * time.Hour, ""},
		{"36500d", 36500 * 24 * time.Hour, ""},
		{"36501d", 0, "up to 100 years"},
		{"30m", 0, "under an hour"},
		{"-1d", 0, "want an age"},
		{"-2h", 0, "from 0 to 100 years"},
		{"d", 0, "want an age"},
		{"1.5d", 0, "want an age"},
		{"90", 0, "want an age"},
		{"99999999999999999999d", 0, "up to 100 years"},
		{"", 0, "want an age"},
	} {
		got, err := parseRetention(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("parseRetention(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("parseRetention(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}

func FuzzParseRetention(f *testing.F) {
	for _, s := range []string{"90d", "2w", "36h", "0", "1h30m", "9223372036854775807d", "-0d", "1e3h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseRetention(s)
		if err == nil && (d < 0 || d > maxRetention || d > 0 && d < time.Hour) {
			t.Fatalf("parseRetention(%q) = %v, outside 0 or 1 h to 100 years", s, d)
		}
	})
}

func TestRemoveAndWithdraw(t *testing.T) {
	dir, keyDir := adminEnv(t)
	b := filepath.Join(dir, "app.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", b, filepath.Join(dir, "app.bin")).expect(t, 0, "built", "")
	run(t, "release", "publish", b).expect(t, 0, "published", "")
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, "d1.json")).
		expect(t, 0, "added device d1", "")

	run(t, "release", "withdraw").expect(t, 2, "", "--version is required")
	run(t, "release", "withdraw", "--version", "1.0.4", "--reason", "drains the battery").
		expect(t, 0, "release 1.0.4 for esp32 withdrawn: offered to no device from now on; 0 download(s) in progress ended", "")
	run(t, "release", "withdraw", "--version", "1.0.4").expect(t, 1, "", "withdrawn already")
	run(t, "release", "withdraw", "--version", "9.9.9").expect(t, 1, "", "no release 9.9.9")
	run(t, "release", "list").expect(t, 0, "withdrawn", "")
	run(t, "device", "assign", "--id", "d1", "--version", "1.0.4").expect(t, 1, "", "was withdrawn")
	run(t, "release", "delete").expect(t, 2, "", "--version is required")
	run(t, "release", "delete", "--version", "1.0.4").expect(t, 0, "release 1.0.4 for esp32 deleted", "")
	run(t, "release", "delete", "--version", "1.0.4").expect(t, 1, "", "404")
	if out := run(t, "release", "list"); strings.Contains(out.stdout, "1.0.4") {
		t.Fatalf("a deleted release is listed:\n%s", out.stdout)
	}

	run(t, "device", "remove").expect(t, 2, "", "--id is required")
	run(t, "device", "remove", "--id", "d1").expect(t, 0, "device d1 removed: its key no longer works; 0 update session(s) ended", "")
	run(t, "device", "remove", "--id", "d1").expect(t, 1, "", "unknown device")
	run(t, "device", "show", "--id", "d1").expect(t, 0, "its key no longer works", "")
	run(t, "device", "show", "--id", "d1").expect(t, 0, "device-removed", "")
}

func TestServeRefusesBadRetention(t *testing.T) {
	dir, keyDir, _ := setup(t)
	pub := filepath.Join(keyDir, "signing.pub")
	run(t, "serve", "--data", filepath.Join(dir, "data"), "--trust", pub, "--retain-events", "90 days").expect(t, 2, "", "--retain-events")
	run(t, "serve", "--data", filepath.Join(dir, "data"), "--trust", pub, "--retain-sessions", "10m").expect(t, 2, "", "under an hour")
	run(t, "serve", "--data", filepath.Join(dir, "data"), "--trust", pub, "--retain-events-max", "-1").expect(t, 2, "", "want 0 (no limit) or more")
}
