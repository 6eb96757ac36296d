package browsertest

import (
	"bytes"
	"fmt"
	"go/parser"
	"go/token"
	"image/png"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// site serves pages by path: each value is the page's HTML.
func site(t *testing.T, pages map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// html is a complete, clean page around body.
func html(title, body string) string {
	return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>` + title +
		`</title><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"></head><body>` +
		body + `</body></html>`
}

// fakeT stands in for the test given to New where a test checks that New
// fails, skips or reports: it records Errorf, and inside stops, Fatalf and
// Skipf record and stop the function. The rest goes to the real test.
type fakeT struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	catching bool   // in stops
	stopped  string // the Fatalf or Skipf message
	cleanups []func()
}

type stop struct{ skip bool }

func newFakeT(t *testing.T) *fakeT {
	f := &fakeT{TB: t}
	t.Cleanup(f.cleanup) // in case the test ends early; cleanup runs once
	return f
}

func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *fakeT) Fatalf(format string, args ...any) {
	if !f.catching {
		f.TB.Helper()
		f.TB.Fatalf(format, args...)
	}
	f.stopped = fmt.Sprintf(format, args...)
	panic(stop{})
}

func (f *fakeT) Skipf(format string, args ...any) {
	if !f.catching {
		f.TB.Helper()
		f.TB.Skipf(format, args...)
	}
	f.stopped = fmt.Sprintf(format, args...)
	panic(stop{skip: true})
}

func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// TempDir is removed by the fake's cleanup, after the browser has closed.
func (f *fakeT) TempDir() string {
	dir, err := os.MkdirTemp("", "browsertest")
	if err != nil {
		f.TB.Fatal(err)
	}
	f.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			f.TB.Errorf("remove the profile: %v", err)
		}
	})
	return dir
}

// cleanup runs the cleanups registered so far, last first, as the testing
// package would at the end of the test.
func (f *fakeT) cleanup() {
	for len(f.cleanups) > 0 {
		fn := f.cleanups[len(f.cleanups)-1]
		f.cleanups = f.cleanups[:len(f.cleanups)-1]
		fn()
	}
}

func (f *fakeT) reported() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errors, "\n")
}

// stops runs fn, which must end with f's Fatalf (or Skipf if skip), and
// returns its message.
func (f *fakeT) stops(t *testing.T, skip bool, fn func()) (msg string) {
	t.Helper()
	f.catching = true
	defer func() {
		f.catching = false
		r := recover()
		if r == nil {
			return // fn went on, and the t.Fatal below said so
		}
		s, ok := r.(stop)
		if !ok {
			panic(r)
		}
		if s.skip != skip {
			t.Fatalf("skip=%v, want skip=%v: %s", s.skip, skip, f.stopped)
		}
		msg = f.stopped
	}()
	fn()
	t.Fatal("it went on; want it to stop the test")
	return ""
}

