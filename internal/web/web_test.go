package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/testserver"
)

// env is a real server (SQLite, the admin API and the dashboard) with a
// user of each role.
type env struct {
	t   *testing.T
	srv *testserver.Server
}

const testPassword = "correct horse battery"

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, srv: testserver.New(t)}
	for _, u := range []struct{ name, role string }{{"ana", fota.RoleAdmin}, {"olu", fota.RoleOperator}, {"vic", fota.RoleViewer}} {
		e.addUser(u.name, u.role)
	}
	return e
}

func (e *env) addUser(name, role string) {
	e.t.Helper()
	hash, err := password.Hash(testPassword)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.srv.Store.CreateUser(context.Background(), &fota.User{Name: name, Role: role, PasswordHash: hash}); err != nil {
		e.t.Fatal(err)
	}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see each answer.
type browser struct {
	e      *env
	c      *http.Client
	origin string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, origin: e.srv.URL, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status int
	body   string
	header http.Header
}

func (b *browser) do(req *http.Request) page {
	b.e.t.Helper()
	if req.Method == http.MethodPost && b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, string(body), resp.Header}
}

func (b *browser) get(path string) page {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var hiddenCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := hiddenCSRF.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in the page (status %d):\n%s", p.status, excerpt(p.body))
	}
	return m[1]
}

func excerpt(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

// signIn signs in as name and returns the CSRF token of its session.
func (b *browser) signIn(name string) string {
	b.e.t.Helper()
	form := b.get("/signin")
	p := b.post("/signin", url.Values{"csrf": {csrfOf(b.e.t, form)}, "name": {name}, "password": {testPassword}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/fleet" {
		b.e.t.Fatalf("sign in as %s: %d %s\n%s", name, p.status, p.header.Get("Location"), excerpt(p.body))
	}
	return csrfOf(b.e.t, b.get("/account"))
}

func mustContain(t *testing.T, p page, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(p.body, w) {
			t.Fatalf("page (status %d) lacks %q:\n%s", p.status, w, excerpt(p.body))
		}
	}
}

func TestSignIn(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	p := b.get("/fleet")
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/signin?next=%2Ffleet" {
		t.Fatalf("signed out /fleet: %d %q, want a redirect to sign-in", p.status, p.header.Get("Location"))
	}
	form := b.get("/signin")
	mustContain(t, form, `<h1>Sign in to fota</h1>`, `autocomplete="current-password"`)
	token := csrfOf(t, form)

	p = b.post("/signin", url.Values{"csrf": {token}, "name": {"ana"}, "password": {"wrong password!"}})
	if p.status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", p.status)
	}
	mustContain(t, p, "Wrong name or password.")
	token = csrfOf(t, p) // each form has its own token
	p = b.post("/signin", url.Values{"csrf": {token}, "name": {"nobody"}, "password": {testPassword}})
	if p.status != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d, want 401", p.status)
	}
	mustContain(t, p, "Wrong name or password.") // the same words: names are not disclosed

	token = csrfOf(t, b.get("/signin"))
	p = b.post("/signin", url.Values{"csrf": {token}, "name": {"ana"}, "password": {testPassword}, "next": {"/events"}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/events" {
		t.Fatalf("sign in: %d %q", p.status, p.header.Get("Location"))
	}
	var cookie string
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "fota_session=") {
			cookie = c
		}
	}
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("session cookie %q lacks %s", cookie, attr)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("session cookie %q is Secure on plain HTTP: the browser would never send it back", cookie)
	}
	mustContain(t, b.get("/fleet"), "<h1>Fleet</h1>", "ana", "(admin)")

	evs, err := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventUserSignedIn})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Actor != "user:ana" {
		t.Fatalf("sign-in events: %+v, want one by user:ana", evs)
	}
	// An open redirect is refused: next stays on this site.
	b2 := e.browser()
	token = csrfOf(t, b2.get("/signin"))
	p = b2.post("/signin", url.Values{"csrf": {token}, "name": {"vic"}, "password": {testPassword}, "next": {"//evil.example/x"}})
	if p.header.Get("Location") != "/fleet" {
		t.Fatalf("next=//evil.example: redirected to %q", p.header.Get("Location"))
	}
}

