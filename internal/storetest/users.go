package storetest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
)

// userHash stands for a password hash: stores keep it as it is, and no
// event or error may show it.
func userHash(name string) string {
	return "$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0LXNhbHQ$" + name + "-SECRET-HASH"
}

// cookie is the SHA-256 of a made-up session token.
func cookie(n int) [32]byte { return sha256.Sum256([]byte(fmt.Sprint("session-token-", n))) }

func addUser(t *testing.T, s fota.Store, name, role string) *fota.User {
	t.Helper()
	u := &fota.User{Name: name, Role: role, PasswordHash: userHash(name)}
	must(t, s.CreateUser(context.Background(), u))
	return u
}

// signIn stores a session of user, made at the clock's time and lasting
// life, as the dashboard would: the user is the actor.
func signIn(t *testing.T, s fota.Store, c *Clock, n int, user string, life time.Duration) *fota.WebSession {
	t.Helper()
	now := c.Now().Truncate(time.Millisecond)
	ws := &fota.WebSession{Hash: cookie(n), UserName: user, Created: now, Expires: now.Add(life), LastSeen: now,
		Address: "192.0.2." + fmt.Sprint(n), Agent: "Firefox/146", PasswordHash: userHash(user)}
	must(t, s.CreateWebSession(fota.WithActor(context.Background(), "user:"+user), ws))
	return ws
}

// sessionHashes lists the n of each session WebSessions gives, in order.
func sessionHashes(t *testing.T, s fota.Store, user string, now time.Time) string {
	t.Helper()
	wss, err := s.WebSessions(context.Background(), user, now)
	must(t, err)
	var out []string
	for _, ws := range wss {
		found := false
		for n := range 20 {
			if ws.Hash == cookie(n) {
				out = append(out, fmt.Sprint(n))
				found = true
			}
		}
		if !found {
			t.Fatalf("a session of unknown hash %x", ws.Hash)
		}
	}
	return strings.Join(out, " ")
}

// noSecrets fails if any event shows a password hash.
func noSecrets(t *testing.T, s fota.Store) {
	t.Helper()
	evs, err := s.Events(context.Background(), fota.EventFilter{Limit: 1000})
	must(t, err)
	for _, e := range evs {
		if strings.Contains(e.Detail, "SECRET") || strings.Contains(e.Detail, "argon2") {
			t.Fatalf("an event shows a password hash: %+v", e)
		}
	}
}

// describe lists events' details and actors, for failure messages.
func describe(evs []*fota.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "[%s %q by %q] ", e.Kind, e.Detail, e.Actor)
	}
	return b.String()
}