func TestFormFillSubmitWait(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var posted string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, html("Device", `
<h1>New device</h1>
<form method="post" action="/save">
  <label>Name <input name="name" required></label>
  <label for="email">Owner email:</label> <input id="email" name="email" type="email">
  <label for="colour">Colour</label>
  <select id="colour" name="colour"><option value="red">Red</option><option value="green">Green</option></select>
  <textarea name="notes" aria-label="Notes">old text</textarea>
  <label>Firmware <input type="file" name="fw" id="fw"></label>
  <p id="preview"></p><p id="file"></p>
  <button name="action" value="save">Save</button>
</form>
<script>
  document.querySelector('[name=name]').addEventListener('input', (e) => {
    document.getElementById('preview').textContent = 'Hello ' + e.target.value;
  });
  document.getElementById('fw').addEventListener('change', (e) => {
    document.getElementById('file').textContent = e.target.files[0].name + ' ' + e.target.files[0].size;
  });
</script>`))
	})
	mux.HandleFunc("POST /save", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			r.ParseForm()
		}
		mu.Lock()
		posted = r.Form.Encode()
		mu.Unlock()
		fmt.Fprint(w, html("Saved", `<h1 id="result" data-colour="`+r.FormValue("colour")+`">Saved `+r.FormValue("name")+`</h1>`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := New(t, srv.URL)
	if status := b.Navigate("/"); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	b.FillLabel("Name", "Ada")
	b.WaitText("#preview", "Hello Ada") // typed with key events: the page's input handler ran
	b.FillLabel("Owner email", "ada@example.com")
	b.FillLabel("Colour", "Green") // by the option's text
	b.Fill("textarea", "new text")
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.SetFiles("#fw", fw)
	b.WaitText("#file", "fw.bin 5")
	if got := b.Text("#preview"); got != "Hello Ada" {
		t.Errorf("Text = %q", got)
	}
	b.Submit("button")
	b.WaitText("#result", "Saved Ada")
	if got, ok := b.Attr("#result", "data-colour"); got != "green" || !ok {
		t.Errorf("Attr = %q, %v; want green, true", got, ok)
	}
	if _, ok := b.Attr("#result", "hidden"); ok {
		t.Error("Attr reports an attribute that is not there")
	}
	if !strings.HasSuffix(b.URL(), "/save") {
		t.Errorf("URL = %s", b.URL())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"name=Ada", "email=ada%40example.com", "colour=green", "notes=new+text", "action=save"} {
		if !strings.Contains(posted, want) {
			t.Errorf("posted %q, want %s in it", posted, want)
		}
	}
}

func TestTabsShareCookiesIncognitoDoesNot(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "ada", Path: "/"})
		fmt.Fprint(w, html("In", `<h1>Signed in</h1>`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("session"); err == nil {
			who = c.Value
		}
		fmt.Fprint(w, html("Who", `<h1 id="who">`+who+`</h1>`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := New(t, srv.URL)
	b.Navigate("/login")
	second := b.NewTab()
	second.Navigate("/")
	if got := second.Text("#who"); got != "ada" {
		t.Errorf("a second tab sees %q, want the first tab's session", got)
	}
	other := b.NewIncognitoTab()
	other.Navigate("/")
	if got := other.Text("#who"); got != "nobody" {
		t.Errorf("an incognito tab sees %q, want no session", got)
	}
}

// TestEventSourceLiveUpdates: a page that listens to Server-Sent Events
// shows what the server pushes, and the test ends although the stream
// never does (the server's Close is registered before New, so the browser
// closes first and ends the stream).
func TestEventSourceLiveUpdates(t *testing.T) {
	t.Parallel()
	events := make(chan string)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, html("Live", `<h1>Live</h1><p id="live" aria-live="polite">waiting</p><script>
new EventSource('/events').onmessage = (e) => { document.getElementById('live').textContent = e.data; };
</script>`))
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-events:
				fmt.Fprintf(w, "data: %s\n\n", e)
				w.(http.Flusher).Flush()
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := New(t, srv.URL)
	b.Navigate("/")
	for _, e := range []string{"device 7 updated", "device 8 updated"} {
		select {
		case events <- e:
		case <-time.After(10 * time.Second):
			t.Fatal("the page did not open the event stream")
		}
		b.WaitText("#live", e)
	}
}

func TestThirdPartyRequests(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) // another host on this machine
	srv := site(t, map[string]string{
		"/clean": html("Clean", `<h1>Clean</h1><img src="/logo.png" alt=""><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">`),
		"/leaky": html("Leaky", `<h1>Leaky</h1><img src="http://example.invalid/x.png" alt=""><img src="`+otherURL+`/y.png" alt="">`),
	})
	f := newFakeT(t)
	b := New(f, srv.URL)

	b.Navigate("/clean")
	if bad := b.ThirdPartyRequests(); len(bad) > 0 {
		t.Errorf("a clean page: ThirdPartyRequests = %q", bad)
	}
	b.AssertNoThirdPartyRequests()
	if r := f.reported(); r != "" {
		t.Errorf("a clean page failed the test: %s", r)
	}
	if !strings.Contains(strings.Join(b.Requests(), " "), "/logo.png") {
		t.Errorf("Requests = %q, want the page's own image in it", b.Requests())
	}

	b.Navigate("/leaky")
	b.AssertNoThirdPartyRequests()
	if r := f.reported(); !strings.Contains(r, "tab 1: http://example.invalid/x.png") || !strings.Contains(r, "tab 1: "+otherURL+"/y.png") {
		t.Errorf("a page that loads from example.invalid and %s: reported %q", otherURL, r)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("a third-party request reached its server (%d requests); want none to leave the browser", n)
	}
	f.errors = nil
	f.cleanup()
	if r := f.reported(); !strings.Contains(r, "http://example.invalid/x.png") {
		t.Errorf("cleanup reported %q, want the third-party request", r)
	}
}

func TestConsoleErrorsFailTheTest(t *testing.T) {
	t.Parallel()
	srv := site(t, map[string]string{
		"/clean": html("Clean", `<h1>Clean</h1><script>console.log('fine'); console.warn('careful')</script>`),
		"/broken": html("Broken", `<h1>Broken</h1><script>
console.error('lost the event stream', 42);
Promise.reject(new Error('nobody waits for me'));
undefinedFunction();
</script>`),
	})
	f := newFakeT(t)
	b := New(f, srv.URL)
	b.Navigate("/clean")
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("a clean page: ConsoleErrors = %q", errs)
	}
	b.Navigate("/broken")
	b.WaitText("h1", "Broken")
	f.cleanup()
	r := f.reported()
	for _, want := range []string{
		"console.error: lost the event stream 42 at " + srv.URL + "/broken:",
		"Uncaught (in promise) Error: nobody waits for me",
		"Uncaught ReferenceError: undefinedFunction is not defined",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("cleanup reported:\n%s\nwant %q in it", r, want)
		}
	}

	// Allowed, they are only listed.
	f = newFakeT(t)
	b = New(f, srv.URL, AllowConsoleErrors())
	b.Navigate("/broken")
	f.cleanup()
	if len(b.ConsoleErrors()) == 0 {
		t.Error("AllowConsoleErrors: ConsoleErrors is empty")
	}
	if r := f.reported(); r != "" {
		t.Errorf("AllowConsoleErrors: the test failed: %s", r)
	}
}