func TestSignInFormNeedsItsToken(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/signin")
	p := b.post("/signin", url.Values{"csrf": {"forged"}, "name": {"ana"}, "password": {testPassword}})
	if p.status != http.StatusForbidden {
		t.Fatalf("sign-in with a forged token: %d, want 403", p.status)
	}
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "fota_session=") {
			t.Fatalf("a session was started: %s", c)
		}
	}
}

func TestSignInRateLimited(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for i := range 5 {
		token := csrfOf(t, b.get("/signin"))
		if p := b.post("/signin", url.Values{"csrf": {token}, "name": {"olu"}, "password": {fmt.Sprintf("guess number %d", i)}}); p.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, p.status)
		}
	}
	token := csrfOf(t, b.get("/signin"))
	p := b.post("/signin", url.Values{"csrf": {token}, "name": {"olu"}, "password": {testPassword}})
	if p.status != http.StatusTooManyRequests {
		t.Fatalf("6th attempt, right password: %d, want 429", p.status)
	}
	mustContain(t, p, "Too many failed sign-ins; try again in")
}

func TestCSRFRefused(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	b := e.browser()
	token := b.signIn("olu")
	p := b.post("/devices/dev-1/labels", url.Values{"labels": {"site=berlin"}})
	if p.status != http.StatusForbidden || !strings.Contains(p.body, "CSRF") {
		t.Fatalf("labels without a CSRF token: %d\n%s", p.status, excerpt(p.body))
	}
	p = b.post("/devices/dev-1/labels", url.Values{"labels": {"site=berlin"}, "csrf": {"not-the-token"}})
	if p.status != http.StatusForbidden {
		t.Fatalf("labels with a wrong CSRF token: %d", p.status)
	}
	// Another user's token does not do either.
	other := e.browser()
	otherToken := other.signIn("ana")
	if p = b.post("/devices/dev-1/labels", url.Values{"labels": {"site=berlin"}, "csrf": {otherToken}}); p.status != http.StatusForbidden {
		t.Fatalf("labels with another session's token: %d", p.status)
	}
	// A right token from another site's page is refused by its Origin.
	b.origin = "https://evil.example"
	if p = b.post("/devices/dev-1/labels", url.Values{"labels": {"site=berlin"}, "csrf": {token}}); p.status != http.StatusForbidden {
		t.Fatalf("labels from another origin: %d", p.status)
	}
	d, err := e.srv.Store.Device(context.Background(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Labels) != 0 {
		t.Fatalf("labels changed by refused requests: %v", d.Labels)
	}
	b.origin = e.srv.URL
	if p = b.post("/devices/dev-1/labels", url.Values{"labels": {"site=berlin\nring=canary"}, "csrf": {token}}); p.status != http.StatusSeeOther {
		t.Fatalf("labels with the token: %d\n%s", p.status, excerpt(p.body))
	}
	d, _ = e.srv.Store.Device(context.Background(), "dev-1")
	if fota.FormatLabels(d.Labels) != "ring=canary,site=berlin" {
		t.Fatalf("labels %v", d.Labels)
	}
	evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventLabels})
	if len(evs) != 1 || evs[0].Actor != "user:olu" {
		t.Fatalf("labels events %+v, want one by user:olu", evs)
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	bundle := e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 8<<10, 0), 0, 0)

	viewer := e.browser()
	vt := viewer.signIn("vic")
	p := viewer.get("/rollouts")
	if strings.Contains(p.body, "New rollout") {
		t.Fatal("a viewer is shown the New rollout link")
	}
	if p = viewer.get("/rollouts/new"); p.status != http.StatusForbidden {
		t.Fatalf("viewer opens the rollout form: %d", p.status)
	}
	if p = viewer.post("/rollouts", url.Values{"csrf": {vt}, "release": {"esp32/1.0.4"}}); p.status != http.StatusForbidden {
		t.Fatalf("viewer creates a rollout: %d", p.status)
	}
	mustContain(t, p, "your role, viewer, cannot do this")
	if p = viewer.upload(vt, "app.fota", bundle); p.status != http.StatusForbidden {
		t.Fatalf("viewer uploads: %d", p.status)
	}
	if p = viewer.get("/users"); p.status != http.StatusForbidden {
		t.Fatalf("viewer lists users: %d", p.status)
	}
	operator := e.browser()
	ot := operator.signIn("olu")
	if p = operator.upload(ot, "app.fota", bundle); p.status != http.StatusForbidden {
		t.Fatalf("operator uploads: %d", p.status)
	}
	rels, _ := e.srv.Store.Releases(context.Background(), "")
	if len(rels) != 0 {
		t.Fatalf("refused uploads stored %d releases", len(rels))
	}
}

