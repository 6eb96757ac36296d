package cclient_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ecowatt/fota/delta"
)

// The applier's error codes (include/fota_delta.h).
const (
	deltaOK          = 0
	deltaCorrupt     = -1
	deltaFromRange   = -2
	deltaTooBig      = -3
	deltaPastEnd     = -4
	deltaTruncated   = -5
	deltaUnsupported = -6
	deltaState       = -8
)

var deltaCompressions = []string{"none", "crle", "heatshrink"}

var (
	deltaOnce sync.Once
	deltaBin  string
	deltaErr  error
)

// buildDelta compiles test/delta_apply.c with src/fota_delta.c (no mbedtls)
// under AddressSanitizer and UndefinedBehaviorSanitizer, any finding fatal.
func buildDelta(t *testing.T) string {
	t.Helper()
	requireTool(t, "cc")
	requireTool(t, "make")
	deltaOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fota-c-delta-")
		if err != nil {
			deltaErr = err
			return
		}
		deltaBin = filepath.Join(dir, "fota-delta-test")
		cmd := exec.Command("make", "-s", "-C", srcDir(t), "BUILD="+dir,
			"CFLAGS=-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all", deltaBin)
		if out, err := cmd.CombinedOutput(); err != nil {
			deltaErr = fmt.Errorf("make fota-delta-test: %v\n%s", err, out)
		}
	})
	if deltaErr != nil {
		t.Fatal(deltaErr)
	}
	return deltaBin
}

// deltaRun runs fota-delta-test; a crash (sanitizer report, abort on an
// out-of-bounds read or write) fails the test. It returns the exit code
// and stdout.
func deltaRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(buildDelta(t), args...)
	// Sanitizer findings exit with codes of their own, which fail the test.
	cmd.Env = append(os.Environ(), "ASAN_OPTIONS=exitcode=86", "UBSAN_OPTIONS=exitcode=87:print_stacktrace=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() < 0 {
			t.Fatalf("fota-delta-test %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		code = ee.ExitCode()
	}
	switch code {
	case 0, 1, 3, 99:
	default:
		t.Fatalf("fota-delta-test %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return code, stdout.String()
}

// deltaCase is one from/to pair and its patch, in files.
type deltaCase struct {
	dir, from, patch, out, state string
	to                           []byte
}

func newDeltaCase(t *testing.T, from, to, patch []byte) *deltaCase {
	t.Helper()
	dir := t.TempDir()
	c := &deltaCase{dir: dir, from: filepath.Join(dir, "from"), patch: filepath.Join(dir, "patch"),
		out: filepath.Join(dir, "out"), state: filepath.Join(dir, "state"), to: to}
	for name, data := range map[string][]byte{c.from: from, c.patch: patch} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

var deltaResult = regexp.MustCompile(`^(?:ok writes=(\d+)|error (-?\d+) .* at (\d+) writes=(\d+))`)

// apply runs "apply" once; it returns the exit code, the applier's error
// code and the write_to calls made.
func (c *deltaCase) apply(t *testing.T, maxTo int, seed uint64, cut int) (exit, code, writes int) {
	t.Helper()
	exit, out := deltaRun(t, "apply", c.from, c.patch, c.out, c.state, strconv.Itoa(maxTo),
		strconv.FormatUint(seed, 10), strconv.Itoa(cut))
	if exit == 99 || exit == 3 {
		return exit, 0, 0
	}
	m := deltaResult.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("apply: unexpected output %q", out)
	}
	if exit == 0 {
		writes, _ = strconv.Atoi(m[1])
		return exit, deltaOK, writes
	}
	code, _ = strconv.Atoi(m[2])
	writes, _ = strconv.Atoi(m[4])
	return exit, code, writes
}

func (c *deltaCase) wantOut(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(c.out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, c.to) {
		t.Fatalf("target differs: %d bytes, want %d (sha256 %x, want %x)", len(got), len(c.to), sha256.Sum256(got), sha256.Sum256(c.to))
	}
}

// deltaPairs are from/to pairs like firmware updates: edits, relinked
// addresses, inserted and deleted code, moved blocks, and the edge cases.
func deltaPairs(r *rand.Rand) map[string][2][]byte {
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	// firmware: code-like words with addresses, zero padding, strings.
	firmware := func(n int) []byte {
		b := make([]byte, 0, n)
		for len(b) < n {
			switch r.IntN(4) {
			case 0:
				b = append(b, make([]byte, r.IntN(200))...)
			case 1:
				b = append(b, []byte(fmt.Sprintf("EcoWatt module %d: error %d\x00", r.IntN(100), r.IntN(1000)))...)
			default:
				for range r.IntN(64) {
					b = binary.LittleEndian.AppendUint32(b, 0x42000000+uint32(r.IntN(1<<16))*4)
				}
			}
		}
		return b[:n]
	}
	edit := func(b []byte, n int) []byte {
		b = bytes.Clone(b)
		for range n {
			b[r.IntN(len(b))] = byte(r.Uint32())
		}
		return b
	}
	relink := func(b []byte) []byte { // every address moves by 0x40, as after a relink
		b = bytes.Clone(b)
		for i := 0; i+4 <= len(b); i += 4 {
			if v := binary.LittleEndian.Uint32(b[i:]); v>>24 == 0x42 {
				binary.LittleEndian.PutUint32(b[i:], v+0x40)
			}
		}
		return b
	}
	splice := func(b []byte, at, del int, ins []byte) []byte {
		return append(append(append([]byte{}, b[:at]...), ins...), b[at+del:]...)
	}
	fw := firmware(96 << 10)
	big := firmware(1 << 20)
	return map[string][2][]byte{
		"random":        {random(20000), random(15000)},
		"edits":         {fw, edit(fw, 300)},
		"relinked":      {fw, relink(fw)},
		"insert-delete": {fw, splice(splice(fw, 40000, 0, random(3000)), 9000, 5000, nil)},
		"moved":         {fw, append(bytes.Clone(fw[50000:]), fw[:50000]...)},
		"zeros":         {make([]byte, 5000), make([]byte, 70000)},
		"empty-from":    {nil, firmware(3000)},
		"empty-to":      {fw[:100], nil},
		"one-byte":      {[]byte{7}, []byte{9}},
		"1MiB":          {big, edit(splice(relink(big), 300000, 2000, random(4000)), 500)},
	}
}

// TestDeltaApply: patches made by delta.Create for firmware-like pairs,
// in each compression, applied by the C applier fed in random pieces,
// give the to image byte for byte.
func TestDeltaApply(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 18))
	for name, pair := range deltaPairs(r) {
		if name == "1MiB" {
			continue // TestDeltaPowerCut applies it, cut and resumed
		}
		for _, comp := range deltaCompressions {
			t.Run(name+"/"+comp, func(t *testing.T) {
				patch, err := delta.Create(pair[0], pair[1], delta.CreateOptions{Compression: comp})
				if err != nil {
					t.Fatal(err)
				}
				c := newDeltaCase(t, pair[0], pair[1], patch)
				if exit, code, _ := c.apply(t, len(pair[1]), r.Uint64(), 0); exit != 0 {
					t.Fatalf("apply: exit %d, error %d", exit, code)
				}
				c.wantOut(t)
			})
		}
	}
}