func TestCheckAccessibility(t *testing.T) {
	t.Parallel()
	clean := html("Clean", `
<header style="background: rgba(0, 0, 0, 0.8)"><p style="color: #fff">Light on translucent dark</p></header>
<h1>Devices</h1>
<h2>Filter</h2>
<form>
  <label for="q">Search</label> <input id="q">
  <label>Ring <select><option>1</option></select></label>
  <input aria-label="Page size" type="number">
  <input type="hidden" name="csrf" value="x">
  <input type="submit">
  <div style="display: none"><input id="later"></div>
</form>
<h3>Results</h3>
<p style="font-size: 24px; color: #949494">Large grey text passes at 3:1</p>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">
<a href="/devices/1" aria-label="Device 1"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt=""></a>
<a href="/help"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="Help"></a>
<button>Refresh</button>
<h2>Log</h2>`)
	defects := []struct {
		name, page, rule, element string
	}{
		{"no lang", strings.Replace(clean, ` lang="en"`, "", 1), "lang", "html"},
		{"unlabelled input", html("x", `<h1>x</h1><input id="serial" placeholder="Serial">`), "label", "input#serial[type=text]"},
		{"empty label", html("x", `<h1>x</h1><label for="serial"> </label><input id="serial">`), "label", "input#serial"},
		{"unlabelled select", html("x", `<h1>x</h1><select name="ring"><option>1</option></select>`), "label", "select[name=ring]"},
		{"no h1", html("x", `<h2>Only a subheading</h2>`), "h1", "body"},
		{"two h1", html("x", `<h1>First</h1><h1>Second</h1>`), "h1", `h1 "Second"`},
		{"h1 then h3", html("x", `<h1>Top</h1><h3>Too deep</h3>`), "heading-order", `h3 "Too deep"`},
		{"img without alt", html("x", `<h1>x</h1><img id="chart" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">`), "img-alt", "img#chart"},
		{"empty button", html("x", `<h1>x</h1><button class="icon close"></button>`), "name", "button.icon.close"},
		{"icon link", html("x", `<h1>x</h1><a id="home" href="/"><span></span></a>`), "name", "a#home"},
		{"grey on white", html("x", `<h1>x</h1><p id="faint" style="color: #aaa">Last seen 3 min ago</p>`), "contrast", `p#faint "Last seen 3 min ago"`},
		{"small grey text", html("x", `<h1>x</h1><p id="small" style="color: #949494">Small grey text</p>`), "contrast", "p#small"},
		{"dark on an ancestor's dark", html("x", `<h1>x</h1><div style="background: #222"><span id="dim" style="color: #333">Dim</span></div>`), "contrast", "span#dim"},
	}
	pages := map[string]string{"/clean": clean}
	for i, d := range defects {
		pages["/"+strconv.Itoa(i)] = d.page
	}
	srv := site(t, pages)
	f := newFakeT(t)
	b := New(f, srv.URL)

	b.Navigate("/clean")
	if problems := b.CheckAccessibility(); len(problems) > 0 {
		t.Errorf("a clean page: %q", problems)
	}
	for i, d := range defects {
		b.Navigate("/" + strconv.Itoa(i))
		problems := b.CheckAccessibility()
		if len(problems) != 1 || problems[0].Rule != d.rule || !strings.HasPrefix(problems[0].Element, d.element) {
			t.Errorf("%s: %q; want one %s problem naming %s", d.name, problems, d.rule, d.element)
			continue
		}
		t.Logf("%s: %s", d.name, problems[0])
	}

	b.Navigate("/" + strconv.Itoa(len(defects)-3))
	b.AssertAccessible()
	if r := f.reported(); !strings.Contains(r, `contrast: p#faint "Last seen 3 min ago": contrast 2.32:1 is below 4.5:1 (rgb(170, 170, 170) on rgb(255, 255, 255), 16px)`) {
		t.Errorf("AssertAccessible reported %q", r)
	}
}

