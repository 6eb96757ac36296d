package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/pgtest"
	"github.com/ecowatt/fota/internal/sqlite"
)

// runIn is run with stdin.
func runIn(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, stdin, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// fakeTerminal answers the password prompts in turn, as a person at a
// terminal would.
type fakeTerminal struct {
	answers []string
	asked   int
}

func (f *fakeTerminal) Read([]byte) (int, error) { return 0, io.EOF }

func (f *fakeTerminal) ReadPassword(ctx context.Context) ([]byte, error) {
	if f.asked == len(f.answers) {
		return nil, errors.New("asked once too often")
	}
	f.asked++
	return []byte(f.answers[f.asked-1]), nil
}

// interruptedTerminal is Ctrl-C at the prompt: the context ends.
type interruptedTerminal struct{ cancel context.CancelFunc }

func (i interruptedTerminal) Read([]byte) (int, error) { return 0, io.EOF }

func (i interruptedTerminal) ReadPassword(ctx context.Context) ([]byte, error) {
	i.cancel()
	<-ctx.Done()
	return nil, ctx.Err()
}

// userData makes a server data folder with an empty database.
func userData(t *testing.T) (string, *sqlite.Store) {
	t.Helper()
	dir := t.TempDir()
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "fota.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return dir, store
}

// noSecrets fails if a command's output holds a password or a hash.
func (r result) noSecrets(t *testing.T, passwords ...string) result {
	t.Helper()
	for _, s := range append(passwords, "$argon2id", "argon2") {
		if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
			t.Fatalf("output shows %q:\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
	return r
}

const (
	anaPW = "ana's long passphrase"
	newPW = "another long passphrase ✓"
)

func TestUserAdd(t *testing.T) {
	dir, store := userData(t)
	ctx := context.Background()
	stdin := func(s string) io.Reader { return strings.NewReader(s) }

	runIn(t, stdin(anaPW+"\n"), "user", "add", "--data", dir, "--name", "ana", "--role", "admin", "--password-stdin").
		noSecrets(t, anaPW).expect(t, 0, "user ana added, role admin", "")
	u, err := store.User(ctx, "ana")
	if err != nil || u.Role != fota.RoleAdmin {
		t.Fatalf("ana after add: %+v, %v", u, err)
	}
	if ok, err := password.Verify(u.PasswordHash, anaPW); !ok || err != nil {
		t.Fatalf("the stored hash does not verify ana's password: %v, %v", ok, err)
	}
	evs, _ := store.Events(ctx, fota.EventFilter{Kind: fota.EventUserAdded})
	if len(evs) != 1 || evs[0].Actor != "local" || evs[0].Detail != "user ana, role admin" {
		t.Fatalf("user-added events: %+v", evs)
	}

	// On a terminal: asked twice, without echo; a line break in --password-stdin is not part of it.
	tty := &fakeTerminal{answers: []string{"bob's long passphrase", "bob's long passphrase"}}
	runIn(t, tty, "user", "add", "--data", dir, "--name", "bob", "--role", "viewer").
		noSecrets(t, "bob's long passphrase").expect(t, 0, "user bob added, role viewer", "New password for bob (at least 10 characters): \nThe same again: \n")
	runIn(t, stdin("carol's passphrase\r\n"), "user", "add", "--data", dir, "--name", "carol", "--role", "operator", "--password-stdin").
		expect(t, 0, "added", "")
	for name, pw := range map[string]string{"bob": "bob's long passphrase", "carol": "carol's passphrase"} {
		u, _ := store.User(ctx, name)
		if ok, _ := password.Verify(u.PasswordHash, pw); !ok {
			t.Fatalf("%s's password does not verify", name)
		}
	}

	for _, tc := range []struct {
		name     string
		stdin    io.Reader
		args     []string
		code     int
		stderr   string
		password string
	}{
		{"no name", stdin(""), []string{"--role", "admin"}, 2, "--name is required", ""},
		{"a bad name", stdin(""), []string{"--name", "ana maria", "--role", "admin"}, 2, `--name "ana maria": want 1-64 characters`, ""},
		{"no role", stdin(""), []string{"--name", "dan"}, 2, "--role is required: admin, operator or viewer\nfota: hint: viewer reads every page; operator also runs rollouts", ""},
		{"an unknown role", stdin(""), []string{"--name", "dan", "--role", "root"}, 2, "--role \"root\": want admin, operator or viewer\nfota: hint: viewer reads", ""},
		{"a name taken", stdin("dan's passphrase\n"), []string{"--name", "ana", "--role", "viewer", "--password-stdin"}, 1,
			"user ana exists already\nfota: hint: change its password with 'fota user passwd --name ana'", ""},
		{"a short password", stdin("short\n"), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 1,
			"the password has 5 characters; use at least 10\nfota: hint: nothing changed", "short"},
		{"a control character", stdin("tab\tin the password\n"), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 1, "control character", "in the password"},
		{"a long password", stdin(strings.Repeat("x", 300)), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 1, "longer than 256 bytes", "xxxxxxxxxx"},
		{"a long line", stdin(strings.Repeat("y", 257) + "\n"), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 1, "257 bytes long; use at most 256", "yyyyyyyyyy"},
		{"no password on stdin", stdin(""), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 2, "no password on standard input", ""},
		{"an empty line", stdin("\nsecond line password\n"), []string{"--name", "dan", "--role", "viewer", "--password-stdin"}, 2, "no password on standard input", "second line"},
		{"not a terminal", stdin("dan's passphrase\n"), []string{"--name", "dan", "--role", "viewer"}, 2,
			"standard input is not a terminal, so the password cannot be asked for\nfota: hint: give it as one line with --password-stdin", ""},
		{"passwords that differ", &fakeTerminal{answers: []string{"dan's passphrase", "dan's passphrasf"}}, []string{"--name", "dan", "--role", "viewer"}, 1,
			"the two passwords differ\nfota: hint: nothing changed", "passphras"},
		{"a short one on the terminal, asked once", &fakeTerminal{answers: []string{"short"}}, []string{"--name", "dan", "--role", "viewer"}, 1,
			"use at least 10", "short"},
		{"a stray argument", stdin(""), []string{"--name", "dan", "--role", "viewer", "extra"}, 2, "takes no arguments", ""},
		{"both --data and --db", stdin(""), []string{"--name", "dan", "--role", "viewer", "--db", "postgres://x"}, 2, "give --data or --db, not both", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"user", "add", "--data", dir}, tc.args...)
			r := runIn(t, tc.stdin, args...)
			if tc.password != "" {
				r.noSecrets(t, tc.password)
			}
			r.expect(t, tc.code, "", tc.stderr)
		})
	}
	if u, _ := store.User(ctx, "ana"); u.Role != fota.RoleAdmin {
		t.Fatal("a refused add changed ana")
	}
	if _, err := store.User(ctx, "dan"); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("a refused add stored dan: %v", err)
	}

	run(t, "user", "add", "--data", t.TempDir(), "--name", "x", "--role", "admin").
		expect(t, 1, "", "no fota database in")
	run(t, "user").expect(t, 2, "", "fota user needs a subcommand")
	run(t, "user", "--help").expect(t, 0, "admin     also manages releases (upload, withdraw) and users", "")
	run(t, "user", "add", "--help").expect(t, 0, "-password-stdin", "")
	run(t, "user", "rename").expect(t, 2, "", "unknown command 'fota user rename'")
}