func testUsers(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "token:root")
	ana := &fota.User{Name: "ana", Role: fota.RoleOperator, PasswordHash: userHash("ana")}
	must(t, s.CreateUser(ctx, ana))
	if ana.ID == 0 || !ana.Created.Equal(c.Now().Truncate(time.Millisecond)) {
		t.Fatalf("CreateUser did not set ID and Created: %+v", ana)
	}
	err := s.CreateUser(ctx, &fota.User{Name: "ana", Role: fota.RoleAdmin, PasswordHash: "other"})
	wantCode(t, err, fota.ECONFLICT)
	if !strings.Contains(fota.ErrorMessage(err), "exists already") {
		t.Fatalf("duplicate user: %v", err)
	}
	for _, u := range []*fota.User{
		{Name: "", Role: fota.RoleAdmin, PasswordHash: "h"},
		{Name: "two words", Role: fota.RoleAdmin, PasswordHash: "h"},
		{Name: "..", Role: fota.RoleAdmin, PasswordHash: "h"},
		{Name: "bob", Role: "root", PasswordHash: "h"},
		{Name: "bob", Role: "", PasswordHash: "h"},
		{Name: "bob", Role: fota.RoleViewer},
	} {
		wantCode(t, s.CreateUser(ctx, u), fota.EINVALID)
	}
	addUser(t, s, "Zoe", fota.RoleAdmin)
	addUser(t, s, "bob", fota.RoleViewer)

	got, err := s.User(ctx, "ana")
	must(t, err)
	if got.ID != ana.ID || got.Name != "ana" || got.Role != fota.RoleOperator || got.PasswordHash != userHash("ana") || !got.Created.Equal(ana.Created) {
		t.Fatalf("read back %+v, want %+v", got, ana)
	}
	_, err = s.User(ctx, "nobody")
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.User(ctx, "Ana") // names are exact
	wantCode(t, err, fota.ENOTFOUND)
	all, err := s.Users(ctx)
	must(t, err)
	var names []string
	for _, u := range all {
		names = append(names, u.Name+":"+u.Role)
		if u.PasswordHash != userHash(u.Name) {
			t.Fatalf("user %s read back with hash %q", u.Name, u.PasswordHash)
		}
	}
	if got := strings.Join(names, " "); got != "Zoe:admin ana:operator bob:viewer" {
		t.Fatalf("users by name (bytewise): %s", got)
	}

	must(t, s.SetUserPassword(ctx, "ana", "new-hash"))
	if got, _ := s.User(ctx, "ana"); got.PasswordHash != "new-hash" {
		t.Fatalf("hash after SetUserPassword: %q", got.PasswordHash)
	}
	wantCode(t, s.SetUserPassword(ctx, "nobody", "h"), fota.ENOTFOUND)
	wantCode(t, s.SetUserPassword(ctx, "ana", ""), fota.EINVALID)

	must(t, s.RemoveUser(ctx, "bob"))
	_, err = s.User(ctx, "bob")
	wantCode(t, err, fota.ENOTFOUND)
	wantCode(t, s.RemoveUser(ctx, "bob"), fota.ENOTFOUND)
	// The name is free again, for a new user with a new id.
	bob := addUser(t, s, "bob", fota.RoleAdmin)
	if bob.ID <= ana.ID {
		t.Fatalf("a user added again has id %d, not above the ids before", bob.ID)
	}

	for _, tc := range []struct{ kind, detail, actor string }{
		{fota.EventUserAdded, "user ana, role operator", "token:root"},
		{fota.EventUserPassword, "user ana, password changed, 0 sessions revoked", "token:root"},
		{fota.EventUserRemoved, "user bob, role viewer, 0 sessions ended", "token:root"},
	} {
		evs := eventsOf(t, s, tc.kind)
		if len(evs) == 0 || evs[len(evs)-1].Detail != tc.detail || evs[len(evs)-1].Actor != tc.actor {
			t.Fatalf("%s events %s; want the first %q by %s", tc.kind, describe(evs), tc.detail, tc.actor)
		}
	}
	if n := len(eventsOf(t, s, fota.EventUserAdded)); n != 4 {
		t.Fatalf("%d user-added events, want 4 (refused users record nothing)", n)
	}
	noSecrets(t, s)
}

func testWebSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "user:ana")
	addUser(t, s, "ana", fota.RoleOperator)
	addUser(t, s, "bob", fota.RoleViewer)
	wantCode(t, s.CreateWebSession(ctx, &fota.WebSession{Hash: cookie(0), UserName: "nobody", Expires: c.Now().Add(time.Hour), PasswordHash: "h"}), fota.ENOTFOUND)

	s1 := signIn(t, s, c, 1, "ana", 12*time.Hour)
	c.Advance(time.Minute)
	s2 := signIn(t, s, c, 2, "ana", 12*time.Hour)
	c.Advance(time.Minute)
	signIn(t, s, c, 3, "bob", 12*time.Hour)
	c.Advance(time.Minute)
	short := signIn(t, s, c, 4, "ana", 2*time.Minute)
	wantCode(t, s.CreateWebSession(ctx, &fota.WebSession{Hash: cookie(1), UserName: "bob", Expires: c.Now().Add(time.Hour), PasswordHash: userHash("bob")}), fota.ECONFLICT)
	// A sign-in that verified a hash that is no longer the user's (the
	// password changed meanwhile) makes no session; nor one that says none.
	wantCode(t, s.CreateWebSession(ctx, &fota.WebSession{Hash: cookie(90), UserName: "bob", Expires: c.Now().Add(time.Hour), PasswordHash: "an old hash"}), fota.ECONFLICT)
	wantCode(t, s.CreateWebSession(ctx, &fota.WebSession{Hash: cookie(91), UserName: "bob", Expires: c.Now().Add(time.Hour)}), fota.EINVALID)
	if _, err := s.WebSessionByHash(ctx, cookie(90)); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("a refused sign-in left a session: %v", err)
	}

	got, err := s.WebSessionByHash(ctx, cookie(1))
	must(t, err)
	if got.Hash != s1.Hash || got.UserName != "ana" || !got.Created.Equal(s1.Created) || !got.Expires.Equal(s1.Expires) ||
		!got.LastSeen.Equal(s1.LastSeen) || !got.Revoked.IsZero() || got.Address != "192.0.2.1" || got.Agent != "Firefox/146" {
		t.Fatalf("read back %+v, want %+v", got, s1)
	}
	_, err = s.WebSessionByHash(ctx, cookie(9))
	wantCode(t, err, fota.ENOTFOUND)

	// Last seen goes up, never down.
	seen := c.Now().Add(30 * time.Second).Truncate(time.Millisecond)
	must(t, s.TouchWebSession(ctx, cookie(2), seen))
	must(t, s.TouchWebSession(ctx, cookie(2), seen.Add(-10*time.Second)))
	if got, _ := s.WebSessionByHash(ctx, cookie(2)); !got.LastSeen.Equal(seen) || !got.Created.Equal(s2.Created) {
		t.Fatalf("after touches: last seen %v, want %v", got.LastSeen, seen)
	}
	wantCode(t, s.TouchWebSession(ctx, cookie(9), seen), fota.ENOTFOUND)

	// In force, newest first; everyone's with "".
	now := c.Now()
	for user, want := range map[string]string{"ana": "4 2 1", "bob": "3", "": "4 3 2 1", "nobody": ""} {
		if got := sessionHashes(t, s, user, now); got != want {
			t.Fatalf("sessions of %q in force: %s, want %s", user, got, want)
		}
	}
	// An expired session is not listed, but still found: the caller decides.
	c.Advance(3 * time.Minute)
	if got := sessionHashes(t, s, "ana", c.Now()); got != "2 1" {
		t.Fatalf("sessions in force after one expired: %s", got)
	}
	if got, err := s.WebSessionByHash(ctx, short.Hash); err != nil || got.InForce(c.Now()) {
		t.Fatalf("an expired session: %+v, %v", got, err)
	}
	if got := sessionHashes(t, s, "ana", short.Expires); got != "2 1" {
		t.Fatal("a session is listed at its expiry")
	}

	// Signing out.
	must(t, s.RevokeWebSession(ctx, cookie(2)))
	got, _ = s.WebSessionByHash(ctx, cookie(2))
	if !got.Revoked.Equal(c.Now().Truncate(time.Millisecond)) || got.InForce(c.Now()) {
		t.Fatalf("a revoked session: %+v", got)
	}
	c.Advance(time.Minute)
	must(t, s.RevokeWebSession(ctx, cookie(2))) // again: nothing changes
	if again, _ := s.WebSessionByHash(ctx, cookie(2)); !again.Revoked.Equal(got.Revoked) {
		t.Fatalf("revoking again moved the time: %v, was %v", again.Revoked, got.Revoked)
	}
	wantCode(t, s.RevokeWebSession(ctx, cookie(9)), fota.ENOTFOUND)
	if got := sessionHashes(t, s, "", c.Now()); got != "3 1" {
		t.Fatalf("sessions in force after a sign-out: %s", got)
	}

	// Revoking a user's sessions counts those in force only.
	n, err := s.RevokeUserSessions(fota.WithActor(ctx, "local"), "ana")
	must(t, err)
	if n != 1 {
		t.Fatalf("RevokeUserSessions revoked %d, want 1 (one expired, one signed out)", n)
	}
	if n, _ := s.RevokeUserSessions(ctx, "ana"); n != 0 {
		t.Fatalf("revoking again revoked %d", n)
	}
	_, err = s.RevokeUserSessions(ctx, "nobody")
	wantCode(t, err, fota.ENOTFOUND)
	if got := sessionHashes(t, s, "", c.Now()); got != "3" {
		t.Fatalf("sessions in force after ana's were revoked: %s", got)
	}
	if got, _ := s.WebSessionByHash(ctx, short.Hash); !got.Revoked.IsZero() {
		t.Fatal("an expired session was revoked")
	}

	signedIn := eventsOf(t, s, fota.EventUserSignedIn)
	if len(signedIn) != 4 || signedIn[0].Detail != "user ana signed in from 192.0.2.4" || signedIn[0].Actor != "user:ana" {
		t.Fatalf("signed-in events: %s", describe(signedIn))
	}
	revoked := eventsOf(t, s, fota.EventSessionsRevoked)
	if len(revoked) != 2 || revoked[1].Detail != "user ana, 1 session revoked" || revoked[1].Actor != "local" {
		t.Fatalf("sessions-revoked events: %s", describe(revoked))
	}
	noSecrets(t, s)
}

