package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

const (
	// plainSessionCookie names the session cookie (over TLS with the
	// __Host- prefix: cookieName).
	plainSessionCookie = "fota_session"
	// signinCookie holds the sign-in form's double-submit token: there is
	// no session yet to derive one from.
	signinCookie = "fota_signin"
	// touchEvery bounds how often a session's LastSeen is written.
	touchEvery = time.Minute
	// maxPassword bounds what a sign-in hashes.
	maxPassword = 256
)

func (d *Dashboard) sessionCookie(r *http.Request) string { return d.cookieName(r, plainSessionCookie) }

// cookieName is name, or over TLS __Host-name: browsers refuse such a
// cookie unless Secure, for the whole host, from this host alone, so a
// sibling subdomain or a plain-HTTP answer cannot plant one.
func (d *Dashboard) cookieName(r *http.Request, name string) string {
	if d.secureCookies(r) {
		return "__Host-" + name
	}
	return name
}

// newSecret returns 32 random bytes, base64url.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hashSecret(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// csrfToken derives a session's CSRF token from its cookie token: only
// the session's own browser (or the server) can know it, and it needs no
// storage.
func csrfToken(sessionToken string) string {
	m := hmac.New(sha256.New, []byte(sessionToken))
	m.Write([]byte("fota dashboard csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func equalTokens(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// signedIn requires a session in force whose user's role covers role;
// without one a page redirects to sign-in, and a live stream or a
// fetch gets 401.
func (d *Dashboard) signedIn(role string, h func(w http.ResponseWriter, r *http.Request, u *viewer)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := d.session(r)
		if err != nil {
			if fota.ErrorCode(err) != fota.EUNAUTHORIZED {
				d.errorPage(w, r, nil, err)
				return
			}
			if r.Method == http.MethodGet && !wantsJSON(r) && !strings.HasSuffix(r.URL.Path, "/live") {
				next := r.URL.RequestURI()
				http.Redirect(w, r, "/signin?next="+url.QueryEscape(next), http.StatusSeeOther)
				return
			}
			d.errorPage(w, r, nil, err)
			return
		}
		if !u.Can(role) {
			d.errorPage(w, r, u, fota.Errorf(fota.EFORBIDDEN, "your role, %s, cannot do this: it needs %s; ask an admin", u.Role, role))
			return
		}
		h(w, r, u)
	})
}

// session reads the request's session from the store (so a revocation
// holds at once on every replica) and its user (so a role change or
// removal does too).
func (d *Dashboard) session(r *http.Request) (*viewer, error) {
	c, err := r.Cookie(d.sessionCookie(r))
	if err != nil || c.Value == "" {
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "please sign in")
	}
	hash := hashSecret(c.Value)
	s, err := d.store.WebSessionByHash(r.Context(), hash)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "your session is not known; please sign in")
	}
	if err != nil {
		return nil, err
	}
	now := d.now()
	switch {
	case subtle.ConstantTimeCompare(s.Hash[:], hash[:]) != 1:
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "your session is not known; please sign in")
	case !s.Revoked.IsZero():
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "you were signed out; please sign in again")
	case !now.Before(s.Expires) || now.Sub(s.LastSeen) > d.cfg.IdleTimeout:
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "your session expired; please sign in again")
	}
	u, err := d.store.User(r.Context(), s.UserName)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		return nil, fota.Errorf(fota.EUNAUTHORIZED, "your user was removed")
	}
	if err != nil {
		return nil, err
	}
	d.touch(r, hash, now)
	return &viewer{Name: u.Name, Role: u.Role, CSRF: csrfToken(c.Value), hash: hash}, nil
}

// touch records that a session is in use, at most once a minute per
// session and replica.
func (d *Dashboard) touch(r *http.Request, hash [32]byte, now time.Time) {
	d.touchMu.Lock()
	last, ok := d.touched[hash]
	due := !ok || now.Sub(last) >= touchEvery
	if due {
		if len(d.touched) > 10000 {
			clear(d.touched) // sessions are few; this bounds a flood of them
		}
		d.touched[hash] = now
	}
	d.touchMu.Unlock()
	if due {
		if err := d.store.TouchWebSession(r.Context(), hash, now); err != nil {
			d.log.Warn("record session use", "error", err)
		}
	}
}

// checkCSRF refuses a POST without the session's CSRF token, or from a
// page of another origin.
func (d *Dashboard) checkCSRF(h func(w http.ResponseWriter, r *http.Request, u *viewer)) func(w http.ResponseWriter, r *http.Request, u *viewer) {
	return func(w http.ResponseWriter, r *http.Request, u *viewer) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
		if err := sameOrigin(r); err != nil {
			d.errorPage(w, r, u, err)
			return
		}
		if !equalTokens(r.PostFormValue("csrf"), u.CSRF) {
			d.errorPage(w, r, u, fota.Errorf(fota.EFORBIDDEN, "this form is out of date or did not come from this dashboard (no valid CSRF token); reload the page and try again"))
			return
		}
		h(w, r, u)
	}
}

