package firmware

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ecowatt/fota/esp32"
)

func TestSampleIsAnESP32ImageWithBehaviour(t *testing.T) {
	for _, b := range Behaviours {
		img, err := Sample(SampleOptions{Version: "1.0.5", Behaviour: b, SecureVersion: 2})
		if err != nil {
			t.Fatal(err)
		}
		info, err := esp32.Parse(img)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version != "1.0.5" || info.ProjectName != "ecowatt" || info.Chip != "esp32" || info.SecureVersion != 2 {
			t.Fatalf("descriptor %+v", info)
		}
		got, err := BehaviourOf(img)
		if err != nil || got != b {
			t.Fatalf("BehaviourOf = %q, %v; want %q", got, err, b)
		}
	}
}

func TestSampleSizeExactAndReproducible(t *testing.T) {
	for _, size := range []int{1 << 10, 1<<20 + 16, 256 << 10, 4000, 4001} {
		a, err := Sample(SampleOptions{Version: "1.0.4", Size: size})
		if err != nil {
			t.Fatal(err)
		}
		if want := (size + 15) / 16 * 16; len(a) != want {
			t.Fatalf("asked for %d bytes, got %d", size, len(a))
		}
		b, _ := Sample(SampleOptions{Version: "1.0.4", Size: size})
		if !bytes.Equal(a, b) {
			t.Fatal("same options gave different images")
		}
	}
}

func TestSampleRejects(t *testing.T) {
	for name, o := range map[string]SampleOptions{
		"bad version":   {Version: "1.0"},
		"bad behaviour": {Version: "1.0.0", Behaviour: "explode"},
		"unknown chip":  {Version: "1.0.0", Chip: "esp8266"},
		"too small":     {Version: "1.0.0", Size: 10},
	} {
		if _, err := Sample(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := BehaviourOf([]byte("plain")); !errors.Is(err, esp32.ErrNotESP32) {
		t.Errorf("non-image: %v", err)
	}
	img, _ := esp32.BuildImage(esp32.AppInfo{Version: "1.0.0"}, []byte("real firmware"))
	if _, err := BehaviourOf(img); !errors.Is(err, ErrNotSimulated) {
		t.Errorf("unmarked image: %v", err)
	}
}
