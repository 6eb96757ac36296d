package browsertest

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// Tab is one tab of the browser. Its steps act as a person would, with real
// mouse and key events, and each waits at most WaitTimeout. None waits for
// a page that a click or submit loads: follow them with WaitText for what
// the next page shows.
type Tab struct {
	b      *Browser
	name   string
	ctx    context.Context
	cancel context.CancelFunc
}

// pollInterval is how often a waiting step looks at the page again.
const pollInterval = 50 * time.Millisecond

//go:embed page.js
var pageJS string

// script is an expression that runs body (a function body that returns a
// value) after the helpers of page.js, with args bound to the name args.
// Wrapped in a function, it adds nothing to the page's globals.
func script(body string, args any) string {
	a, err := json.Marshal(args)
	if err != nil {
		panic(err) // args are this package's own values
	}
	return "(() => {\n" + pageJS + "\nconst args = " + string(a) + ";\n" + body + "\n})()"
}

// step is the context of one step: at most WaitTimeout, within the
// browser's Timeout.
func (tab *Tab) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(tab.ctx, tab.b.cfg.wait)
}

// fail ends the test for a step that failed, saying which limit ran out
// and what the page reads now.
func (tab *Tab) fail(what string, err error) {
	tab.b.t.Helper()
	tab.b.t.Fatalf("browsertest: %s: %s: %s%s", tab.name, what, tab.b.why(err), tab.excerpt())
}

type pageState struct {
	URL  string `json:"url"`
	Text string `json:"text"`
}

// excerpt is the page's address and the start of its text, for messages.
func (tab *Tab) excerpt() string {
	ctx, cancel := context.WithTimeout(tab.ctx, time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](script(`return {url: location.href, text: pageText()};`, nil)))
	if err != nil {
		return ""
	}
	return fmt.Sprintf("\n\tthe page %s reads: %q", s.URL, s.Text)
}

// element says what a selector finds now, for messages.
func (tab *Tab) element(css string) string {
	ctx, cancel := context.WithTimeout(tab.ctx, time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](script(`
const all = document.querySelectorAll(args);
if (all.length === 0) return 'no element matches ' + args;
const el = all[0];
return selector(el) + (shown(el) ? ' is shown' : ' is not shown') + ', its text: "' + short(el.innerText, 200) + '"';`, css)))
	if err != nil {
		return ""
	}
	return s
}

// poll runs body until it returns something other than null, and decodes
// that into T. A script error (a bad selector) ends it at once; errors of
// a page that is being replaced are retried.
func poll[T any](tab *Tab, body string, args any) (T, error) {
	ctx, cancel := tab.step()
	defer cancel()
	expr := script(body, args)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var zero T
	for {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[*T](expr))
		var exc *chromedp.ExceptionError
		switch {
		case err == nil && v != nil:
			return *v, nil
		case errors.As(err, &exc):
			return zero, err
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-tick.C:
		}
	}
}

// wantsFix is an answer of a page script that found the element but cannot
// do the step, with the reason.
const wantsFix = "error: "

// Navigate loads path (relative to the base URL, or absolute) and waits for
// the page's load event. It returns the HTTP status of the document.
func (tab *Tab) Navigate(path string) int {
	tab.b.t.Helper()
	u := tab.b.resolve(path)
	ctx, cancel := tab.step()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		tab.fail("navigate to "+u, err)
	}
	if resp == nil {
		return 0
	}
	return int(resp.Status)
}

// URL is the address of the page the tab shows.
func (tab *Tab) URL() string {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		tab.fail("read the address", err)
	}
	return u
}

// Click clicks the first element that matches the CSS selector, with the
// mouse, once it is shown.
func (tab *Tab) Click(selector string) {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(selector))); err != nil {
		tab.fail("click "+selector+": "+tab.element(selector), err)
	}
}