// upload posts a bundle as the releases page's form does without script.
func (b *browser) upload(token, name string, content []byte) page {
	b.e.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if token != "" {
		mw.WriteField("csrf", token)
	}
	fw, _ := mw.CreateFormFile("bundle", name)
	fw.Write(content)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+"/releases", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}

func TestUploadAndWithdraw(t *testing.T) {
	e := newEnv(t)
	admin := e.browser()
	token := admin.signIn("ana")
	good := e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 20<<10, 0), 0, 0)

	if p := admin.upload("", "app.fota", good); p.status != http.StatusSeeOther {
		t.Fatalf("upload without CSRF: %d", p.status)
	}
	mustContain(t, admin.get("/releases"), "Not published", "CSRF")

	bad := bytes.Clone(good)
	bad[len(bad)-100] ^= 1
	admin.upload(token, "app.fota", bad)
	p := admin.get("/releases")
	mustContain(t, p, "Not published: bundle refused", "No release yet.")

	if p = admin.upload(token, "app-1.0.4.fota", good); p.status != http.StatusSeeOther || p.header.Get("Location") != "/releases" {
		t.Fatalf("upload: %d %q", p.status, p.header.Get("Location"))
	}
	p = admin.get("/releases")
	mustContain(t, p, "Release 1.0.4 for esp32 published and verified", "<td>1.0.4", "published")
	if evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventPublished}); len(evs) != 1 || evs[0].Actor != "user:ana" {
		t.Fatalf("publish events %+v, want one by user:ana", evs)
	}

	// The script's answer is JSON.
	again := e.srv.Bundle("1.0.5", e.srv.Sample("1.0.5", firmware.Healthy, 4<<10, 0), 0, 0)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("csrf", token)
	fw, _ := mw.CreateFormFile("bundle", "x.fota")
	fw.Write(again)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/releases", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Accept", "application/json")
	p = admin.do(req)
	var answer struct {
		OK       bool
		Message  string
		Location string
	}
	if err := json.Unmarshal([]byte(p.body), &answer); err != nil || !answer.OK || answer.Location != "/releases" {
		t.Fatalf("JSON upload answer %d %s", p.status, p.body)
	}

	rels, _ := e.srv.Store.Releases(context.Background(), "")
	if len(rels) != 2 {
		t.Fatalf("%d releases", len(rels))
	}
	p = admin.post(fmt.Sprintf("/releases/%d/withdraw", rels[0].ID), url.Values{"csrf": {token}, "reason": {"bad battery readings"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("withdraw: %d", p.status)
	}
	mustContain(t, admin.get("/releases"), "Release 1.0.4 for esp32 withdrawn", "withdrawn")
	evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventWithdrawn})
	if len(evs) != 1 || evs[0].Actor != "user:ana" {
		t.Fatalf("withdraw events %+v", evs)
	}
}

