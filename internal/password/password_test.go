package password

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// vectors were made by the argon2 reference implementation's command line
// tool (Debian's argon2 package, 0~20171227), for example:
//
//	echo -n "correct horse battery staple" | argon2 somesaltsomesalt -id -t 2 -k 19456 -p 1 -l 32 -e
//
// so they check this package against another implementation, not against
// itself.
var vectors = []struct {
	name, password, hash string
}{
	{"current parameters", "correct horse battery staple",
		"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ISO7kkvFzh19GM8qB7patN3C3Y9HHsjlVTfEZ9T600Y"},
	{"two lanes, non-ASCII password", "pässwörd-ünïcode ✓",
		"$argon2id$v=19$m=8192,t=3,p=2$MDEyMzQ1Njc4OWFiY2RlZg$6PHuzxwLN1auSYrBJtbfz0SJQXBbzrwcfuJcYAeGfug"},
	{"the bounds' memory, four lanes, 64-byte key", "0123456789",
		"$argon2id$v=19$m=65536,t=1,p=4$c2FsdHNhbHRzYWx0c2FsdA$SAzheILr8Zt81UdGSPCP2IGa/euA6Z8Fhih9LXDSYO6gGlrsyZgkyxcVZGgt7tEYffwbRqUTG1ed2J9hyoYemQ"},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			for _, tc := range []struct {
				password string
				want     bool
			}{
				{v.password, true},
				{v.password + " ", false},
				{"x" + v.password[1:], false},
				{"", false},
			} {
				ok, err := Verify(v.hash, tc.password)
				if err != nil || ok != tc.want {
					t.Errorf("Verify(%q) = %v, %v; want %v", tc.password, ok, err, tc.want)
				}
			}
		})
	}
}

// Hash makes what Verify accepts, with the current parameters and a new
// salt each time.
func TestHashVerify(t *testing.T) {
	const pw = "a long enough passphrase"
	a, err := Hash(pw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Hash(pw)
	if !strings.HasPrefix(a, "$argon2id$v=19$m=19456,t=2,p=1$") || a == b {
		t.Fatalf("two hashes of one password:\n%s\n%s\nwant the current parameters and different salts", a, b)
	}
	p, salt, key, err := parse(a)
	if err != nil || p != (params{Memory, Time, Threads}) || len(salt) != SaltLen || len(key) != KeyLen {
		t.Fatalf("parse(Hash()) = %+v, %d-byte salt, %d-byte key, %v", p, len(salt), len(key), err)
	}
	for _, tc := range []struct {
		hash, password string
		want           bool
	}{
		{a, pw, true},
		{b, pw, true},
		{a, "a long enough passphrasE", false},
		{a, pw[:len(pw)-1], false},
		{a, "", false},
	} {
		if ok, err := Verify(tc.hash, tc.password); err != nil || ok != tc.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tc.password, ok, err, tc.want)
		}
	}
	if ok, _ := Verify(a[:len(a)-2]+"AA", pw); ok {
		t.Fatal("a hash with another key verified")
	}
}