const fillJS = `
const el = find(args.loc);
if (!el) return null;
if (el.disabled || el.readOnly) return 'error: ' + describe(el) + ' is disabled or read-only';
if (el.tagName === 'SELECT') {
  const opt = [...el.options].find((o) => o.value === args.value || norm(o.text) === norm(args.value));
  if (!opt) return 'error: ' + describe(el) + ' has no option "' + args.value + '"; it has ' + [...el.options].map((o) => '"' + norm(o.text) + '"').join(', ');
  el.value = opt.value;
  el.dispatchEvent(new Event('input', { bubbles: true }));
  el.dispatchEvent(new Event('change', { bubbles: true }));
  return 'done';
}
const notText = ['checkbox', 'radio', 'file', 'submit', 'button', 'reset', 'image', 'hidden', 'range', 'color'];
const text = el.tagName === 'TEXTAREA' || el.isContentEditable || (el.tagName === 'INPUT' && !notText.includes(el.type));
if (!text) return 'error: ' + describe(el) + ' takes no typed text (Click a checkbox or radio button; SetFiles a file input)';
el.focus();
if (document.activeElement !== el) return 'error: ' + describe(el) + ' does not take the focus';
if (el.isContentEditable) el.textContent = ''; else el.value = '';
el.dispatchEvent(new Event('input', { bubbles: true }));
return 'type';`

const labelsJS = `
const labels = [...document.querySelectorAll('input, select, textarea')].filter((el) => el.type !== 'hidden').map(labelOf).filter(Boolean);
return labels.length ? 'the labels on the page: "' + labels.join('", "') + '"' : 'the page has no labelled fields';`

// Fill types value into the first field that matches the CSS selector, as
// a person would: it empties the field, types with key events, and leaves
// the field (which fires change). For a <select> it chooses the option
// whose value or text is value.
func (tab *Tab) Fill(selector, value string) {
	tab.b.t.Helper()
	tab.fill(map[string]string{"css": selector}, selector, value)
}

// FillLabel is Fill for the field whose label reads label: a <label> tied
// to it by for=id or by wrapping it, aria-labelledby or aria-label. White
// space and a trailing ':' or '*' do not count.
func (tab *Tab) FillLabel(label, value string) {
	tab.b.t.Helper()
	tab.fill(map[string]string{"label": label}, fmt.Sprintf("the field labelled %q", label), value)
}