// maxFormBody bounds every form but the bundle upload.
const maxFormBody = 64 << 10

// sameOrigin refuses a request whose Origin header names another site.
// Browsers send it on every POST; its absence (older clients, tools) is
// left to the CSRF token.
func sameOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host != r.Host {
		return fota.Errorf(fota.EFORBIDDEN, "request from another site refused")
	}
	return nil
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func (d *Dashboard) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, err := d.session(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	d.renderSignin(w, r, http.StatusOK, "", "")
}

func (d *Dashboard) renderSignin(w http.ResponseWriter, r *http.Request, status int, name, message string) {
	token, err := newSecret()
	if err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: d.cookieName(r, signinCookie), Value: token, Path: "/", MaxAge: 3600, HttpOnly: true,
		Secure: d.secureCookies(r), SameSite: http.SameSiteStrictMode})
	users, err := d.store.Users(r.Context())
	if err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	d.render(w, r, status, "signin", nil, map[string]any{"Title": "Sign in", "CSRF": token, "Name": name, "Error": message,
		"Next": safeNext(r.FormValue("next")), "NoUsers": len(users) == 0})
}

// safeNext keeps a post-sign-in redirect on this site: a path of it,
// never "//host", "/\host" (which browsers read as another host), a full
// URL, or a path that cleans to one (http.Redirect cleans "/../\x" to
// "/\x").
func safeNext(next string) string {
	const home = "/fleet"
	if next == "" || !fota.PlainText(next) || strings.ContainsRune(next, '\\') {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return home
	}
	// The decoded path is checked again: "%5C" and "%09" decode to what
	// browsers read as "//".
	clean := path.Clean(u.Path)
	if strings.HasPrefix(clean, "//") || strings.ContainsRune(clean, '\\') || !fota.PlainText(clean) {
		return home
	}
	out := (&url.URL{Path: clean, RawQuery: u.RawQuery}).String()
	if !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") || strings.ContainsRune(out, '\\') {
		return home
	}
	return out
}

// signin checks a name and password and starts a session.
func (d *Dashboard) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := sameOrigin(r); err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	c, err := r.Cookie(d.cookieName(r, signinCookie))
	if err != nil || !equalTokens(r.PostFormValue("csrf"), c.Value) {
		d.renderSignin(w, r, http.StatusForbidden, "", "The sign-in form was out of date; please try again.")
		return
	}
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	addr := d.clientAddress(r)
	ticket, wait := d.limiter.begin(name, addr)
	if wait > 0 {
		d.log.Warn("dashboard sign-in refused: too many failures", "client", addr, "wait", wait.Round(time.Second))
		d.renderSignin(w, r, http.StatusTooManyRequests, shortName(name),
			fmt.Sprintf("Too many failed sign-ins; try again in %s.", wait.Round(time.Second)))
		return
	}
	hash, known, ok, err := d.checkPassword(r, name, password)
	d.limiter.end(ticket, !ok)
	if r.Context().Err() != nil {
		return // the browser gave up waiting; nobody reads an answer
	}
	if err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	if !ok {
		// A name that is no user's may be a password typed in the wrong
		// field: only a user's name is logged.
		logName := "(no such user)"
		if known {
			logName = name
		}
		d.log.Warn("dashboard sign-in failed", "user", logName, "client", addr)
		d.renderSignin(w, r, http.StatusUnauthorized, shortName(name), "Wrong name or password.")
		return
	}
	token, err := newSecret()
	if err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	now := d.now()
	s := &fota.WebSession{Hash: hashSecret(token), UserName: name, Created: now, Expires: now.Add(d.cfg.SessionLife), LastSeen: now,
		Address: addr, Agent: shortAgent(r.UserAgent()), PasswordHash: hash}
	err = d.store.CreateWebSession(fota.WithActor(r.Context(), "user:"+name), s)
	if fota.ErrorCode(err) == fota.ECONFLICT {
		d.renderSignin(w, r, http.StatusConflict, name, "Your password was changed while you signed in; sign in with the new one.")
		return
	}
	if err != nil {
		d.errorPage(w, r, nil, err)
		return
	}
	d.log.Info("dashboard sign-in", "user", name, "client", addr)
	http.SetCookie(w, &http.Cookie{Name: d.sessionCookie(r), Value: token, Path: "/", MaxAge: int(d.cfg.SessionLife.Seconds()),
		HttpOnly: true, Secure: d.secureCookies(r), SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: d.cookieName(r, signinCookie), Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.secureCookies(r),
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// checkPassword verifies name's password; an unknown name does the same
// work (DummyVerify), so the answer takes as long either way. It returns
// the hash it verified, which the new session must still find the user's,
// and whether name is a user's. At most two checks run at
// once: each takes ~19 MiB for a moment.
func (d *Dashboard) checkPassword(r *http.Request, name, password string) (hash string, known, ok bool, err error) {
	if len(password) > maxPassword || !fota.ValidTokenName(name) {
		return "", false, false, nil
	}
	select {
	case d.hashing <- struct{}{}:
		defer func() { <-d.hashing }()
	case <-r.Context().Done():
		return "", false, false, r.Context().Err()
	}
	u, err := d.store.User(r.Context(), name)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		d.cfg.DummyVerify(password)
		return "", false, false, nil
	}
	if err != nil {
		return "", false, false, err
	}
	ok, err = d.cfg.VerifyPassword(u.PasswordHash, password)
	if err != nil {
		return "", true, false, fmt.Errorf("check password of %s: %w", name, err)
	}
	return u.PasswordHash, true, ok, nil
}

// shortName is what the sign-in form shows again of a name typed: at
// most a user name's length.
func shortName(name string) string {
	if len(name) > 64 || !fota.PlainText(name) {
		return ""
	}
	return name
}

func shortAgent(a string) string {
	if !fota.PlainText(a) {
		return ""
	}
	if len(a) > 120 {
		return a[:120]
	}
	return a
}

func (d *Dashboard) signout(w http.ResponseWriter, r *http.Request, u *viewer) {
	if err := d.store.RevokeWebSession(u.ctxFor(r), u.hash); err != nil && fota.ErrorCode(err) != fota.ENOTFOUND {
		d.errorPage(w, r, u, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: d.sessionCookie(r), Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.secureCookies(r),
		SameSite: http.SameSiteStrictMode})
	d.redirectWith(w, r, "/signin", "Signed out.")
}

func (d *Dashboard) signoutEverywhere(w http.ResponseWriter, r *http.Request, u *viewer) {
	n, err := d.store.RevokeUserSessions(u.ctxFor(r), u.Name)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	d.log.Info("dashboard sessions revoked", "user", u.Name, "sessions", n)
	http.SetCookie(w, &http.Cookie{Name: d.sessionCookie(r), Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.secureCookies(r),
		SameSite: http.SameSiteStrictMode})
	d.redirectWith(w, r, "/signin", fmt.Sprintf("Signed out of %s.", plural(n, "session")))
}

func (d *Dashboard) accountPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	d.renderAccount(w, r, u, http.StatusOK, "")
}