func TestNarrowViewportOverflow(t *testing.T) {
	t.Parallel()
	srv := site(t, map[string]string{
		"/fits": html("Fits", `<h1>Fits</h1><table style="width: 100%"><tr><td>Device</td><td>1.0.3</td></tr></table>`),
		"/wide": html("Wide", `<h1>Wide</h1><table id="devices" style="width: 600px"><tr><td>Device</td></tr></table>`),
	})
	f := newFakeT(t)
	b := New(f, srv.URL)
	b.SetViewport(320, 640)
	b.Navigate("/fits")
	if w := Eval[int](b.Tab, `window.innerWidth`); w != 320 {
		t.Fatalf("innerWidth = %d", w)
	}
	b.AssertNoHorizontalScroll()
	if r := f.reported(); r != "" {
		t.Errorf("a page that fits: %s", r)
	}
	b.Navigate("/wide")
	over, wide := b.HorizontalOverflow()
	if over <= 0 || len(wide) == 0 || !strings.HasPrefix(wide[0], "table#devices") {
		t.Errorf("HorizontalOverflow = %d, %q; want the table named", over, wide)
	}
	b.AssertNoHorizontalScroll()
	if r := f.reported(); !strings.Contains(r, "wider than the viewport") || !strings.Contains(r, "table#devices") {
		t.Errorf("reported %q", r)
	}
}

