// Package web is the dashboard of fota serve: server-rendered pages over
// the same store and update service the admin API uses, so a change made
// here follows the same rules and records the same events, naming the
// user ("user:ana") as the admin API names its token.
//
// Threat model. The dashboard is reached by browsers, so beyond the admin
// API's concerns it defends against:
//   - stolen sessions: the session cookie is random (256 bits), HttpOnly,
//     SameSite=Strict, Secure and __Host- under TLS; only its SHA-256 is
//     stored, it expires (absolute and idle) and is revocable, read from
//     the store on every request, so a revocation holds on every replica
//     at once, and live streams re-check it before sending;
//   - cross-site requests: every state change is a POST carrying a CSRF
//     token derived from the session (HMAC of the session token), checked
//     in constant time, and an Origin header, when sent, must be the
//     server's own; the sign-in form uses a double-submit cookie;
//   - password guessing: sign-in attempts are limited per user name, per
//     client address and per network, counted from the moment they are
//     taken up (limiter.go), and an unknown name costs the same time as a
//     known one (DummyVerify);
//   - redirects off-site: a sign-in's next= is kept to a path of this
//     site, checked after decoding and cleaning;
//   - script injection: html/template escapes everything, the Content
//     Security Policy allows only the server's own scripts and styles (no
//     inline script, no third-party origin), and no page is framed;
//   - privilege: viewers read; operators also run rollouts, label and pin
//     devices; admins also publish and withdraw releases and manage users,
//     API tokens and webhooks.
//     The role is checked on the server for every request, whatever the
//     page showed.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Store is what the dashboard reads and changes.
type Store interface {
	fota.Store
	fota.UserStore
}

// Config configures a Dashboard.
type Config struct {
	Store   Store
	Updates *update.Service
	// Publish verifies and stores an uploaded bundle, as the admin API's
	// publish does (signature by a trusted key, then the ciphertext).
	Publish func(ctx context.Context, bundle io.Reader) (*fota.Release, error)
	// MaxBundle is the largest upload Publish takes.
	MaxBundle int64
	// VerifyPassword checks a password against a stored hash; DummyVerify
	// does the same work for a name that is no user's, so that a sign-in
	// takes as long either way.
	VerifyPassword func(hash, password string) (bool, error)
	DummyVerify    func(password string)
	// HashPassword hashes a new user's password, after CheckPassword
	// refused none too weak.
	HashPassword  func(password string) (string, error)
	CheckPassword func(password string) error
	// NewToken makes an admin API token: its text, shown once, and the
	// hash the store keeps.
	NewToken func() (string, [32]byte, error)
	// StatusOf maps an error to its HTTP status: the server's one table.
	StatusOf func(error) int
	// ClientIPHeader, behind a proxy, names the header it puts the
	// client's address in (X-Real-IP, X-Forwarded-For: the last value is
	// taken): sign-in limits and logs then see clients, not the proxy.
	// Leave it empty without a proxy, or clients could choose an address.
	ClientIPHeader string
	Logger         *slog.Logger
	Now            func() time.Time
	// SecureCookies marks cookies Secure even on plain HTTP requests: for
	// a server behind a proxy that terminates TLS. Requests over TLS get
	// Secure cookies anyway.
	SecureCookies bool
	// OnlineWithin is how recently a device must have been seen to count
	// as online (DefaultOnlineWithin when zero).
	OnlineWithin time.Duration
	// SessionLife and IdleTimeout bound a signed-in session
	// (DefaultSessionLife, DefaultIdleTimeout when zero).
	SessionLife, IdleTimeout time.Duration
	// LivePoll is how often live pages look for new events
	// (DefaultLivePoll when zero).
	LivePoll time.Duration
}

// Defaults.
const (
	// DefaultOnlineWithin: two of the devices' 6-hour check intervals and
	// an hour of slack; a device seen within it is online.
	DefaultOnlineWithin = 13 * time.Hour
	DefaultSessionLife  = 12 * time.Hour
	DefaultIdleTimeout  = 2 * time.Hour
	DefaultLivePoll     = time.Second
)

