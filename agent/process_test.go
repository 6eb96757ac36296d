package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// serverProcess is `fota serve` in a child process, with its keys.
type serverProcess struct {
	tb     testing.TB
	url    string
	admin  *client.Admin
	signer *keys.SigningKey
	fwKey  keys.FirmwareKey
}

func startServerProcess(tb testing.TB) *serverProcess {
	dir := tb.TempDir()
	bin := filepath.Join(dir, "fota")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/fota").CombinedOutput(); err != nil {
		tb.Fatalf("build fota: %v\n%s", err, out)
	}
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.AlgRSA, false, nil); err != nil {
		tb.Fatal(err)
	}
	s := &serverProcess{tb: tb}
	s.signer, _ = keys.LoadSigningKey(filepath.Join(dir, "keys", keys.SigningKeyFile))
	s.fwKey, _ = keys.LoadFirmwareKey(filepath.Join(dir, "keys", keys.FirmwareKeyFile))
	cmd := exec.Command(bin, "serve", "--data", filepath.Join(dir, "data"), "--addr", "127.0.0.1:0", "--trust", filepath.Join(dir, "keys", keys.PublicKeyFile))
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	token := ""
	sc := bufio.NewScanner(stdout)
	deadline := time.Now().Add(20 * time.Second)
	for s.url == "" && time.Now().Before(deadline) && sc.Scan() {
		if m := regexp.MustCompile(`(fota_\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			token = m[1]
		}
		if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			s.url = m[1]
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if s.url == "" || token == "" {
		tb.Fatal("fota serve did not start")
	}
	s.admin, _ = client.NewAdmin(s.url, token)
	return s
}

func (s *serverProcess) publish(version string, size int) {
	img, err := firmware.Sample(firmware.SampleOptions{Version: version, Size: size})
	if err != nil {
		s.tb.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
		Signer: s.signer, FirmwareKey: s.fwKey, TempDir: s.tb.TempDir()}); err != nil {
		s.tb.Fatal(err)
	}
	if _, err := s.admin.PublishRollout(context.Background(), &out, "all"); err != nil {
		s.tb.Fatal(err)
	}
}

// newDevice registers a device running 1.0.3 and formats its flash.
func (s *serverProcess) newDevice(tb testing.TB, id string, size int64) *device {
	d, err := s.admin.AddDevice(context.Background(), protocol.AddDevice{ID: id, Hardware: "esp32", Version: "1.0.3"})
	if err != nil {
		tb.Fatal(err)
	}
	psk, _ := protocol.ParsePSK(d.PSK)
	dir := tb.TempDir()
	disk, err := slotfile.NewOSDisk(dir)
	if err != nil {
		tb.Fatal(err)
	}
	img, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3"})
	if err := slotfile.Format(disk, size, img, agent.Image{Version: "1.0.3", Size: int64(len(img)), SHA256: sha256.Sum256(img)}); err != nil {
		tb.Fatal(err)
	}
	h := &harness{t: tb, signer: s.signer, fwKey: s.fwKey, admin: s.admin, serverURL: s.url}
	os.MkdirAll(dir, 0o700)
	return &device{h: h, id: id, api: agent.APINative, psk: psk, disk: disk, size: size}
}