func TestRolloutFromTheDashboard(t *testing.T) {
	e := newEnv(t)
	for i := range 10 {
		e.srv.AddDevice(fmt.Sprintf("dev-%02d", i), "1.0.3")
	}
	admin := e.browser()
	at := admin.signIn("ana")
	admin.upload(at, "a.fota", e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 8<<10, 0), 0, 0))

	op := e.browser()
	ot := op.signIn("olu")
	// The count, as the form's script asks for it and without script.
	p := op.get("/rollouts/count?release=esp32%2F1.0.4&selector=")
	var count struct {
		Count int
		Text  string
	}
	if err := json.Unmarshal([]byte(p.body), &count); err != nil || count.Count != 10 {
		t.Fatalf("count: %s", p.body)
	}
	mustContain(t, op.get("/rollouts/count?release=esp32%2F1.0.4&selector=site%3D%3D"), "error")
	mustContain(t, op.get("/rollouts/new?release=esp32%2F1.0.4&selector=&waves=2,100%25"), "10 devices match")

	p = op.post("/rollouts", url.Values{"csrf": {ot}, "release": {"esp32/1.0.4"}, "waves": {"bogus"}})
	if p.status != http.StatusBadRequest {
		t.Fatalf("bad waves: %d", p.status)
	}
	mustContain(t, p, `class="error"`, `value="bogus"`) // the form comes back with the error and the values
	p = op.post("/rollouts", url.Values{"csrf": {ot}, "release": {"esp32/1.0.4"}, "waves": {"2,100%"}, "soak": {"0"}, "max_failures": {"1"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", p.status, excerpt(p.body))
	}
	loc := p.header.Get("Location")
	p = op.get(loc)
	mustContain(t, p, "Rollout 1 of 1.0.4 created: 10 devices in 2 waves.", "wave 1 of 2 open", "0%</strong> have an outcome")
	for _, step := range []struct{ action, want string }{{"pause", "paused"}, {"resume", "resumed"}, {"abort", "aborted"}} {
		p = op.post(loc+"/"+step.action, url.Values{"csrf": {ot}, "reason": {"checking"}})
		if p.status != http.StatusSeeOther {
			t.Fatalf("%s: %d", step.action, p.status)
		}
		mustContain(t, op.get(loc), "Rollout 1 "+step.want)
	}
	evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{RolloutID: 1})
	actors := map[string]string{}
	for _, ev := range evs {
		actors[ev.Kind] = ev.Actor
	}
	for _, k := range []string{fota.EventRolloutCreated, fota.EventRolloutPaused, fota.EventRolloutResumed, fota.EventRolloutAborted} {
		if actors[k] != "user:olu" {
			t.Errorf("%s event by %q, want user:olu", k, actors[k])
		}
	}
}

func TestPin(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	e.srv.Publish(e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 4<<10, 0), 0, 0))
	op := e.browser()
	ot := op.signIn("olu")
	mustContain(t, op.get("/devices/dev-1"), `<option>1.0.4</option>`)
	if p := op.post("/devices/dev-1/pin", url.Values{"csrf": {ot}, "version": {"1.0.4"}}); p.status != http.StatusSeeOther {
		t.Fatalf("pin: %d %s", p.status, excerpt(p.body))
	}
	mustContain(t, op.get("/devices/dev-1"), "Pinned to 1.0.4")
	if evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventAssigned}); len(evs) != 1 || evs[0].Actor != "user:olu" {
		t.Fatalf("pin events %+v, want one by user:olu", evs)
	}
	// Saving the form unchanged keeps the pin.
	mustContain(t, op.get("/devices/dev-1"), `<option selected>1.0.4</option>`)
	p := op.post("/devices/dev-1/pin", url.Values{"csrf": {ot}, "version": {"0.0.1"}})
	if p.status != http.StatusBadRequest {
		t.Fatalf("pin to an unknown release: %d", p.status)
	}
	mustContain(t, p, "no release 0.0.1 for esp32")
	op.post("/devices/dev-1/pin", url.Values{"csrf": {ot}, "version": {""}})
	d, _ := e.srv.Store.Device(context.Background(), "dev-1")
	if d.PinnedVersion != "" {
		t.Fatalf("still pinned to %s", d.PinnedVersion)
	}
}

