// Package password hashes and checks the passwords of dashboard users with
// argon2id (RFC 9106), stored as PHC strings:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt, base64>$<key, base64>
//
// Parameters: OWASP's minimum configuration for argon2id (Password Storage
// Cheat Sheet: 19 MiB of memory, 2 passes, 1 lane), a 16-byte random salt
// and a 32-byte key. A verification costs the server about 25 ms of one core
// (BenchmarkVerify) and 19 MiB while it runs: little for sign-ins, which are
// rare (a session lasts), and much for whoever guesses from a stolen
// database, who pays it for every guess; the memory is what makes guessing
// dear on GPUs and ASICs. One lane, because the server's other cores belong
// to the devices. A hash carries its parameters, so raising these later
// leaves the hashes made before valid.
//
// Threat model:
//   - Someone with a copy of the database (a backup, a replica's disk) wants
//     passwords, to sign in or to try elsewhere: every guess costs them what
//     a sign-in costs the server, and the per-user random salt makes each
//     user's guesses their own (no precomputed tables, no one guess tried
//     against every user at once).
//   - Someone who can write the users table could set any hash, and so any
//     password, for a user: that is outside what a hash can defend. What
//     Verify defends is the server: it parses a stored hash strictly and
//     refuses parameters beyond MaxMemory, MaxTime and MaxThreads before
//     computing anything, so a tampered row cannot make a sign-in allocate
//     gigabytes or run for minutes.
//   - Someone guessing online learns nothing from timing: keys are compared
//     in constant time, and DummyVerify lets a sign-in for an unknown user
//     cost what one for a known user costs, so response times do not tell
//     which names exist. Limiting how often anyone may guess, and how many
//     verifications run at once (each holds 19 MiB), is the caller's job.
//
// Passwords and hashes are never in an error this package returns.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Parameters of the hashes Hash makes.
const (
	Memory  = 19 * 1024 // KiB: 19 MiB
	Time    = 2         // passes over the memory
	Threads = 1         // lanes
	SaltLen = 16        // bytes
	KeyLen  = 32        // bytes
)

// Bounds Verify holds a stored hash to. The upper bounds keep the cost of
// one verification within reach of the server whatever a row says; the
// lower ones are argon2's own (RFC 9106: at least 8 KiB per lane) and the
// PHC format's salt and key lengths.
const (
	MaxMemory  = 64 * 1024 // KiB
	MaxTime    = 10
	MaxThreads = 4
	MinSaltLen = 8
	MaxSaltLen = 64
	MinKeyLen  = 16
	MaxKeyLen  = 64
	// MaxHashLen bounds a whole PHC string, checked before it is parsed.
	MaxHashLen = 256
)

// Password rules (CheckStrength).
const (
	MinLength = 10  // characters
	MaxLength = 256 // bytes
)

// ErrMalformed is what Verify returns, wrapped with what is wrong, for a
// stored hash it will not use.
var ErrMalformed = errors.New("malformed password hash")

// b64 is the PHC string's base64: standard alphabet, no padding, and
// strict, so one salt or key has one spelling.
var b64 = base64.RawStdEncoding.Strict()

// params are a hash's argon2id parameters.
type params struct {
	memory  uint32
	time    uint32
	threads uint8
}

// Hash returns the PHC string of password with the current parameters and
// a new random salt.
func Hash(password string) (string, error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	p := params{memory: Memory, time: Time, threads: Threads}
	return format(p, salt, argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, KeyLen)), nil
}

