package browsertest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
)

// request is one network request a tab made.
type request struct {
	tab, url string
}

// listener records what a tab does for the checks at cleanup. The tab's
// event loop calls it in the order the browser sent the events, before the
// reply of any later command, so a check after a step sees that step's
// events. It must return quickly and send no command.
func (b *Browser) listener(tab string) func(ev any) {
	return func(ev any) {
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.mu.Lock()
			b.requests = append(b.requests, request{tab, ev.Request.URL})
			b.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				b.noteConsole(fmt.Sprintf("%s: console.%s: %s%s", tab, ev.Type, consoleText(ev.Args), where(ev.StackTrace)))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				desc, _, _ := strings.Cut(d.Exception.Description, "\n")
				text += " " + desc
			}
			at := where(d.StackTrace)
			if at == "" && d.URL != "" {
				at = fmt.Sprintf(" at %s:%d", d.URL, d.LineNumber+1)
			}
			b.noteConsole(fmt.Sprintf("%s: %s%s", tab, text, at))
		}
	}
}

func (b *Browser) noteConsole(s string) {
	b.mu.Lock()
	b.console = append(b.console, s)
	b.mu.Unlock()
}

// Requests lists every address the browser's tabs requested so far, in
// order, including those that failed.
func (b *Browser) Requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	urls := make([]string, len(b.requests))
	for i, r := range b.requests {
		urls[i] = r.url
	}
	return urls
}

// ThirdPartyRequests lists the requests, "tab: address", that went to a host
// other than the base URL's (host and port); data:, about: and blob:
// addresses load nothing from a server and are left out. The test fails at
// cleanup when there are any; AssertNoThirdPartyRequests fails it earlier.
func (b *Browser) ThirdPartyRequests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bad []string
	for _, r := range b.requests {
		if b.thirdParty(r.url) {
			bad = append(bad, r.tab+": "+r.url)
		}
	}
	return bad
}

// AssertNoThirdPartyRequests fails the test now if any request went to
// another host.
func (b *Browser) AssertNoThirdPartyRequests() {
	b.t.Helper()
	if bad := b.ThirdPartyRequests(); len(bad) > 0 {
		b.t.Errorf("browsertest: the page requested %d addresses outside %s:\n\t%s", len(bad), b.base.Host, strings.Join(bad, "\n\t"))
	}
}

func (b *Browser) thirdParty(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return true
	}
	switch u.Scheme {
	case "data", "about", "blob":
		return false
	}
	return hostPort(u) != hostPort(b.base)
}

// ConsoleErrors lists the console.error and console.assert messages and the
// uncaught exceptions (including unhandled promise rejections) of every tab
// so far, each with its tab and, where known, its script and line.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// consoleText is a console call's arguments as the console shows them,
// roughly: strings as they are, other values by their description.
func consoleText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a.Type == runtime.RemoteObjectTypeString:
			var s string
			if err := json.Unmarshal(a.Value, &s); err == nil {
				parts = append(parts, s)
				continue
			}
			parts = append(parts, string(a.Value))
		case a.Description != "":
			desc, _, _ := strings.Cut(a.Description, "\n")
			parts = append(parts, desc)
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

// where is " at script:line" of a stack's top frame, or "".
func where(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 {
		return ""
	}
	f := st.CallFrames[0]
	return fmt.Sprintf(" at %s:%d", f.URL, f.LineNumber+1)
}
