package fota

import (
	"strings"
	"testing"
	"time"
)

func TestPrepareUser(t *testing.T) {
	for _, tc := range []struct {
		name  string
		user  User
		error string
	}{
		{"good", User{Name: "ana.maria_01-x", Role: RoleOperator, PasswordHash: "$argon2id$..."}, ""},
		{"no name", User{Role: RoleAdmin, PasswordHash: "h"}, `user name ""`},
		{"a space", User{Name: "ana maria", Role: RoleAdmin, PasswordHash: "h"}, "want 1-64 characters"},
		{"dot dot", User{Name: "..", Role: RoleAdmin, PasswordHash: "h"}, "not . or .."},
		{"65 characters", User{Name: strings.Repeat("a", 65), Role: RoleAdmin, PasswordHash: "h"}, "want 1-64"},
		{"a line break", User{Name: "ana\nroot", Role: RoleAdmin, PasswordHash: "h"}, `"ana\nroot"`},
		{"no role", User{Name: "ana", PasswordHash: "h"}, `role "": want admin, operator, viewer`},
		{"unknown role", User{Name: "ana", Role: "root", PasswordHash: "h"}, `role "root"`},
		{"role in capitals", User{Name: "ana", Role: "Admin", PasswordHash: "h"}, `role "Admin"`},
		{"no hash", User{Name: "ana", Role: RoleViewer}, "no password hash"},
	} {
		err := PrepareUser(&tc.user)
		if tc.error == "" && err != nil || tc.error != "" && (ErrorCode(err) != EINVALID || !strings.Contains(err.Error(), tc.error)) {
			t.Errorf("%s: PrepareUser = %v; want %q", tc.name, err, tc.error)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	for _, tc := range []struct {
		role, need string
		want       bool
	}{
		{RoleAdmin, RoleAdmin, true}, {RoleAdmin, RoleOperator, true}, {RoleAdmin, RoleViewer, true},
		{RoleOperator, RoleAdmin, false}, {RoleOperator, RoleOperator, true}, {RoleOperator, RoleViewer, true},
		{RoleViewer, RoleAdmin, false}, {RoleViewer, RoleOperator, false}, {RoleViewer, RoleViewer, true},
		{"", RoleViewer, false}, {"root", RoleViewer, false}, {RoleAdmin, "", false}, {RoleAdmin, "root", false},
	} {
		if got := RoleAllows(tc.role, tc.need); got != tc.want {
			t.Errorf("RoleAllows(%q, %q) = %v", tc.role, tc.need, got)
		}
	}
}

func TestWebSessionInForce(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := &WebSession{Created: now.Add(-time.Hour), Expires: now.Add(time.Hour)}
	if !s.InForce(now) || s.InForce(s.Expires) || s.InForce(now.Add(2*time.Hour)) {
		t.Fatal("a session is in force until its expiry, not at it")
	}
	s.Revoked = now.Add(-time.Minute)
	if s.InForce(now) {
		t.Fatal("a revoked session is in force")
	}
}

func TestUserEvents(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	u := &User{Name: "ana", Role: RoleOperator, PasswordHash: "$argon2id$v=19$secret", Created: at}
	for _, tc := range []struct {
		e            *Event
		kind, detail string
	}{
		{UserAddedEvent(u), EventUserAdded, "user ana, role operator"},
		{UserPasswordEvent("ana", 1, at), EventUserPassword, "user ana, password changed, 1 session revoked"},
		{UserRemovedEvent(u, 2, at), EventUserRemoved, "user ana, role operator, 2 sessions ended"},
		{UserSignedInEvent(&WebSession{UserName: "ana", Address: "192.0.2.7", Created: at}), EventUserSignedIn, "user ana signed in from 192.0.2.7"},
		{UserSignedInEvent(&WebSession{UserName: "ana", Created: at}), EventUserSignedIn, "user ana signed in"},
		{SessionsRevokedEvent("ana", 0, at), EventSessionsRevoked, "user ana, 0 sessions revoked"},
	} {
		if tc.e.Kind != tc.kind || tc.e.Detail != tc.detail || !tc.e.Time.Equal(at) {
			t.Errorf("event %+v; want %s %q at %v", tc.e, tc.kind, tc.detail, at)
		}
		if strings.Contains(tc.e.Detail, "argon2") {
			t.Errorf("an event holds the password hash: %q", tc.e.Detail)
		}
	}
}