// Dashboard serves the web UI.
type Dashboard struct {
	cfg       Config
	store     Store
	updates   *update.Service
	log       *slog.Logger
	now       func() time.Time
	pages     map[string]*template.Template
	fragments *template.Template
	static    http.Handler
	limiter   *signinLimiter
	live      *hub
	// touched remembers when each session's LastSeen was last written, so
	// a busy page does not write on every request.
	touchMu sync.Mutex
	touched map[[32]byte]time.Time
	// hashing bounds concurrent password checks: each takes ~19 MiB.
	hashing chan struct{}
	// headerWarning says once that ClientIPHeader held no address.
	headerWarning sync.Once
}

// New returns a Dashboard. Call Close when the server stops.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Store == nil || cfg.Updates == nil || cfg.Publish == nil || cfg.VerifyPassword == nil || cfg.DummyVerify == nil ||
		cfg.HashPassword == nil || cfg.CheckPassword == nil || cfg.NewToken == nil ||
		cfg.StatusOf == nil {
		return nil, errors.New("web: store, update service, publish and the password functions are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnlineWithin <= 0 {
		cfg.OnlineWithin = DefaultOnlineWithin
	}
	if cfg.SessionLife <= 0 {
		cfg.SessionLife = DefaultSessionLife
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.LivePoll <= 0 {
		cfg.LivePoll = DefaultLivePoll
	}
	d := &Dashboard{cfg: cfg, store: cfg.Store, updates: cfg.Updates, log: cfg.Logger, now: cfg.Now,
		limiter: newSigninLimiter(cfg.Now), touched: map[[32]byte]time.Time{}, hashing: make(chan struct{}, 2)}
	if err := d.parseTemplates(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("web: static files: %w", err)
	}
	files := http.FileServerFS(static)
	d.static = http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no listings: the files are named by the pages
			return
		}
		files.ServeHTTP(w, r)
	}))
	d.live = newHub(d, cfg.LivePoll)
	return d, nil
}

// Close stops the live-update poller and ends open live streams.
func (d *Dashboard) Close() { d.live.close() }

// Route is one of the dashboard's handlers and its ServeMux pattern.
type Route struct {
	Pattern string
	Handler http.Handler
}

// Routes lists the dashboard's routes, for the server to register on its
// mux beside the APIs (none of their paths overlap).
func (d *Dashboard) Routes() []Route {
	page := func(role string, h func(w http.ResponseWriter, r *http.Request, u *viewer)) http.Handler {
		return d.secure(d.signedIn(role, h))
	}
	action := func(role string, h func(w http.ResponseWriter, r *http.Request, u *viewer)) http.Handler {
		return d.secure(d.signedIn(role, d.checkCSRF(h)))
	}
	return []Route{
		{"GET /{$}", d.secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/fleet", http.StatusSeeOther)
		}))},
		{"GET /static/", d.secure(d.staticFiles())},
		{"GET /signin", d.secure(http.HandlerFunc(d.signinPage))},
		{"POST /signin", d.secure(http.HandlerFunc(d.signin))},
		{"POST /signout", action(fota.RoleViewer, d.signout)},
		{"GET /account", page(fota.RoleViewer, d.accountPage)},
		{"POST /account/signout-everywhere", action(fota.RoleViewer, d.signoutEverywhere)},
		{"POST /account/password", action(fota.RoleViewer, d.changePassword)},
		{"GET /fleet", page(fota.RoleViewer, d.fleetPage)},
		{"GET /devices", page(fota.RoleViewer, d.devicesPage)},
		{"GET /devices/{id}", page(fota.RoleViewer, d.devicePage)},
		{"POST /devices/{id}/labels", action(fota.RoleOperator, d.setLabels)},
		{"POST /devices/{id}/pin", action(fota.RoleOperator, d.pinDevice)},
		{"GET /releases", page(fota.RoleViewer, d.releasesPage)},
		{"POST /releases", d.secure(d.signedIn(fota.RoleAdmin, d.upload))}, // multipart: CSRF read from the form's first part
		{"POST /releases/{id}/withdraw", action(fota.RoleAdmin, d.withdraw)},
		{"GET /rollouts", page(fota.RoleViewer, d.rolloutsPage)},
		{"GET /rollouts/new", page(fota.RoleOperator, d.newRolloutPage)},
		{"GET /rollouts/count", page(fota.RoleOperator, d.countTargets)},
		{"POST /rollouts", action(fota.RoleOperator, d.createRollout)},
		{"GET /rollouts/{id}", page(fota.RoleViewer, d.rolloutPage)},
		{"GET /rollouts/{id}/live", page(fota.RoleViewer, d.rolloutLive)},
		{"POST /rollouts/{id}/{action}", action(fota.RoleOperator, d.rolloutAction)},
		{"GET /events", page(fota.RoleViewer, d.eventsPage)},
		{"GET /events/live", page(fota.RoleViewer, d.eventsLive)},
		{"GET /users", page(fota.RoleAdmin, d.usersPage)},
		{"POST /users", action(fota.RoleAdmin, d.addUser)},
		{"POST /users/{name}/remove", action(fota.RoleAdmin, d.removeUser)},
		{"POST /users/{name}/signout", action(fota.RoleAdmin, d.signoutUser)},
		{"GET /tokens", page(fota.RoleAdmin, d.tokensPage)},
		{"POST /tokens", action(fota.RoleAdmin, d.createToken)},
		{"POST /tokens/{name}/revoke", action(fota.RoleAdmin, d.revokeToken)},
		{"GET /webhooks", page(fota.RoleAdmin, d.webhooksPage)},
		{"POST /webhooks", action(fota.RoleAdmin, d.createWebhook)},
		{"POST /webhooks/{id}/remove", action(fota.RoleAdmin, d.removeWebhook)},
	}
}