func (tab *Tab) fill(loc map[string]string, what, value string) {
	tab.b.t.Helper()
	what = "fill " + what
	res, err := poll[string](tab, fillJS, map[string]any{"loc": loc, "value": value})
	switch {
	case err != nil && loc["label"] != "":
		tab.fail(what+": "+tab.run(labelsJS), err)
	case err != nil:
		tab.fail(what+": "+tab.element(loc["css"]), err)
	case strings.HasPrefix(res, wantsFix):
		tab.fail(what, errors.New(strings.TrimPrefix(res, wantsFix)))
	case res == "type":
		ctx, cancel := tab.step()
		defer cancel()
		err := chromedp.Do(ctx,
			chromedp.KeyEvent(value),
			chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur()`),
		)
		if err != nil {
			tab.fail(what, err)
		}
	}
}

// run evaluates a page script once, for messages; it returns "" on error.
func (tab *Tab) run(body string) string {
	ctx, cancel := context.WithTimeout(tab.ctx, time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](script(body, nil)))
	return s
}

const submitJS = `
const el = find({css: args});
if (!el) return null;
const form = el.tagName === 'FORM' ? el : el.form;
if (!form) return 'error: ' + describe(el) + ' is not a form and not in one';
const invalid = [...form.elements].filter((e) => e.willValidate && !e.checkValidity());
if (invalid.length) return 'error: the form does not validate: ' + invalid.map((e) => describe(e) + ': ' + e.validationMessage).join('; ');
form.requestSubmit(el.type === 'submit' && el.form === form ? el : undefined);
return 'done';`

// Submit submits the form that the CSS selector matches, or that holds the
// element it matches (a submit button is then the submitter, so its name
// and value are sent). It runs the form's submit handlers as a click on its
// button would, and fails the test if the form does not validate.
func (tab *Tab) Submit(selector string) {
	tab.b.t.Helper()
	res, err := poll[string](tab, submitJS, selector)
	switch {
	case err != nil:
		tab.fail("submit "+selector+": "+tab.element(selector), err)
	case strings.HasPrefix(res, wantsFix):
		tab.fail("submit "+selector, errors.New(strings.TrimPrefix(res, wantsFix)))
	}
}

// WaitText waits until the text of the first element that matches the CSS
// selector contains text (white space collapsed in both). It fails the test
// after WaitTimeout with the element's text and the page's.
func (tab *Tab) WaitText(selector, text string) {
	tab.b.t.Helper()
	_, err := poll[bool](tab, `
const el = document.querySelector(args.css);
return el && norm(el.innerText).includes(norm(args.text)) ? true : null;`, map[string]string{"css": selector, "text": text})
	if err != nil {
		tab.fail(fmt.Sprintf("wait for %q in %s: %s", text, selector, tab.element(selector)), err)
	}
}

// Text is the text a person sees in the first element that matches the CSS
// selector (innerText, white space collapsed), once there is one.
func (tab *Tab) Text(selector string) string {
	tab.b.t.Helper()
	s, err := poll[string](tab, `
const el = document.querySelector(args);
return el ? norm(el.innerText) : null;`, selector)
	if err != nil {
		tab.fail("read the text of "+selector+": "+tab.element(selector), err)
	}
	return s
}

// Attr is the value of the attribute name of the first element that
// matches the CSS selector, once there is one, and whether it has it.
func (tab *Tab) Attr(selector, name string) (string, bool) {
	tab.b.t.Helper()
	a, err := poll[struct {
		Value string `json:"value"`
		Has   bool   `json:"has"`
	}](tab, `
const el = document.querySelector(args.css);
return el ? {value: el.getAttribute(args.name) || '', has: el.hasAttribute(args.name)} : null;`, map[string]string{"css": selector, "name": name})
	if err != nil {
		tab.fail("read the attribute "+name+" of "+selector+": "+tab.element(selector), err)
	}
	return a.Value, a.Has
}

// SetFiles chooses files in the file input that the CSS selector matches,
// as a person would in the file dialog; the input fires change.
func (tab *Tab) SetFiles(selector string, paths ...string) {
	tab.b.t.Helper()
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(a)
		}
		if err != nil {
			tab.b.t.Fatalf("browsertest: %s: set files of %s: %v", tab.name, selector, err)
		}
		abs[i] = a
	}
	ctx, cancel := tab.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.CSS(selector), abs)); err != nil {
		tab.fail("set files of "+selector+": "+tab.element(selector), err)
	}
}

// SetViewport makes the tab's window width × height CSS pixels, as a phone
// or a desktop screen would; the page lays itself out again.
func (tab *Tab) SetViewport(width, height int) {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		tab.fail(fmt.Sprintf("set the viewport to %dx%d", width, height), err)
	}
}

// Screenshot writes a PNG of the whole page, beyond the viewport, to path
// (mode 0644), creating its directory.
func (tab *Tab) Screenshot(path string) {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tab.fail("take a screenshot", err)
	}
	err = os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err == nil {
		err = os.Chmod(path, 0o644) // WriteFile keeps the mode of a file that was there
	}
	if err != nil {
		tab.b.t.Fatalf("browsertest: %s: screenshot: %v", tab.name, err)
	}
}

// Eval evaluates a JavaScript expression in the tab's page and decodes its
// value (JSON) into T; a promise is awaited.
func Eval[T any](tab *Tab, expression string) T {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression, chromedp.EvalAwaitPromise))
	if err != nil {
		tab.fail("evaluate "+expression, err)
	}
	return v
}

// HorizontalOverflow is how many CSS pixels the page is wider than the
// viewport (document.documentElement.scrollWidth - window.innerWidth, 0 if
// it fits) and, when it is, the first few elements that reach past the
// right edge.
func (tab *Tab) HorizontalOverflow() (int, []string) {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	r, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Over int      `json:"over"`
		Wide []string `json:"wide"`
	}](script(`
const vw = window.innerWidth, over = document.documentElement.scrollWidth - vw;
const wide = [];
if (over > 0) {
  for (const el of document.body.querySelectorAll('*')) {
    const right = el.getBoundingClientRect().right + window.scrollX;
    if (right > vw + 0.5 && shown(el)) wide.push(describe(el) + ' reaches ' + Math.round(right) + 'px');
    if (wide.length === 5) break;
  }
}
return {over: Math.max(over, 0), wide};`, nil)))
	if err != nil {
		tab.fail("measure the page's width", err)
	}
	return r.Over, r.Wide
}

// AssertNoHorizontalScroll fails the test if the page is wider than the
// viewport (set it with SetViewport, e.g. 320 wide for a small phone).
func (tab *Tab) AssertNoHorizontalScroll() {
	tab.b.t.Helper()
	if over, wide := tab.HorizontalOverflow(); over > 0 {
		tab.b.t.Errorf("browsertest: %s: the page scrolls sideways: it is %dpx wider than the viewport:\n\t%s", tab.name, over, strings.Join(wide, "\n\t"))
	}
}
