package cli

import (
	"path/filepath"
	"testing"
)

// TestServePushFlags: contradictory or incomplete push options are refused
// before anything starts, saying what to give.
func TestServePushFlags(t *testing.T) {
	dir, keyDir, _ := setup(t)
	pub := filepath.Join(keyDir, "signing.pub")
	serve := func(args ...string) result {
		return run(t, append([]string{"serve", "--data", filepath.Join(dir, "data"), "--trust", pub}, args...)...)
	}
	serve("--mqtt-listen", ":1883", "--mqtt-broker", "mqtt://b:1883").expect(t, 2, "", "give one")
	serve("--mqtt-broker", "127.0.0.1:1883", "--mqtt-password-file", "pw").expect(t, 2, "", `--mqtt-broker "127.0.0.1:1883" is not a broker URL`)
	serve("--mqtt-broker", "http://b:1883", "--mqtt-password-file", "pw").expect(t, 2, "", "is not a broker URL")
	serve("--mqtt-broker", "mqtt://fota:secret@b:1883", "--mqtt-password-file", "pw").expect(t, 2, "", "not in the URL")
	serve("--mqtt-broker", "mqtt://b:1883").expect(t, 2, "", "--mqtt-broker needs --mqtt-password-file")
	serve("--mqtt-broker", "mqtt://b:1883", "--mqtt-password-file", "pw", "--mqtt-ca", "ca.pem").expect(t, 2, "", "use mqtts://")
	serve("--mqtt-password-file", "pw").expect(t, 2, "", "go with --mqtt-broker")
	serve("--mqtt-listen", ":1883", "--push-rate", "0").expect(t, 2, "", "--push-rate 0")
}