func TestScreenshotWritesPNG(t *testing.T) {
	t.Parallel()
	srv := site(t, map[string]string{
		"/tall": html("Tall", `<style>body { margin: 0 }</style><h1 style="margin: 0; height: 1500px; background: #036; color: #fff">Tall</h1>`),
	})
	b := New(t, srv.URL)
	b.SetViewport(400, 300)
	b.Navigate("/tall")
	path := filepath.Join(t.TempDir(), "shots", "dashboard", "tall.png")
	b.Screenshot(path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("not a PNG: % x", data[:min(8, len(data))])
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 400 || cfg.Height != 1500 {
		t.Errorf("screenshot is %dx%d, want the whole page, 400x1500", cfg.Width, cfg.Height)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want 0644", fi.Mode(), err)
	}
}

func TestStepsFailWithWhatThePageShows(t *testing.T) {
	t.Parallel()
	srv := site(t, map[string]string{
		"/": html("Status", `<h1>Status</h1><p id="status">Connecting to the event stream</p>`),
	})
	f := newFakeT(t)
	b := New(f, srv.URL)
	b.Navigate("/")
	b.cfg.wait = 300 * time.Millisecond // as WaitTimeout(300ms) would, after a navigation that may take longer on a busy machine
	start := time.Now()
	msg := f.stops(t, false, func() { b.WaitText("#status", "Connected") })
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitText took %v with a 300ms WaitTimeout", time.Since(start))
	}
	for _, want := range []string{`wait for "Connected" in #status`, `its text: "Connecting to the event stream"`, "gave up after 300ms", "WaitTimeout raises it", "reads: \"Status Connecting"} {
		if !strings.Contains(msg, want) {
			t.Errorf("WaitText failed with:\n%s\nwant %q in it", msg, want)
		}
	}
	t.Logf("WaitText failed with: %s", msg)
	msg = f.stops(t, false, func() { b.Click("#save") })
	if !strings.Contains(msg, "no element matches #save") {
		t.Errorf("Click failed with %s", msg)
	}
	msg = f.stops(t, false, func() { b.FillLabel("Serial", "x") })
	if !strings.Contains(msg, `the field labelled "Serial"`) || !strings.Contains(msg, "no labelled fields") {
		t.Errorf("FillLabel failed with %s", msg)
	}
	msg = f.stops(t, false, func() { b.Text("p[") })
	if !strings.Contains(msg, "not a valid selector") {
		t.Errorf("a bad selector failed with %s", msg)
	}
}

func TestHungPageFailsAtTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers while the browser waits
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	f := newFakeT(t)
	start := time.Now()
	msg := f.stops(t, false, func() {
		b := New(f, srv.URL, Timeout(3*time.Second), WaitTimeout(time.Minute))
		b.Navigate("/")
	})
	t.Logf("a hung page failed with: %s", msg)
	if !strings.Contains(msg, "the browser's 3s limit ran out") {
		t.Errorf("a hung page failed with %s", msg)
	}
	f.cleanup()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("it took %v to fail with a 3s Timeout", d)
	}
}

// TestNoBrowser: a missing browser skips the test on a developer's machine
// and fails it in CI.
func TestNoBrowser(t *testing.T) {
	t.Setenv("FOTA_CHROMIUM", "/nonexistent/chromium")
	t.Setenv("CI", "")
	f := newFakeT(t)
	msg := f.stops(t, true, func() { New(f, "http://127.0.0.1:1") })
	if !strings.Contains(msg, "/nonexistent/chromium") || !strings.Contains(msg, "apt-get install chromium") {
		t.Errorf("skipped with %q", msg)
	}
	t.Setenv("CI", "true")
	msg = f.stops(t, false, func() { New(f, "http://127.0.0.1:1") })
	if !strings.Contains(msg, "/nonexistent/chromium") || !strings.Contains(msg, ".ci/run installs") {
		t.Errorf("failed with %q", msg)
	}
}

// TestImportedOnlyByTests: browsertest is test support; no program code of
// the module may import it.
func TestImportedOnlyByTests(t *testing.T) {
	const self = "github.com/ecowatt/fota/internal/browsertest"
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range file.Imports {
			if imp.Path.Value == strconv.Quote(self) {
				t.Errorf("%s imports %s, which only tests may import", path, self)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