// A new password signs the user out everywhere at once; nobody else.
func testPasswordRevokesSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "local")
	addUser(t, s, "ana", fota.RoleAdmin)
	addUser(t, s, "bob", fota.RoleAdmin)
	signIn(t, s, c, 1, "ana", time.Hour)
	signIn(t, s, c, 2, "ana", time.Hour)
	signIn(t, s, c, 3, "bob", time.Hour)
	c.Advance(time.Minute)
	must(t, s.SetUserPassword(ctx, "ana", userHash("ana-2")))
	for n, inForce := range map[int]bool{1: false, 2: false, 3: true} {
		got, err := s.WebSessionByHash(ctx, cookie(n))
		must(t, err)
		if got.InForce(c.Now()) != inForce {
			t.Fatalf("session %d after ana's new password: %+v", n, got)
		}
	}
	evs := eventsOf(t, s, fota.EventUserPassword)
	if len(evs) != 1 || evs[0].Detail != "user ana, password changed, 2 sessions revoked" || evs[0].Actor != "local" {
		t.Fatalf("password events: %s", describe(evs))
	}
	noSecrets(t, s)
}

// Removing a user deletes its sessions; a user added again under the name
// gets none of them back.
func testRemoveUserDeletesSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	addUser(t, s, "ana", fota.RoleAdmin)
	addUser(t, s, "bob", fota.RoleViewer)
	signIn(t, s, c, 1, "ana", time.Hour)
	signIn(t, s, c, 2, "ana", time.Minute)
	signIn(t, s, c, 3, "bob", time.Hour)
	c.Advance(2 * time.Minute)
	must(t, s.RemoveUser(ctx, "ana"))
	for _, n := range []int{1, 2} {
		_, err := s.WebSessionByHash(ctx, cookie(n))
		wantCode(t, err, fota.ENOTFOUND)
	}
	if _, err := s.WebSessionByHash(ctx, cookie(3)); err != nil {
		t.Fatalf("bob's session after ana's removal: %v", err)
	}
	addUser(t, s, "ana", fota.RoleViewer)
	if got := sessionHashes(t, s, "ana", c.Now()); got != "" {
		t.Fatalf("a user added again has sessions %s", got)
	}
	wantCode(t, s.TouchWebSession(ctx, cookie(1), c.Now()), fota.ENOTFOUND)
	wantCode(t, s.RevokeWebSession(ctx, cookie(1)), fota.ENOTFOUND)
	evs := eventsOf(t, s, fota.EventUserRemoved)
	if len(evs) != 1 || evs[0].Detail != "user ana, role admin, 1 session ended" {
		t.Fatalf("removal events: %s", describe(evs))
	}
}

// Sessions that ended (expired or revoked) before the cutoff go, a batch
// at a time; those in force, or ended since, stay.
func testPruneWebSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	addUser(t, s, "ana", fota.RoleAdmin)
	signIn(t, s, c, 1, "ana", time.Hour)       // expires at 1 h
	signIn(t, s, c, 2, "ana", 30*24*time.Hour) // revoked at 2 h
	signIn(t, s, c, 3, "ana", 30*24*time.Hour) // in force
	signIn(t, s, c, 4, "ana", 30*24*time.Hour) // revoked at 3 days
	signIn(t, s, c, 5, "ana", 3*24*time.Hour)  // expires at 3 days
	c.Advance(2 * time.Hour)
	must(t, s.RevokeWebSession(ctx, cookie(2)))
	c.Advance(3*24*time.Hour - 2*time.Hour)
	must(t, s.RevokeWebSession(ctx, cookie(4)))
	c.Advance(time.Minute)

	before := c.Now().Add(-24 * time.Hour)
	if n, err := s.PruneWebSessions(ctx, before, 0); err != nil || n != 0 {
		t.Fatalf("a prune of batch 0: %d, %v", n, err)
	}
	for i, want := range []int{1, 1, 0} {
		n, err := s.PruneWebSessions(ctx, before, 1)
		must(t, err)
		if n != want {
			t.Fatalf("prune %d deleted %d, want %d", i+1, n, want)
		}
	}
	for n, kept := range map[int]bool{1: false, 2: false, 3: true, 4: true, 5: true} {
		_, err := s.WebSessionByHash(ctx, cookie(n))
		if kept && err != nil || !kept && fota.ErrorCode(err) != fota.ENOTFOUND {
			t.Fatalf("session %d after pruning: %v; want kept %v", n, err, kept)
		}
	}
	// A day on, the ones that ended since go too, in one batch.
	c.Advance(24 * time.Hour)
	if n, _ := s.PruneWebSessions(ctx, c.Now().Add(-24*time.Hour+time.Second), 10); n != 2 {
		t.Fatalf("the second prune deleted %d, want 2", n)
	}
	if got := sessionHashes(t, s, "", c.Now()); got != "3" {
		t.Fatalf("sessions in force after pruning: %s", got)
	}
}
