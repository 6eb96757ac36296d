package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

// parseTemplates parses each page with the layout and the fragments the
// live streams share with the pages, so a progress bar drawn at load and
// one pushed later are the same template.
func (d *Dashboard) parseTemplates() error {
	funcs := template.FuncMap{
		"ago":      d.ago,
		"when":     when,
		"percent":  percent,
		"bytes":    FormatBytes,
		"labels":   fota.FormatLabels,
		"join":     strings.Join,
		"add":      func(a, b int) int { return a + b },
		"dash":     dash,
		"eqHash":   func(a, b [32]byte) bool { return a == b },
		"title":    func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
		"roles":    func() []string { return fota.Roles },
		"RoleOp":   func() string { return fota.RoleOperator },
		"RoleAdm":  func() string { return fota.RoleAdmin },
		"add2":     func(a, b float64) float64 { return a + b },
		"step":     sessionStep,
		"duration": formatDuration,
		"plural":   plural,
	}
	pageFiles, err := fs.Glob(templateFS, "templates/page_*.html")
	if err != nil {
		return fmt.Errorf("web: templates: %w", err)
	}
	d.pages = map[string]*template.Template{}
	for _, f := range pageFiles {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "templates/page_"), ".html")
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/fragments.html", f)
		if err != nil {
			return fmt.Errorf("web: template %s: %w", name, err)
		}
		d.pages[name] = t
	}
	d.fragments, err = template.New("fragments.html").Funcs(funcs).ParseFS(templateFS, "templates/fragments.html")
	if err != nil {
		return fmt.Errorf("web: fragments: %w", err)
	}
	return nil
}

// render writes page name with data, which gets User, Flash and Page set.
// It renders into a buffer first, so a template failure is a clean 500
// rather than half a page.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, name string, u *viewer, data map[string]any) {
	t, ok := d.pages[name]
	if !ok {
		d.log.Error("dashboard: no page template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	data["User"] = u
	data["Page"] = name
	if _, ok := data["Flash"]; !ok {
		data["Flash"] = d.takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		d.log.Error("dashboard: render page", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fragment renders one of the shared fragments to text.
func (d *Dashboard) fragment(name string, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := d.fragments.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, fmt.Errorf("render fragment %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// ago says how long before now t was, roughly, as people read it.
func (d *Dashboard) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	s := d.now().Sub(t)
	switch {
	case s < 0:
		return "just now"
	case s < time.Minute:
		return fmt.Sprintf("%ds ago", int(s.Seconds()))
	case s < time.Hour:
		return fmt.Sprintf("%dm ago", int(s.Minutes()))
	case s < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(s.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(s.Hours()/24))
}

// when is a time as the machine-readable attribute of a <time>.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func percent(part, whole int) float64 {
	if whole <= 0 {
		return 0
	}
	return float64(part) * 100 / float64(whole)
}

// FormatBytes is a byte count for people, as the dashboard and the CLI
// show it: 512 B, 16.0 KiB, 2.0 MiB.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sessionStep says where an active session is, in an operator's words.
func sessionStep(state string) string {
	switch state {
	case fota.SessionOpen:
		return "downloading"
	case fota.SessionApplied:
		return "installed, rebooting"
	}
	return state
}

// formatDuration writes a duration as people do: 13h, 1h30m, 45s; 0 as
// "none".
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	s := d.Round(time.Second).String()
	s = strings.TrimSuffix(s, "0s")
	s = strings.TrimSuffix(s, "0m")
	if s == "" {
		return "0s"
	}
	return s
}

// plural writes n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
