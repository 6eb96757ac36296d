// Package browsertest runs the web dashboard's tests in a real headless
// Chromium, driven through the DevTools protocol (chromedp). It is test
// support: import it only from _test.go files (a test of this package fails
// when a non-test file imports it).
//
//	srv := httptest.NewServer(handler)
//	t.Cleanup(srv.Close) // before New, so the browser closes first
//	b := browsertest.New(t, srv.URL)
//	b.Navigate("/login")
//	b.FillLabel("Email", "ada@example.com")
//	b.Submit("form")
//	b.WaitText("h1", "Devices")
//	b.AssertAccessible()
//
// Each test gets its own browser process with a fresh profile in t.TempDir(),
// closed by t.Cleanup. Register the server's Close with t.Cleanup before
// New, not with defer: cleanups run last first, so the browser closes and
// ends an open EventSource stream before the server's Close waits for it.
//
// When the test ends the browser also fails it if
//
//   - the page requested anything from a host other than the base URL's
//     (the dashboard ships every script, style and font itself; data:,
//     about: and blob: addresses load nothing and are allowed), or
//   - a page logged a console error or threw an uncaught exception (unless
//     AllowConsoleErrors).
//
// Nothing hangs: the browser lives at most Timeout (60 s) and each step waits
// at most WaitTimeout (10 s); a step that runs out fails the test and says
// what it waited for and what the page read at that moment.
//
// The browser is FOTA_CHROMIUM, else the first of chromium, chromium-browser
// and google-chrome in PATH. Without one the test is skipped with a hint how
// to install it, except when CI is set: then it fails, as .ci/run installs
// Debian's chromium and a test in CI never skips for a missing tool.
//
// Methods fail the test with t.Fatal, so call them from the test's goroutine.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Default limits; Timeout and WaitTimeout change them.
const (
	DefaultTimeout     = 60 * time.Second
	DefaultWaitTimeout = 10 * time.Second
)

// closeTimeout bounds the graceful close of the browser at cleanup; after it
// the process is killed.
const closeTimeout = 5 * time.Second

// browserNames are looked up in PATH, in this order, when FOTA_CHROMIUM is
// not set.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome"}

// Option changes how New starts the browser.
type Option func(*config)

type config struct {
	timeout      time.Duration
	wait         time.Duration
	allowConsole bool
}

// Timeout is how long the browser may live, from New to the end of the
// test (default 60 s). When it runs out the browser is killed and the step
// that was running fails the test.
func Timeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WaitTimeout is how long one step (a navigation, a click, a wait for text)
// may take (default 10 s).
func WaitTimeout(d time.Duration) Option { return func(c *config) { c.wait = d } }

// AllowConsoleErrors stops console errors and uncaught exceptions from
// failing the test; ConsoleErrors still lists them.
func AllowConsoleErrors() Option { return func(c *config) { c.allowConsole = true } }

// Browser is one headless Chromium process for one test. It embeds its first
// tab, so b.Navigate and the other Tab methods work on it directly.
type Browser struct {
	*Tab

	t    testing.TB
	base *url.URL
	cfg  config
	path string // the browser binary

	root       context.Context // ends at cfg.timeout; the browser dies with it
	rootCancel context.CancelFunc
	allocStop  context.CancelFunc

	mu       sync.Mutex
	tabs     []*Tab
	requests []request
	console  []string
	output   tail // the browser's own stdout and stderr, for start failures
}

// New starts a browser for the test whose pages are served at baseURL (an
// httptest.Server's URL). Relative paths given to Navigate resolve against
// it, and requests to any other host fail the test.
func New(t testing.TB, baseURL string, opts ...Option) *Browser {
	t.Helper()
	cfg := config{timeout: DefaultTimeout, wait: DefaultWaitTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	base, err := url.Parse(baseURL)
	if err != nil || base.Host == "" {
		t.Fatalf("browsertest: base URL %q: want an absolute URL such as an httptest.Server's", baseURL)
	}
	path, err := findBrowser()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("browsertest: no browser for the dashboard's tests: %v; .ci/run installs Debian's chromium, or set FOTA_CHROMIUM to the browser's path", err)
		}
		t.Skipf("browsertest: skipped: no browser: %v; install one (Debian/Ubuntu: sudo apt-get install chromium; macOS: brew install --cask chromium) or set FOTA_CHROMIUM=/path/to/chrome", err)
	}

	b := &Browser{t: t, base: base, cfg: cfg, path: path}
	profile := t.TempDir() // removed after the cleanup below has closed the browser
	b.root, b.rootCancel = context.WithTimeout(context.Background(), cfg.timeout)
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		// No host but the base URL's resolves, name or address, so a
		// request to another host is recorded (and fails the test) but
		// reaches no server and sends no DNS query.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE "+ruleHost(base)),
		chromedp.CombinedOutput(&b.output),
	)
	alloc, allocStop := chromedp.NewExecAllocator(b.root, allocOpts...)
	b.allocStop = allocStop
	t.Cleanup(b.close)

	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithListener(b.listener("tab 1")))
	b.Tab = &Tab{b: b, name: "tab 1", ctx: ctx, cancel: cancel}
	// The first step starts the browser and binds its life to ctx: no step
	// timeout here either.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: start %s: %s%s", path, b.why(err), b.output.String())
	}
	return b
}