func (d *Dashboard) renderAccount(w http.ResponseWriter, r *http.Request, u *viewer, status int, formError string) {
	sessions, err := d.store.WebSessions(r.Context(), u.Name, d.now())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	d.render(w, r, status, "account", u, map[string]any{"Title": "Your account", "Sessions": sessions, "Current": u.hash,
		"FormError": formError})
}

// changePassword sets the user's own password: the current one first
// (counted by the sign-in limits, as a guess would be), the new one twice.
// Every session of the user ends, this one too: they sign in again.
func (d *Dashboard) changePassword(w http.ResponseWriter, r *http.Request, u *viewer) {
	current, next, again := r.PostFormValue("current"), r.PostFormValue("new"), r.PostFormValue("again")
	if next != again {
		d.renderAccount(w, r, u, http.StatusBadRequest, "The new password and its repetition differ.")
		return
	}
	if err := d.cfg.CheckPassword(next); err != nil {
		d.renderAccount(w, r, u, http.StatusBadRequest, err.Error()) // CheckStrength's messages never quote the password
		return
	}
	addr := d.clientAddress(r)
	ticket, wait := d.limiter.begin(u.Name, addr)
	if wait > 0 {
		d.renderAccount(w, r, u, http.StatusTooManyRequests, fmt.Sprintf("Too many wrong passwords; try again in %s.", wait.Round(time.Second)))
		return
	}
	_, _, ok, err := d.checkPassword(r, u.Name, current)
	d.limiter.end(ticket, !ok)
	if r.Context().Err() != nil {
		return // the browser gave up waiting
	}
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	if !ok {
		d.log.Warn("dashboard password change: wrong current password", "user", u.Name, "client", addr)
		d.renderAccount(w, r, u, http.StatusUnauthorized, "Your current password is not that.")
		return
	}
	hash, err := d.cfg.HashPassword(next)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	if err := d.store.SetUserPassword(u.ctxFor(r), u.Name, hash); err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	d.log.Info("dashboard password changed", "user", u.Name, "client", addr)
	http.SetCookie(w, &http.Cookie{Name: d.sessionCookie(r), Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.secureCookies(r),
		SameSite: http.SameSiteStrictMode})
	d.redirectWith(w, r, "/signin", "Password changed; every session of yours ended. Sign in with the new password.")
}