// TestDeltaPowerCut: the power dies at a random write_to call (part of
// that write reaches the slot); a new process restores the struct bytes
// saved last, checks them, and continues from its patch offset into the
// same slot; after as many cuts as it takes, the target is the to image.
func TestDeltaPowerCut(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 18))
	pairs := deltaPairs(r)
	resumed := 0
	for _, name := range []string{"edits", "insert-delete", "1MiB"} {
		pair := pairs[name]
		for _, comp := range deltaCompressions {
			t.Run(name+"/"+comp, func(t *testing.T) {
				patch, err := delta.Create(pair[0], pair[1], delta.CreateOptions{Compression: comp})
				if err != nil {
					t.Fatal(err)
				}
				c := newDeltaCase(t, pair[0], pair[1], patch)
				_, _, writes := c.apply(t, len(pair[1]), r.Uint64(), 0)
				if err := os.Remove(c.state); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				cuts := 0
				for {
					if _, err := os.Stat(c.state); err == nil {
						resumed++
					}
					exit, code, _ := c.apply(t, len(pair[1]), r.Uint64(), 1+r.IntN(max(writes, 1)))
					if exit == 0 {
						break
					}
					if exit != 99 {
						t.Fatalf("after %d power cuts: exit %d, error %d", cuts, exit, code)
					}
					if cuts++; cuts > 40 {
						t.Fatalf("still not done after %d power cuts", cuts)
					}
				}
				if cuts == 0 {
					t.Fatal("the power was never cut")
				}
				c.wantOut(t)
			})
		}
	}
	if resumed < 9 {
		t.Errorf("only %d runs resumed from a saved state", resumed)
	}
}