func TestSessionsRevocable(t *testing.T) {
	e := newEnv(t)
	b1, b2 := e.browser(), e.browser()
	b1.signIn("olu")
	t2 := b2.signIn("olu")
	mustContain(t, b1.get("/account"), "Sign out everywhere")
	if p := b2.post("/account/signout-everywhere", url.Values{"csrf": {t2}}); p.status != http.StatusSeeOther {
		t.Fatalf("sign out everywhere: %d", p.status)
	}
	for i, b := range []*browser{b1, b2} {
		if p := b.get("/fleet"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/signin") {
			t.Fatalf("browser %d after sign-out everywhere: %d", i+1, p.status)
		}
	}
	// An admin signs a user out; removing one ends their sessions too.
	b1.signIn("vic")
	admin := e.browser()
	at := admin.signIn("ana")
	if p := admin.post("/users/vic/signout", url.Values{"csrf": {at}}); p.status != http.StatusSeeOther {
		t.Fatalf("admin signs vic out: %d", p.status)
	}
	if p := b1.get("/fleet"); p.status != http.StatusSeeOther {
		t.Fatalf("vic after being signed out: %d", p.status)
	}
	b1.signIn("vic")
	admin.post("/users/vic/remove", url.Values{"csrf": {at}}) // unconfirmed: kept
	if _, err := e.srv.Store.User(context.Background(), "vic"); err != nil {
		t.Fatalf("vic removed without the confirmation: %v", err)
	}
	admin.post("/users/vic/remove", url.Values{"csrf": {at}, "confirm": {"on"}})
	if p := b1.get("/fleet"); p.status != http.StatusSeeOther {
		t.Fatalf("vic after removal: %d", p.status)
	}
	if p := admin.post("/users/ana/remove", url.Values{"csrf": {at}}); p.status != http.StatusSeeOther {
		t.Fatalf("self-removal: %d", p.status)
	}
	if _, err := e.srv.Store.User(context.Background(), "ana"); err != nil {
		t.Fatalf("an admin removed themself: %v", err)
	}
	// Adding a user checks the password's strength and says why.
	p := admin.post("/users", url.Values{"csrf": {at}, "name": {"kim"}, "role": {"operator"}, "password": {"short"}, "again": {"short"}})
	mustContain(t, p, "use at least 10")
	p = admin.post("/users", url.Values{"csrf": {at}, "name": {"kim"}, "role": {"operator"}, "password": {"a long enough one"}, "again": {"a long enough typo"}})
	mustContain(t, p, "differ")
	p = admin.post("/users", url.Values{"csrf": {at}, "name": {"kim"}, "role": {"operator"}, "password": {"a long enough one"}, "again": {"a long enough one"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("add user: %d %s", p.status, excerpt(p.body))
	}
	if u, err := e.srv.Store.User(context.Background(), "kim"); err != nil || u.Role != fota.RoleOperator {
		t.Fatalf("kim: %+v %v", u, err)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for _, path := range []string{"/signin", "/static/style.css"} {
		p := b.get(path)
		csp := p.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if p.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
	if cc := b.get("/signin").header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("sign-in page Cache-Control %q", cc)
	}
	if p := b.get("/static/"); p.status != http.StatusNotFound {
		t.Errorf("/static/ lists its files: %d", p.status)
	}
	if p := b.get("/v1/<img>"); p.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("a JSON error echoing its path may be sniffed as HTML")
	}
}

// TestEscaping puts markup where operators' and devices' text goes.
func TestEscaping(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	ctx := fota.WithActor(context.Background(), "token:test")
	if _, err := e.srv.Store.SetDeviceLabels(ctx, "dev-1", map[string]string{"note": "x"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Store.AddEvent(ctx, &fota.Event{Time: time.Now(), Kind: "labels", DeviceID: "dev-1", Detail: `<script>alert(1)</script>`}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn("vic")
	for _, path := range []string{"/devices/dev-1", "/events"} {
		p := b.get(path)
		if strings.Contains(p.body, "<script>alert") {
			t.Fatalf("%s renders markup from an event", path)
		}
		mustContain(t, p, "&lt;script&gt;alert(1)&lt;/script&gt;")
	}
}

func TestEventsFilterAndLive(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	e.srv.AddDevice("dev-2", "1.0.3")
	b := e.browser()
	b.signIn("vic")
	p := b.get("/events?kind=device-added&device=dev-2")
	mustContain(t, p, `href="/devices/dev-2"`)
	if strings.Contains(p.body, `href="/devices/dev-1"`) {
		t.Fatal("the device filter let dev-1's events through")
	}
	live := regexp.MustCompile(`data-live-events="([^"]+)"`).FindStringSubmatch(p.body)
	if live == nil {
		t.Fatal("no live stream on the newest events page")
	}
	streamURL := strings.ReplaceAll(live[1], "&amp;", "&")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+streamURL, nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("live stream Content-Type %q", ct)
	}
	e.srv.AddDevice("dev-3", "1.0.3") // not dev-2: filtered out
	e.srv.Admin.RemoveDevice(context.Background(), "dev-1")
	if _, err := e.srv.Store.SetDeviceLabels(context.Background(), "dev-2", map[string]string{"a": "b"}, nil); err != nil {
		t.Fatal(err)
	}
	// Only the kind and device filtered for: nothing of dev-3, dev-1 or
	// the labels; then a device-added of dev-2 is impossible (it exists),
	// so filter on device alone in a second stream below.
	frames := readFrames(t, resp.Body, 1, 3*time.Second)
	if len(frames) != 0 {
		t.Fatalf("filtered stream sent %q", frames)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/events/live?device=dev-2", nil)
	resp2, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	time.Sleep(1500 * time.Millisecond) // the poller has seen where the log is
	if _, err := e.srv.Store.SetDeviceLabels(context.Background(), "dev-2", map[string]string{"c": "d"}, nil); err != nil {
		t.Fatal(err)
	}
	frames = readFrames(t, resp2.Body, 1, 10*time.Second)
	if len(frames) != 1 || !strings.Contains(frames[0], "event: rows") || !strings.Contains(frames[0], "dev-2") {
		t.Fatalf("device stream sent %q", frames)
	}
}

// readFrames reads up to n Server-Sent Event frames (comments left out)
// within d, from a body read by no one else.
func readFrames(t *testing.T, body io.Reader, n int, d time.Duration) []string {
	t.Helper()
	return takeFrames(sseFrames(body), n, d)
}

// sseFrames reads a stream's frames (comments left out) as they come.
func sseFrames(body io.Reader) <-chan string {
	out := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var frame strings.Builder
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if frame.Len() > 0 {
					out <- frame.String()
				}
				frame.Reset()
				continue
			}
			if strings.HasPrefix(line, ":") || strings.HasPrefix(line, "retry:") {
				continue
			}
			frame.WriteString(line + "\n")
		}
		close(out)
	}()
	return out
}

// takeFrames takes up to n frames within d.
func takeFrames(frames <-chan string, n int, d time.Duration) []string {
	var got []string
	timeout := time.After(d)
	for len(got) < n {
		select {
		case f, ok := <-frames:
			if !ok {
				return got
			}
			got = append(got, f)
		case <-timeout:
			return got
		}
	}
	return got
}

func TestTokensAndWebhooks(t *testing.T) {
	e := newEnv(t)
	op := e.browser()
	op.signIn("olu")
	for _, path := range []string{"/tokens", "/webhooks"} {
		if p := op.get(path); p.status != http.StatusForbidden {
			t.Fatalf("operator opens %s: %d", path, p.status)
		}
	}
	admin := e.browser()
	at := admin.signIn("ana")
	p := admin.post("/tokens", url.Values{"csrf": {at}, "name": {"ci"}, "scope": {"read"}, "expires": {"30d"}})
	if p.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", p.status, excerpt(p.body))
	}
	m := regexp.MustCompile(`id="new-token" readonly value="(fota_[^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("the new token is not shown:\n%s", excerpt(p.body))
	}
	if strings.Contains(admin.get("/tokens").body, m[1]) {
		t.Fatal("the token's text is shown again")
	}
	useToken := func() int {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/admin/releases", nil)
		req.Header.Set("Authorization", "Bearer "+m[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := useToken(); code != http.StatusOK {
		t.Fatalf("the new read token: %d", code)
	}
	admin.post("/tokens/ci/revoke", url.Values{"csrf": {at}})
	if code := useToken(); code != http.StatusUnauthorized {
		t.Fatalf("the revoked token: %d", code)
	}
	evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventTokenRevoked})
	if len(evs) != 1 || evs[0].Actor != "user:ana" {
		t.Fatalf("token events %+v", evs)
	}

	p = admin.post("/webhooks", url.Values{"csrf": {at}, "url": {"https://ops.example.com/fota"}, "events": {"rollout.*, device.rolled_back"}})
	if p.status != http.StatusCreated || !regexp.MustCompile(`id="new-secret" readonly value="[0-9a-f]{64}"`).MatchString(p.body) {
		t.Fatalf("create webhook: %d %s", p.status, excerpt(p.body))
	}
	p = admin.post("/webhooks", url.Values{"csrf": {at}, "url": {"https://ops.example.com/x"}, "events": {"rollout.typo"}})
	if p.status != http.StatusBadRequest {
		t.Fatalf("webhook with a misspelt event: %d", p.status)
	}
	mustContain(t, p, "matches no event")
	hooks, _ := e.srv.Store.Webhooks(context.Background())
	if len(hooks) != 1 || strings.Join(hooks[0].Events, ",") != "rollout.*,device.rolled_back" {
		t.Fatalf("webhooks %+v", hooks)
	}
	admin.post(fmt.Sprintf("/webhooks/%d/remove", hooks[0].ID), url.Values{"csrf": {at}})
	if hooks, _ = e.srv.Store.Webhooks(context.Background()); len(hooks) != 0 {
		t.Fatalf("webhook not removed: %+v", hooks)
	}
}

// TestRevokedStreamStops: a live page whose session is revoked is sent
// nothing more, and is told it was signed out.
func TestRevokedStreamStops(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn("vic")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/events/live", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	stream := sseFrames(resp.Body)
	takeFrames(stream, 100, 4*time.Second) // the sign-in's rows; past the stream's session re-check interval
	if _, err := e.srv.Store.RevokeUserSessions(context.Background(), "vic"); err != nil {
		t.Fatal(err)
	}
	e.srv.AddDevice("dev-after-revoke", "1.0.3")
	frames := takeFrames(stream, 1, 10*time.Second)
	if len(frames) != 1 || !strings.HasPrefix(frames[0], "event: signedout") || strings.Contains(frames[0], "dev-after-revoke") {
		t.Fatalf("after revocation the stream sent %q", frames)
	}
}

func TestChangeOwnPassword(t *testing.T) {
	e := newEnv(t)
	b, other := e.browser(), e.browser()
	token := b.signIn("vic")
	other.signIn("vic")
	p := b.post("/account/password", url.Values{"csrf": {token}, "current": {"not my password"}, "new": {"a brand new passphrase"}, "again": {"a brand new passphrase"}})
	if p.status != http.StatusUnauthorized {
		t.Fatalf("wrong current password: %d", p.status)
	}
	p = b.post("/account/password", url.Values{"csrf": {token}, "current": {testPassword}, "new": {"a brand new passphrase"}, "again": {"another one"}})
	mustContain(t, p, "differ")
	p = b.post("/account/password", url.Values{"csrf": {token}, "current": {testPassword}, "new": {"a brand new passphrase"}, "again": {"a brand new passphrase"}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/signin" {
		t.Fatalf("change password: %d %s", p.status, excerpt(p.body))
	}
	for i, br := range []*browser{b, other} {
		if p := br.get("/fleet"); p.status != http.StatusSeeOther {
			t.Fatalf("session %d after the change: %d", i+1, p.status)
		}
	}
	u, _ := e.srv.Store.User(context.Background(), "vic")
	if ok, _ := password.Verify(u.PasswordHash, "a brand new passphrase"); !ok {
		t.Fatal("the new password does not verify")
	}
	evs, _ := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventUserPassword})
	if len(evs) != 1 || evs[0].Actor != "user:vic" {
		t.Fatalf("password events %+v", evs)
	}
}