// Ctrl-C at the prompt gives up and changes nothing.
func TestUserAddInterrupted(t *testing.T) {
	dir, store := userData(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut bytes.Buffer
	code := Run(ctx, []string{"user", "add", "--data", dir, "--name", "ana", "--role", "admin"}, interruptedTerminal{cancel}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "fota: error: interrupted; nothing changed") {
		t.Fatalf("exit %d\nstderr: %s", code, errOut.String())
	}
	if users, _ := store.Users(context.Background()); len(users) != 0 {
		t.Fatalf("an interrupted add stored %d users", len(users))
	}
}

// signIn makes a web session of user, as the dashboard would.
func signIn(t *testing.T, store fota.Store, user string, n byte, life time.Duration) [32]byte {
	t.Helper()
	now := time.Now()
	u, err := store.User(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	ws := &fota.WebSession{Hash: [32]byte{n}, UserName: user, Created: now, Expires: now.Add(life), Address: "192.0.2.1", PasswordHash: u.PasswordHash}
	if err := store.CreateWebSession(context.Background(), ws); err != nil {
		t.Fatal(err)
	}
	return ws.Hash
}

func inForce(t *testing.T, store fota.Store, hash [32]byte) bool {
	t.Helper()
	ws, err := store.WebSessionByHash(context.Background(), hash)
	if err != nil {
		t.Fatal(err)
	}
	return ws.InForce(time.Now())
}

func TestUserPasswd(t *testing.T) {
	dir, store := userData(t)
	ctx := context.Background()
	runIn(t, strings.NewReader(anaPW), "user", "add", "--data", dir, "--name", "ana", "--role", "operator", "--password-stdin").expect(t, 0, "added", "")
	runIn(t, strings.NewReader("bob's long passphrase"), "user", "add", "--data", dir, "--name", "bob", "--role", "viewer", "--password-stdin").expect(t, 0, "added", "")
	a1, a2 := signIn(t, store, "ana", 1, time.Hour), signIn(t, store, "ana", 2, time.Hour)
	signIn(t, store, "ana", 3, -time.Minute) // expired already
	b := signIn(t, store, "bob", 4, time.Hour)

	tty := &fakeTerminal{answers: []string{newPW, newPW}}
	runIn(t, tty, "user", "passwd", "--data", dir, "--name", "ana").noSecrets(t, newPW, anaPW).
		expect(t, 0, "password of user ana changed; 2 sessions signed out", "New password for ana")
	u, _ := store.User(ctx, "ana")
	if ok, _ := password.Verify(u.PasswordHash, newPW); !ok {
		t.Fatal("the new password does not verify")
	}
	if ok, _ := password.Verify(u.PasswordHash, anaPW); ok {
		t.Fatal("the old password still verifies")
	}
	if inForce(t, store, a1) || inForce(t, store, a2) || !inForce(t, store, b) {
		t.Fatal("passwd did not sign out ana, and only ana")
	}
	runIn(t, strings.NewReader("third long passphrase\n"), "user", "passwd", "--data", dir, "--name", "ana", "--password-stdin").
		expect(t, 0, "password of user ana changed; 0 sessions signed out", "")
	evs, _ := store.Events(ctx, fota.EventFilter{Kind: fota.EventUserPassword})
	if len(evs) != 2 || evs[1].Detail != "user ana, password changed, 2 sessions revoked" || evs[1].Actor != "local" {
		t.Fatalf("password events: %+v", evs)
	}

	runIn(t, strings.NewReader("a long passphrase\n"), "user", "passwd", "--data", dir, "--name", "nobody", "--password-stdin").
		expect(t, 1, "", "no user named \"nobody\"\nfota: hint: fota user list shows the users")
	runIn(t, strings.NewReader("short\n"), "user", "passwd", "--data", dir, "--name", "ana", "--password-stdin").
		noSecrets(t, "short").expect(t, 1, "", "use at least 10")
	runIn(t, &fakeTerminal{answers: []string{newPW, "something else entirely"}}, "user", "passwd", "--data", dir, "--name", "ana").
		expect(t, 1, "", "the two passwords differ")
	run(t, "user", "passwd", "--data", dir).expect(t, 2, "", "--name is required")
	run(t, "user", "passwd", "--data", dir, "--name", "ana").expect(t, 2, "", "--password-stdin")
	u, _ = store.User(ctx, "ana")
	if ok, _ := password.Verify(u.PasswordHash, "third long passphrase"); !ok {
		t.Fatal("a refused passwd changed the password")
	}
}

func TestUserRemoveListSignout(t *testing.T) {
	dir, store := userData(t)
	ctx := context.Background()
	run(t, "user", "list", "--data", dir).expect(t, 0, "NAME  ROLE  CREATED  SESSIONS", "no dashboard users yet")
	for _, u := range []struct{ name, role string }{{"ana", "admin"}, {"bob", "operator"}, {"Zoe", "viewer"}} {
		runIn(t, strings.NewReader("a long passphrase"), "user", "add", "--data", dir, "--name", u.name, "--role", u.role, "--password-stdin").
			expect(t, 0, "added", "")
	}
	signIn(t, store, "ana", 1, time.Hour)
	signIn(t, store, "ana", 2, time.Hour)
	signIn(t, store, "ana", 3, -time.Minute) // expired
	revoked := signIn(t, store, "ana", 4, time.Hour)
	if err := store.RevokeWebSession(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	b := signIn(t, store, "bob", 5, time.Hour)

	r := run(t, "user", "list", "--data", dir).noSecrets(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || r.code != 0 {
		t.Fatalf("user list:\n%s", r.stdout)
	}
	for i, want := range []string{"Zoe viewer 0", "ana admin 2", "bob operator 1"} {
		f := strings.Fields(lines[i+1])
		if got := f[0] + " " + f[1] + " " + f[len(f)-1]; got != want {
			t.Fatalf("user list line %d: %q, want name, role and sessions %q\n%s", i+1, lines[i+1], want, r.stdout)
		}
	}
	run(t, "user", "list", "--data", dir, "extra").expect(t, 2, "", "takes no arguments")

	run(t, "user", "signout", "--data", dir, "--name", "ana").expect(t, 0, "user ana: 2 sessions signed out", "")
	run(t, "user", "signout", "--data", dir, "--name", "ana").expect(t, 0, "user ana: 0 sessions signed out", "")
	run(t, "user", "signout", "--data", dir, "--name", "nobody").expect(t, 1, "", "no user named \"nobody\"\nfota: hint:")
	run(t, "user", "signout", "--data", dir).expect(t, 2, "", "--name is required")
	if !inForce(t, store, b) {
		t.Fatal("signing ana out signed bob out")
	}
	evs, _ := store.Events(ctx, fota.EventFilter{Kind: fota.EventSessionsRevoked, Actor: "local"})
	if len(evs) != 2 || evs[1].Detail != "user ana, 2 sessions revoked" {
		t.Fatalf("sessions-revoked events: %+v", evs)
	}

	run(t, "user", "remove", "--data", dir, "--name", "bob").expect(t, 0, "user bob removed; 1 session signed out", "")
	if _, err := store.WebSessionByHash(ctx, b); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("bob's session after his removal: %v", err)
	}
	run(t, "user", "remove", "--data", dir, "--name", "bob").expect(t, 1, "", "fota: error: no user named \"bob\"\nfota: hint: fota user list shows the users")
	run(t, "user", "remove", "--data", dir).expect(t, 2, "", "--name is required")
	r = run(t, "user", "remove", "--data", dir, "--name", "ana")
	r.expect(t, 0, "user ana removed; 0 sessions signed out", "fota: warning: no admin is left")
	run(t, "user", "remove", "--data", dir, "--name", "Zoe").expect(t, 0, "removed", "no admin is left")
	if users, _ := store.Users(ctx); len(users) != 0 {
		t.Fatalf("%d users left", len(users))
	}
	evs, _ = store.Events(ctx, fota.EventFilter{Kind: fota.EventUserRemoved, Actor: "local"})
	if len(evs) != 3 || evs[2].Detail != "user bob, role operator, 1 session ended" {
		t.Fatalf("user-removed events: %+v", evs)
	}
}

// --db acts on a PostgreSQL database as --data does on SQLite.
func TestUserCommandsOnPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, "fota_cli_")
	runIn(t, strings.NewReader(anaPW+"\n"), "user", "add", "--db", dsn, "--name", "ana", "--role", "viewer", "--password-stdin").
		expect(t, 0, "user ana added, role viewer", "")
	run(t, "user", "list", "--db", dsn).expect(t, 0, "ana", "")
	run(t, "user", "signout", "--db", dsn, "--name", "ana").expect(t, 0, "0 sessions signed out", "")
	run(t, "user", "remove", "--db", dsn, "--name", "ana").expect(t, 0, "user ana removed", "")
}