func mustCreate(t *testing.T, from, to []byte, comp string) []byte {
	t.Helper()
	p, err := delta.Create(from, to, delta.CreateOptions{Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeltaRefusals: each way a patch can be wrong, and the error the
// applier gives for it.
func TestDeltaRefusals(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 18))
	pairs := deltaPairs(r)
	fw, fw2 := pairs["edits"][0], pairs["edits"][1]
	abc := []byte("ABCDEFGH")

	t.Run("wrong-base", func(t *testing.T) {
		// Same size, other contents: the applier cannot know; the image
		// differs, and the caller's SHA-256 check refuses it.
		for _, comp := range deltaCompressions {
			other := bytes.Clone(fw)
			other[1000] ^= 0xff
			c := newDeltaCase(t, other, fw2, mustCreate(t, fw, fw2, comp))
			if exit, code, _ := c.apply(t, len(fw2), r.Uint64(), 0); exit != 0 {
				t.Fatalf("%s: exit %d, error %d", comp, exit, code)
			}
			got, _ := os.ReadFile(c.out)
			if sha256.Sum256(got) == sha256.Sum256(fw2) {
				t.Fatalf("%s: a patch applied to another base made the right image", comp)
			}
		}
		// A shorter base: the patch reads outside it.
		c := newDeltaCase(t, fw[:len(fw)/2], fw2, mustCreate(t, fw, fw2, "heatshrink"))
		if _, code, _ := c.apply(t, len(fw2), r.Uint64(), 0); code != deltaFromRange {
			t.Fatalf("short base: error %d, want %d", code, deltaFromRange)
		}
	})

	for _, tc := range []struct {
		name, patch string
		want        int
	}{
		{"diff-past-from", "000a000a" + strings.Repeat("00", 10) + "0000", deltaFromRange},
		{"adjust-before-from", "00020001" + "61" + "00" + "42", deltaFromRange},
		{"adjust-past-from", "00020001" + "61" + "00" + "08", deltaFromRange},
		{"extra-past-to", "0002000003616263" + "00", deltaPastEnd},
		{"diff-past-to", "00020003000000" + "0000", deltaPastEnd},
		{"trailing", "0001000001610000" + "00", deltaCorrupt},
		{"negative-extra", "0002000041", deltaCorrupt},
		{"header-bit-7", "8000", deltaCorrupt},
		{"unknown-compression", "0f0100", deltaCorrupt},
		{"lzma", "010a00", deltaUnsupported},
		{"in-place", "1000", deltaUnsupported},
		{"hdiffpatch", "2000", deltaUnsupported},
		{"heatshrink-window-9", "040154", deltaUnsupported},
		{"heatshrink-bad-params", "0401ff", deltaCorrupt},
		{"crle-bad-kind", "0201" + "02", deltaCorrupt},
		{"empty-to-with-data", "000000", deltaCorrupt},
		{"truncated", "000400000461", deltaTruncated},
		{"empty", "", deltaTruncated},
		// a chunk that writes nothing, forever (a crle run of zeros)
		{"idle-chunks", "0201" + "01" + "8080808001" + "00", deltaCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDeltaCase(t, abc, nil, unhex(t, tc.patch))
			if _, code, _ := c.apply(t, 100, r.Uint64(), 0); code != tc.want {
				t.Fatalf("error %d, want %d", code, tc.want)
			}
		})
	}

	t.Run("too-big", func(t *testing.T) {
		for _, comp := range deltaCompressions {
			c := newDeltaCase(t, fw, fw2, mustCreate(t, fw, fw2, comp))
			_, code, writes := c.apply(t, len(fw2)-1, r.Uint64(), 0)
			if code != deltaTooBig || writes != 0 {
				t.Fatalf("%s: error %d after %d writes, want %d after none", comp, code, writes, deltaTooBig)
			}
			if st, err := os.Stat(c.out); err != nil || st.Size() != 0 {
				t.Fatalf("%s: the slot was written: %v %v", comp, st, err)
			}
		}
	})

	t.Run("truncated-prefixes", func(t *testing.T) {
		for _, comp := range deltaCompressions {
			for _, name := range []string{"edits", "random", "zeros"} {
				from, to := pairs[name][0], pairs[name][1]
				c := newDeltaCase(t, from, to, mustCreate(t, from, to, comp))
				if exit, out := deltaRun(t, "truncs", c.from, c.patch, strconv.Itoa(len(to))); exit != 0 || !strings.HasPrefix(out, "truncs=") {
					t.Fatalf("%s %s: exit %d: %s", name, comp, exit, out)
				}
			}
		}
	})

	t.Run("flipped-bytes", func(t *testing.T) {
		// Any outcome but a crash or an access out of bounds (the driver
		// aborts on those, the sanitizers on the rest).
		for _, comp := range deltaCompressions {
			for _, name := range []string{"edits", "zeros", "insert-delete"} {
				from, to := pairs[name][0], pairs[name][1]
				c := newDeltaCase(t, from, to, mustCreate(t, from, to, comp))
				exit, out := deltaRun(t, "flips", c.from, c.patch, strconv.Itoa(len(to)+len(to)/2), strconv.FormatUint(r.Uint64(), 10), "150")
				if exit != 0 || !strings.HasPrefix(out, "flips=150 ") {
					t.Fatalf("%s %s: exit %d: %s", name, comp, exit, out)
				}
				t.Logf("%s %s: %s", name, comp, strings.TrimSpace(out))
			}
		}
	})

	t.Run("damaged-checkpoint", func(t *testing.T) {
		for _, comp := range deltaCompressions {
			c := newDeltaCase(t, fw, fw2, mustCreate(t, fw, fw2, comp))
			exit, out := deltaRun(t, "damage", c.from, c.patch, strconv.Itoa(len(fw2)), strconv.FormatUint(r.Uint64(), 10), "150")
			var n, damaged, refused int
			if _, err := fmt.Sscanf(out, "damage=%d damaged=%d refused=%d", &n, &damaged, &refused); exit != 0 || err != nil {
				t.Fatalf("%s: exit %d: %s (%v)", comp, exit, out, err)
			}
			if damaged < 100 || refused != damaged {
				t.Fatalf("%s: fota_delta_check refused %d of %d damaged states", comp, refused, damaged)
			}
			t.Logf("%s: %s", comp, strings.TrimSpace(out))
		}
		// Through a file, as firmware restores it: one byte changed.
		c := newDeltaCase(t, fw, fw2, mustCreate(t, fw, fw2, "heatshrink"))
		_, _, writes := c.apply(t, len(fw2), 1, 0)
		err := os.Remove(c.state)
		if err != nil {
			t.Fatal(err)
		}
		var st []byte
		for seed := uint64(2); st == nil; seed++ { // until a run saved a state before its power cut
			if exit, _, _ := c.apply(t, len(fw2), seed, 1+writes/2); exit != 99 {
				t.Fatalf("power cut run: exit %d", exit)
			}
			if st, err = os.ReadFile(c.state); err != nil && (!os.IsNotExist(err) || seed > 50) {
				t.Fatal(err)
			}
		}
		st[r.IntN(len(st))] ^= 0x10
		if err := os.WriteFile(c.state, st, 0o600); err != nil {
			t.Fatal(err)
		}
		if exit, out := deltaRun(t, "apply", c.from, c.patch, c.out, c.state, strconv.Itoa(len(fw2)), "3", "0"); exit != 3 || !strings.Contains(out, fmt.Sprint(deltaState)) {
			t.Fatalf("damaged state: exit %d: %s", exit, out)
		}
	})
}