// contentSecurityPolicy allows the server's own scripts, styles and
// images only, and no framing: an injected tag could load nothing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the headers every dashboard response carries.
func (d *Dashboard) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// staticFiles serves the embedded CSS and JS; they change only with the
// binary, so browsers may keep them for a day.
func (d *Dashboard) staticFiles() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		d.static.ServeHTTP(w, r)
	})
}

// viewer is the signed-in user of a request.
type viewer struct {
	Name string
	Role string
	CSRF string
	hash [32]byte
}

// Can reports whether the viewer's role allows what need asks for; pages
// use it to show only the controls the user may use.
func (v *viewer) Can(need string) bool { return v != nil && fota.RoleAllows(v.Role, need) }

// ctxFor is the request's context naming the user as the actor of the
// changes made with it.
func (v *viewer) ctxFor(r *http.Request) context.Context {
	return fota.WithActor(r.Context(), "user:"+v.Name)
}

// errorPage renders a page saying what went wrong, with the status the
// error's code maps to. An internal error's text goes to the log only.
func (d *Dashboard) errorPage(w http.ResponseWriter, r *http.Request, u *viewer, err error) {
	status := d.statusOf(err)
	if status == http.StatusInternalServerError {
		d.log.Error("dashboard request failed", "path", r.URL.Path, "error", err)
	}
	d.render(w, r, status, "error", u, map[string]any{"Title": http.StatusText(status), "Message": fota.ErrorMessage(err)})
}

// flash carries a message to the page a POST redirects to, in a cookie
// that lives a minute: a message in the URL could be forged by a link.
const flashCookie = "fota_flash"

func (d *Dashboard) redirectWith(w http.ResponseWriter, r *http.Request, to, message string) {
	if message != "" {
		d.setFlash(w, r, message)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (d *Dashboard) setFlash(w http.ResponseWriter, r *http.Request, message string) {
	http.SetCookie(w, &http.Cookie{Name: d.cookieName(r, flashCookie), Value: url.QueryEscape(message), Path: "/", MaxAge: 60,
		HttpOnly: true, Secure: d.secureCookies(r), SameSite: http.SameSiteStrictMode})
}

// takeFlash reads and clears the flash message.
func (d *Dashboard) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(d.cookieName(r, flashCookie))
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: d.cookieName(r, flashCookie), Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.secureCookies(r),
		SameSite: http.SameSiteStrictMode})
	msg, err := url.QueryUnescape(c.Value)
	if err != nil || !fota.PlainText(msg) || len(msg) > 500 {
		return ""
	}
	return msg
}

func (d *Dashboard) statusOf(err error) int { return d.cfg.StatusOf(err) }

func (d *Dashboard) secureCookies(r *http.Request) bool { return r.TLS != nil || d.cfg.SecureCookies }