// Verify refuses, without computing anything, every hash that is not a
// canonical argon2id PHC string within the bounds; its errors quote
// neither the salt nor the key.
func TestVerifyRefusesMalformed(t *testing.T) {
	const salt, key = "c29tZXNhbHRzb21lc2FsdA", "ISO7kkvFzh19GM8qB7patN3C3Y9HHsjlVTfEZ9T600Y"
	with := func(head string) string { return head + "$" + salt + "$" + key }
	for _, tc := range []struct {
		name, hash, want string
	}{
		{"empty", "", "want $argon2id$v=19"},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "want $argon2id$v=19"},
		{"argon2i", with("$argon2i$v=19$m=19456,t=2,p=1"), `algorithm "argon2i"`},
		{"argon2d", with("$argon2d$v=19$m=19456,t=2,p=1"), `algorithm "argon2d"`},
		{"version 16", with("$argon2id$v=16$m=19456,t=2,p=1"), `version "v=16"`},
		{"no version", "$argon2id$m=19456,t=2,p=1$" + salt + "$" + key, "want $argon2id$v=19"},
		{"parameters out of order", with("$argon2id$v=19$t=2,m=19456,p=1"), "memory: want m=N"},
		{"a parameter missing", with("$argon2id$v=19$m=19456,t=2"), "want the parameters m, t and p"},
		{"a key id parameter", with("$argon2id$v=19$m=19456,t=2,p=1,keyid=AAAA"), "want the parameters m, t and p"},
		{"gigabytes of memory", with("$argon2id$v=19$m=4194304,t=2,p=1"), "memory: 4194304, want 8 to 65536"},
		{"memory past uint32", with("$argon2id$v=19$m=99999999999,t=2,p=1"), "memory: want a whole number"},
		{"a thousand passes", with("$argon2id$v=19$m=19456,t=1000,p=1"), "passes: 1000, want 1 to 10"},
		{"no passes", with("$argon2id$v=19$m=19456,t=0,p=1"), "passes: 0, want 1 to 10"},
		{"255 lanes", with("$argon2id$v=19$m=65536,t=2,p=255"), "lanes: 255, want 1 to 4"},
		{"less than 8 KiB a lane", with("$argon2id$v=19$m=16,t=1,p=4"), "under the 8 KiB per lane"},
		{"a leading zero", with("$argon2id$v=19$m=019456,t=2,p=1"), "memory: want a whole number"},
		{"a sign", with("$argon2id$v=19$m=+19456,t=2,p=1"), "memory: want a whole number"},
		{"a space", with("$argon2id$v=19$m=19456, t=2,p=1"), "passes: want t=N"},
		{"padded salt", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key, "want a salt"},
		{"URL-safe base64", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key[:5] + "_" + key[6:], "want a key"},
		{"stray bits in the key's last character", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key[:len(key)-1] + "Z", "want a key"},
		{"short salt", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$" + key, "want a salt of 8 to 64 bytes"},
		{"short key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$c2hvcnRrZXk", "want a key of 16 to 64 bytes"},
		{"a line break in the key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key[:20] + "\n" + key[20:], "want a key"},
		{"no key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$", "want a key"},
		{"a field more", with("$argon2id$v=19$m=19456,t=2,p=1") + "$", "want $argon2id$v=19"},
		{"no leading $", with("argon2id$v=19$m=19456,t=2,p=1"), "want $argon2id$v=19"},
		{"too long", with("$argon2id$v=19$m=19456,t=2,p=1") + strings.Repeat("A", MaxHashLen), "over the 256 a hash may have"},
		{"a control character", with("$argon2id\x1b[2J$v=19$m=19456,t=2,p=1"), `algorithm "argon2id\x1b[2J"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := Verify(tc.hash, "correct horse battery staple")
			if ok || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %v, %v; want false and a malformed-hash error saying %q", ok, err, tc.want)
			}
			if strings.Contains(err.Error(), salt) || strings.Contains(err.Error(), key[:20]) {
				t.Fatalf("the error quotes the hash: %v", err)
			}
		})
	}
}

// DummyVerify does the work of a real verification: it allocates what
// Verify of a hash from Hash allocates (argon2's memory is the cost).
// Memory, unlike time, does not depend on what else the machine runs.
func TestDummyVerifyCostsAsMuchAsVerify(t *testing.T) {
	h, err := Hash("the user's real password")
	if err != nil {
		t.Fatal(err)
	}
	allocated := func(fn func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	real := allocated(func() { Verify(h, "a wrong guess at it") })
	dummy := allocated(func() { DummyVerify("a wrong guess at it") })
	if real < Memory*1024 || dummy < real*99/100 || dummy > real*101/100 {
		t.Fatalf("Verify allocated %d bytes, DummyVerify %d; want both about %d", real, dummy, Memory*1024)
	}
}

func TestCheckStrength(t *testing.T) {
	for _, tc := range []struct {
		password, want string
	}{
		{"0123456789", ""},
		{"pässwörd ✓ü", ""},
		{"      spaces count", ""},
		{strings.Repeat("x", MaxLength), ""},
		{strings.Repeat("ü", MaxLength/2), ""},
		{"", "the password has 0 characters; use at least 10"},
		{"012345678", "the password has 9 characters; use at least 10"},
		{"ünïcödé✓✓", "the password has 9 characters"}, // 9 characters, more bytes
		{strings.Repeat("x", MaxLength+1), "the password is 257 bytes long; use at most 256"},
		{strings.Repeat("ü", MaxLength/2+1), "the password is 258 bytes long"},
		{"0123456789\n", "control character"},
		{"0123\t456789", "control character"},
		{"0123456789\x1b[2J", "control character"},
		{"0123456789\x7f", "control character"},
		{"0123456789\u0085", "control character"},
		{"0123456789\xff", "not valid UTF-8"},
	} {
		err := CheckStrength(tc.password)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckStrength(%q) = %v; want %q", tc.password, err, tc.want)
		}
		if err != nil && len(tc.password) > 3 && strings.Contains(err.Error(), tc.password) {
			t.Errorf("CheckStrength's error quotes the password: %v", err)
		}
	}
}

// FuzzParse checks that whatever the parser accepts is within the bounds
// and is the one spelling of its parameters, salt and key. The corpus in
// testdata/fuzz/FuzzParse replays on every test run.
func FuzzParse(f *testing.F) {
	if seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*")); len(seeds) == 0 {
		f.Fatal("seed corpus testdata/fuzz/FuzzParse is empty")
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if p.memory > MaxMemory || p.memory < 8*uint32(p.threads) || p.time < 1 || p.time > MaxTime || p.threads < 1 || p.threads > MaxThreads ||
			len(salt) < MinSaltLen || len(salt) > MaxSaltLen || len(key) < MinKeyLen || len(key) > MaxKeyLen {
			t.Fatalf("parse(%q) accepted %+v, a %d-byte salt and a %d-byte key, out of bounds", s, p, len(salt), len(key))
		}
		if again := format(p, salt, key); again != s {
			t.Fatalf("parse(%q) then format gives %q", s, again)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	h, err := Hash("a long enough passphrase")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		Verify(h, "a long enough passphrase")
	}
}
