package browsertest

import (
	_ "embed"
	"strings"

	"github.com/chromedp/chromedp"
)

//go:embed a11y.js
var a11yJS string

// Problem is one accessibility problem that CheckAccessibility found.
type Problem struct {
	// Rule is the check: lang, label, h1, heading-order, img-alt, name or
	// contrast.
	Rule string `json:"rule"`
	// Element names the element: tag, id, name or classes, and its text.
	Element string `json:"element"`
	// Detail says what is wrong, e.g. the contrast ratio and the colors.
	Detail string `json:"detail"`
}

func (p Problem) String() string { return p.Rule + ": " + p.Element + ": " + p.Detail }

// CheckAccessibility checks the page as it is drawn now for the basics:
//
//   - lang: <html lang> is set;
//   - label: every input, select and textarea a person fills has a <label>
//     (for=id or wrapping), aria-labelledby or aria-label;
//   - h1, heading-order: exactly one <h1>, and no heading skips a level
//     below the one before it (h1 then h3);
//   - img-alt: every <img> has alt;
//   - name: every button and link has a name (text, aria-label, alt);
//   - contrast: text has a WCAG contrast of 4.5:1 against its background,
//     3:1 if large (24px, or 18.66px bold). The background is the nearest
//     ancestor's background-color, translucent ones laid over it, on white;
//     text over a background image is not judged.
//
// Elements that are not drawn are not checked.
func (tab *Tab) CheckAccessibility() []Problem {
	tab.b.t.Helper()
	ctx, cancel := tab.step()
	defer cancel()
	problems, err := chromedp.Run(ctx, chromedp.Evaluate[[]Problem](script(a11yJS, nil)))
	if err != nil {
		tab.fail("check accessibility", err)
	}
	return problems
}

// AssertAccessible fails the test listing every problem CheckAccessibility
// finds.
func (tab *Tab) AssertAccessible() {
	tab.b.t.Helper()
	if problems := tab.CheckAccessibility(); len(problems) > 0 {
		lines := make([]string, len(problems))
		for i, p := range problems {
			lines[i] = p.String()
		}
		tab.b.t.Errorf("browsertest: %s: %d accessibility problems on %s:\n\t%s", tab.name, len(problems), tab.URL(), strings.Join(lines, "\n\t"))
	}
}