// NewTab opens another tab in the same browser. It shares the first tab's
// cookies and storage: the same user in a second window.
func (b *Browser) NewTab() *Tab {
	b.t.Helper()
	return b.open(false)
}

// NewIncognitoTab opens a tab in a browser context of its own, with its own
// cookies and storage: a second user, signed in separately.
func (b *Browser) NewIncognitoTab() *Tab {
	b.t.Helper()
	return b.open(true)
}

func (b *Browser) open(incognito bool) *Tab {
	b.t.Helper()
	b.mu.Lock()
	name := fmt.Sprintf("tab %d", len(b.tabs)+2)
	if incognito {
		name = "incognito " + name
	}
	b.mu.Unlock()
	opts := []chromedp.ContextOption{chromedp.WithListener(b.listener(name))}
	if incognito {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(b.Tab.ctx, opts...)
	tab := &Tab{b: b, name: name, ctx: ctx, cancel: cancel}
	b.mu.Lock()
	b.tabs = append(b.tabs, tab)
	b.mu.Unlock()
	// The first step of a tab binds the tab's life to its context, so it
	// gets no step timeout of its own; the browser's Timeout bounds it.
	if err := chromedp.Do(ctx); err != nil {
		tab.fail("open the tab", err)
	}
	return tab
}

// close ends the browser at cleanup, then fails the test for what it saw.
func (b *Browser) close() {
	b.t.Helper()
	b.mu.Lock()
	tabs := b.tabs
	b.mu.Unlock()
	for _, tab := range tabs {
		tab.cancel()
	}
	if b.Tab != nil {
		ctx, cancel := context.WithTimeout(b.Tab.ctx, closeTimeout)
		chromedp.Cancel(ctx) // a graceful close; the cancels below kill what is left
		cancel()
		b.Tab.cancel()
	}
	b.allocStop()
	b.rootCancel()

	if bad := b.ThirdPartyRequests(); len(bad) > 0 {
		b.t.Errorf("browsertest: the page requested %d addresses outside %s:\n\t%s", len(bad), b.base.Host, strings.Join(bad, "\n\t"))
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 && !b.cfg.allowConsole {
		b.t.Errorf("browsertest: %d console errors or uncaught exceptions (browsertest.AllowConsoleErrors() if the test expects them):\n\t%s", len(errs), strings.Join(errs, "\n\t"))
	}
}

// findBrowser is FOTA_CHROMIUM, else the first of browserNames in PATH.
func findBrowser() (string, error) {
	if p := os.Getenv("FOTA_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("FOTA_CHROMIUM=%s: %w", p, err)
		}
		return path, nil
	}
	for _, name := range browserNames {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("FOTA_CHROMIUM is not set and none of %s is in PATH", strings.Join(browserNames, ", "))
}

// resolve makes path (relative to the base URL, or absolute) an address.
func (b *Browser) resolve(path string) string {
	ref, err := url.Parse(path)
	if err != nil {
		return path // the browser says what is wrong with it
	}
	return b.base.ResolveReference(ref).String()
}

// why is err, or for a step that ran out of time, the limit that did and
// the option that raises it.
func (b *Browser) why(err error) string {
	switch {
	case b.root.Err() != nil:
		return fmt.Sprintf("the browser's %v limit ran out (browsertest.Timeout raises it)", b.cfg.timeout)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("gave up after %v (browsertest.WaitTimeout raises it)", b.cfg.wait)
	}
	return err.Error()
}

// tail keeps the last few KiB the browser printed.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > tailSize {
		w.buf = w.buf[len(w.buf)-tailSize:]
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 {
		return ""
	}
	return "\nthe browser printed:\n" + string(w.buf)
}

// ruleHost is u's host as host-resolver-rules write it (IPv6 in brackets).
func ruleHost(u *url.URL) string {
	if h := u.Hostname(); strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return u.Hostname()
}

// hostPort is u's host and port, with the scheme's default port filled in.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https", "wss":
			port = "443"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
