// Package firmware makes the simulated EcoWatt application images that the
// demo, the tests and the simulated device run. They are real ESP32 app
// images (header, app descriptor, checksum, appended SHA-256); the payload
// starts with a marker that tells the simulator how the image behaves when
// it boots.
package firmware

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/semver"
)

// Behaviour is how a simulated image acts on its first boot.
type Behaviour string

const (
	Healthy      Behaviour = "healthy"       // passes its self-test and confirms itself
	FailSelfTest Behaviour = "fail-selftest" // runs, but its self-test fails
	Crash        Behaviour = "crash"         // resets before it can confirm itself
)

// Behaviours lists the valid behaviours.
var Behaviours = []Behaviour{Healthy, FailSelfTest, Crash}

// marker starts the payload of every simulated image.
const marker = "ECOWATT-SIM/1 behaviour="

// SampleOptions describe a simulated image.
type SampleOptions struct {
	Version       string
	Project       string // default "ecowatt"
	Chip          string // default "esp32"
	SecureVersion uint32
	Size          int // total image size, rounded up to a multiple of 16; 0 for a small image
	// Lineage seeds the filler that pads the image to Size; "" seeds it
	// with the version. Versions of one lineage share their filler, as
	// releases of one product share most of their code, so a delta patch
	// between them is small; different lineages share nothing.
	Lineage   string
	Behaviour Behaviour
}

// Sample builds a simulated image. Its filler bytes are derived from the
// version, so two builds of the same options are identical.
func Sample(o SampleOptions) ([]byte, error) {
	if _, err := semver.Parse(o.Version); err != nil {
		return nil, fmt.Errorf("sample firmware: version: %w", err)
	}
	if o.Project == "" {
		o.Project = "ecowatt"
	}
	if o.Chip == "" {
		o.Chip = "esp32"
	}
	if o.Behaviour == "" {
		o.Behaviour = Healthy
	}
	if !validBehaviour(o.Behaviour) {
		return nil, fmt.Errorf("sample firmware: behaviour %q (want one of %v)", o.Behaviour, Behaviours)
	}
	chipID, ok := esp32.ChipID(o.Chip)
	if !ok {
		return nil, fmt.Errorf("sample firmware: unknown chip %q", o.Chip)
	}
	payload := []byte(marker + string(o.Behaviour) + "\n")
	info := esp32.AppInfo{ChipID: chipID, Version: o.Version, ProjectName: o.Project, SecureVersion: o.SecureVersion,
		Time: "00:00:00", Date: "Jan  1 2026", IDFVersion: "v5.2-sim"}
	img, err := esp32.BuildImage(info, payload)
	if err != nil {
		return nil, fmt.Errorf("sample firmware: %w", err)
	}
	if o.Size > 0 {
		// ESP32 images are a multiple of 16 bytes long (checksum block, SHA-256).
		target := (o.Size + 15) / 16 * 16
		if target < len(img) {
			return nil, fmt.Errorf("sample firmware: size %d is below the smallest image (%d bytes)", o.Size, len(img))
		}
		head := len(payload)
		seed := o.Lineage
		if seed == "" {
			seed = o.Version
		}
		fill := filler(seed, target)
		n := target - len(img)
		// Alignment makes image size a step function of payload size; a few
		// corrections land on the target exactly.
		for range 8 {
			if img, err = esp32.BuildImage(info, append(payload[:head:head], fill[:n]...)); err != nil {
				return nil, fmt.Errorf("sample firmware: %w", err)
			}
			if len(img) == target {
				break
			}
			n = max(0, n+target-len(img))
		}
		if len(img) != target {
			return nil, fmt.Errorf("sample firmware: cannot make an image of exactly %d bytes", target)
		}
	}
	return img, nil
}

// filler is n pseudo-random bytes seeded by the version: incompressible like
// real code, and reproducible.
func filler(seed string, n int) []byte {
	out := make([]byte, 0, n+32)
	block := sha256.Sum256([]byte(seed))
	for len(out) < n {
		out = append(out, block[:]...)
		block = sha256.Sum256(block[:])
	}
	return out[:n]
}

func validBehaviour(b Behaviour) bool {
	for _, v := range Behaviours {
		if v == b {
			return true
		}
	}
	return false
}

// ErrNotSimulated means an image has no simulator marker.
var ErrNotSimulated = errors.New("not a simulated EcoWatt image")

// BehaviourOf reads how a simulated image behaves on boot.
func BehaviourOf(img []byte) (Behaviour, error) {
	if _, err := esp32.Parse(img); err != nil {
		return "", err
	}
	start := esp32.HeaderSize
	if len(img) < start || !bytes.HasPrefix(img[start:], []byte(marker)) {
		return "", ErrNotSimulated
	}
	rest := img[start+len(marker):]
	end := bytes.IndexByte(rest, '\n')
	if end < 0 {
		return "", ErrNotSimulated
	}
	b := Behaviour(rest[:end])
	if !validBehaviour(b) {
		return "", fmt.Errorf("%w: unknown behaviour %q", ErrNotSimulated, b)
	}
	return b, nil
}