// TestDeltaVectors: the C applier against delta/testdata/vectors, the files
// delta.Apply is checked against (docs/FORMAT.md, "Test vectors").
func TestDeltaVectors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(srcDir(t), "..", "..", "delta", "testdata", "vectors", "*.txt"))
	if err != nil || len(files) < 10 {
		t.Fatalf("vectors: %d files (%v)", len(files), err)
	}
	// The exact error for the refused vectors this applier tells apart;
	// others need any "corrupt" class error.
	exact := map[string]int{
		"bad-truncated": deltaTruncated, "bad-trailing": deltaCorrupt, "bad-diff-past-from": deltaFromRange,
		"bad-write-past-to": deltaPastEnd, "bad-adjustment": deltaFromRange, "bad-size-overflow": deltaCorrupt,
		"bad-data-format": deltaCorrupt, "unsupported-in-place": deltaUnsupported,
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			v := readDeltaVector(t, file)
			c := newDeltaCase(t, v["from"], v["to"], v["patch"])
			exit, code, _ := c.apply(t, 1<<20, 7, 0)
			switch expect := string(v["expect"]); expect {
			case "success":
				if exit != 0 {
					t.Fatalf("error %d, want success", code)
				}
				c.wantOut(t)
			case "corrupt", "unsupported":
				want, ok := exact[name]
				switch {
				case ok && code != want:
					t.Fatalf("error %d, want %d", code, want)
				case expect == "unsupported" && code != deltaUnsupported:
					t.Fatalf("error %d, want unsupported (%d)", code, deltaUnsupported)
				case expect == "corrupt" && (code == deltaOK || code == deltaUnsupported || code < deltaUnsupported):
					t.Fatalf("error %d, want a corrupt patch error", code)
				}
			default:
				t.Fatalf("expect %q", expect)
			}
		})
	}
}

// readDeltaVector reads "key: value" lines; values other than expect are hex.
func readDeltaVector(t *testing.T, file string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %q", line)
		}
		val = strings.TrimSpace(val)
		if key == "expect" {
			v[key] = []byte(val)
		} else {
			v[key] = unhex(t, val)
		}
	}
	if len(v["expect"]) == 0 {
		t.Fatal("no expect line")
	}
	return v
}
