package testserver

import (
	"os"
	"os/exec"
	"testing"
)

// Mosquitto finds Debian's mosquitto for the external-broker tests. In CI
// (CI=true) a missing one fails the test, since .ci/run installs it;
// elsewhere the test says what is missing and skips.
func Mosquitto(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("mosquitto not found in PATH or /usr/sbin: CI must install it (.ci/run does: apt-get install mosquitto)")
	}
	t.Skip("mosquitto not found in PATH or /usr/sbin: install it (apt-get install mosquitto) to run the external-broker tests")
	return ""
}