// Verify reports whether password is the one hash was made of. It returns
// an error wrapping ErrMalformed, and false, for a hash that is not a PHC
// argon2id string within the bounds above: nothing is computed for it.
func Verify(hash, password string) (bool, error) {
	p, salt, key, err := parse(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// dummySalt and dummyKey are what DummyVerify computes and compares: their
// values do not matter, their lengths match Hash's.
var (
	dummySalt = make([]byte, SaltLen)
	dummyKey  = make([]byte, KeyLen)
)

// DummyVerify does the work of verifying password against a hash made by
// Hash, and throws the result away. Call it when a sign-in names no user,
// so that it takes as long as one that names a user with a wrong password.
func DummyVerify(password string) {
	got := argon2.IDKey([]byte(password), dummySalt, Time, Memory, Threads, KeyLen)
	subtle.ConstantTimeCompare(got, dummyKey)
}

// format writes a PHC string.
func format(p params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parse reads a PHC argon2id string strictly: version 19, the parameters m,
// t and p in that order and nothing else, canonical decimal numbers within
// the bounds, canonical base64. What it accepts, format writes back the same.
func parse(s string) (params, []byte, []byte, error) {
	var p params
	bad := func(format string, args ...any) (params, []byte, []byte, error) {
		return p, nil, nil, fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if len(s) > MaxHashLen {
		return bad("%d characters, over the %d a hash may have", len(s), MaxHashLen)
	}
	fields := strings.Split(s, "$")
	if len(fields) != 6 || fields[0] != "" {
		return bad("want $argon2id$v=19$m=M,t=T,p=P$SALT$KEY")
	}
	if fields[1] != "argon2id" {
		return bad("algorithm %+q, want argon2id", shorten(fields[1]))
	}
	if fields[2] != "v=19" {
		return bad("version %+q, want v=19", shorten(fields[2]))
	}
	ps := strings.Split(fields[3], ",")
	if len(ps) != 3 {
		return bad("want the parameters m, t and p, in that order")
	}
	m, err := number(ps[0], "m=", 8, MaxMemory)
	if err != nil {
		return bad("memory: %v", err)
	}
	t, err := number(ps[1], "t=", 1, MaxTime)
	if err != nil {
		return bad("passes: %v", err)
	}
	l, err := number(ps[2], "p=", 1, MaxThreads)
	if err != nil {
		return bad("lanes: %v", err)
	}
	if m < 8*l {
		return bad("memory %d KiB is under the 8 KiB per lane argon2 needs", m)
	}
	p = params{memory: m, time: t, threads: uint8(l)}
	salt, err := decode(fields[4])
	if err != nil || len(salt) < MinSaltLen || len(salt) > MaxSaltLen {
		return bad("want a salt of %d to %d bytes in unpadded base64", MinSaltLen, MaxSaltLen)
	}
	key, err := decode(fields[5])
	if err != nil || len(key) < MinKeyLen || len(key) > MaxKeyLen {
		return bad("want a key of %d to %d bytes in unpadded base64", MinKeyLen, MaxKeyLen)
	}
	return p, salt, key, nil
}

// decode reads unpadded standard base64 strictly. Go's decoder skips line
// breaks, even when strict: they are refused here first.
func decode(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return b64.DecodeString(s)
}

// number reads "NAME=N": N in decimal without sign or leading zeros, from
// lo to hi.
func number(s, name string, lo, hi uint32) (uint32, error) {
	v, ok := strings.CutPrefix(s, name)
	if !ok {
		return 0, fmt.Errorf("want %sN", name)
	}
	if v == "" || len(v) > 10 || len(v) > 1 && v[0] == '0' || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("want a whole number after %s", name)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < uint64(lo) || n > uint64(hi) {
		return 0, fmt.Errorf("%s, want %d to %d", v, lo, hi)
	}
	return uint32(n), nil
}

// shorten keeps a piece of a malformed hash short enough to quote in an
// error (with %+q): algorithm names, versions and numbers, never salts or
// keys.
func shorten(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}

// CheckStrength says what is wrong with password as a new password, or
// nil: it must be valid UTF-8 without control characters (a tab, a line
// break, an escape), at least MinLength characters and at most MaxLength
// bytes. The messages never quote the password.
func CheckStrength(password string) error {
	if !utf8.ValidString(password) {
		return errors.New("the password is not valid UTF-8 text")
	}
	if len(password) > MaxLength {
		return fmt.Errorf("the password is %d bytes long; use at most %d", len(password), MaxLength)
	}
	for _, r := range password {
		if unicode.IsControl(r) {
			return errors.New("the password holds a control character (a tab, a line break or an escape); use printable characters only")
		}
	}
	if n := utf8.RuneCountInString(password); n < MinLength {
		return fmt.Errorf("the password has %d characters; use at least %d", n, MinLength)
	}
	return nil
}
