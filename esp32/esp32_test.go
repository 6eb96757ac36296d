package esp32

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"
)

func TestBuildAndParseRoundTrip(t *testing.T) {
	want := AppInfo{ChipID: 0x0009, Chip: "esp32s3", Version: "1.0.4", ProjectName: "ecowatt", SecureVersion: 3,
		Time: "12:00:00", Date: "Nov 27 2026", IDFVersion: "v5.2.1"}
	img, err := BuildImage(want, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadInfo(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("parsed %+v, want %+v", got, want)
	}
	// esptool's rules: checksum byte ends a 16-byte block, then the SHA-256 of all before it.
	body, digest := img[:len(img)-32], img[len(img)-32:]
	if len(body)%16 != 0 {
		t.Fatalf("image body is %d bytes, not 16-byte aligned", len(body))
	}
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], digest) {
		t.Fatal("appended SHA-256 does not match the image")
	}
}

func TestParseRejects(t *testing.T) {
	good, err := BuildImage(AppInfo{Version: "1.0.0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	badMagic := bytes.Clone(good)
	badMagic[0] = 0x7F
	noDesc := bytes.Clone(good)
	noDesc[DescriptorOffset] ^= 0xFF
	for name, b := range map[string][]byte{
		"empty": nil, "short": good[:HeaderSize-1], "image magic": badMagic, "descriptor magic": noDesc,
		"elf": []byte("\x7fELF" + string(make([]byte, 400))),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrNotESP32) {
			t.Errorf("%s: Parse = %v, want ErrNotESP32", name, err)
		}
	}
}

func TestParseRejectsUnterminatedField(t *testing.T) {
	img, _ := BuildImage(AppInfo{Version: "1.0.0"}, nil)
	copy(img[DescriptorOffset+0x10:], bytes.Repeat([]byte("9"), 32)) // version fills its field
	if _, err := Parse(img); !errors.Is(err, ErrBadDescriptor) {
		t.Fatalf("version without NUL: %v", err)
	}
}

func TestBuildImageRejectsLongFields(t *testing.T) {
	if _, err := BuildImage(AppInfo{Version: string(bytes.Repeat([]byte("1"), 32))}, nil); err == nil {
		t.Fatal("a 32-character version leaves no room for the NUL and must be refused")
	}
}

func TestUnknownChipNamed(t *testing.T) {
	img, _ := BuildImage(AppInfo{ChipID: 0x7777, Version: "1.0.0"}, nil)
	info, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if info.Chip != "chip-0x7777" {
		t.Fatalf("Chip = %q", info.Chip)
	}
	if id, ok := ChipID("esp32c3"); !ok || id != 5 {
		t.Fatalf("ChipID(esp32c3) = %d, %v", id, ok)
	}
}

// FuzzParse replays testdata/fuzz/FuzzParse on every run; the seed check below
// makes an emptied corpus fail loudly instead of silently fuzzing nothing.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	if len(seeds) == 0 {
		f.Fatal("seed corpus testdata/fuzz/FuzzParse is empty")
	}
	img, _ := BuildImage(AppInfo{Version: "1.0.0", ProjectName: "p"}, []byte{1, 2, 3})
	f.Add(img)
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrNotESP32) && !errors.Is(err, ErrBadDescriptor) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(info.Version) >= 32 || len(info.ProjectName) >= 32 {
			t.Fatalf("descriptor strings overran their fields: %+v", info)
		}
	})
}
