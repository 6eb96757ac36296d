package web

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

// Admin pages for what the admin API also manages: API tokens and
// webhooks. A token's text and a webhook's secret are shown once, on the
// page that answers their creation (never stored as text, never cached).

// tokenLives are the expiries the token form offers.
var tokenLives = []struct {
	Value, Label string
	Life         time.Duration
}{
	{"", "never", 0}, {"1d", "1 day", 24 * time.Hour}, {"30d", "30 days", 30 * 24 * time.Hour},
	{"90d", "90 days", 90 * 24 * time.Hour}, {"365d", "a year", 365 * 24 * time.Hour},
}

func (d *Dashboard) tokensPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	d.renderTokens(w, r, u, http.StatusOK, map[string]any{})
}

func (d *Dashboard) renderTokens(w http.ResponseWriter, r *http.Request, u *viewer, status int, data map[string]any) {
	tokens, err := d.store.Tokens(r.Context())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	data["Title"], data["Tokens"], data["Scopes"], data["Lives"], data["Now"] = "API tokens", tokens, fota.Scopes, tokenLives, d.now()
	d.render(w, r, status, "tokens", u, data)
}

func (d *Dashboard) createToken(w http.ResponseWriter, r *http.Request, u *viewer) {
	name, scope, life := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("scope"), r.PostFormValue("expires")
	fail := func(err error) {
		d.renderTokens(w, r, u, d.statusOf(err), map[string]any{"FormError": fota.ErrorMessage(err), "Name": name})
	}
	t := &fota.Token{Name: name, Scope: scope}
	found := false
	for _, l := range tokenLives {
		if l.Value == life {
			found = true
			if l.Life > 0 {
				t.Expires = d.now().Add(l.Life).UTC()
			}
		}
	}
	if !found {
		fail(fota.Errorf(fota.EINVALID, "expiry %q: choose one of the list", life))
		return
	}
	text, hash, err := d.cfg.NewToken()
	if err != nil {
		fail(err)
		return
	}
	t.Hash = hash
	if err := d.store.CreateToken(u.ctxFor(r), t); err != nil {
		fail(err)
		return
	}
	d.log.Info("token created", "token_name", t.Name, "scope", t.Scope, "by", "user:"+u.Name)
	d.renderTokens(w, r, u, http.StatusCreated, map[string]any{"Created": t, "Text": text})
}

func (d *Dashboard) revokeToken(w http.ResponseWriter, r *http.Request, u *viewer) {
	name := r.PathValue("name")
	if err := d.store.RevokeToken(u.ctxFor(r), name); err != nil {
		d.redirectWith(w, r, "/tokens", "Not revoked: "+fota.ErrorMessage(err))
		return
	}
	d.log.Info("token revoked", "token_name", name, "by", "user:"+u.Name)
	d.redirectWith(w, r, "/tokens", "Token "+name+" revoked: it stops working at its next request, on every server.")
}

func (d *Dashboard) webhooksPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	d.renderWebhooks(w, r, u, http.StatusOK, map[string]any{})
}

func (d *Dashboard) renderWebhooks(w http.ResponseWriter, r *http.Request, u *viewer, status int, data map[string]any) {
	hooks, err := d.store.Webhooks(r.Context())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	data["Title"], data["Webhooks"], data["EventNames"] = "Webhooks", hooks, strings.Join(fota.WebhookEventNames(), ", ")
	d.render(w, r, status, "webhooks", u, data)
}

// createWebhook adds a webhook with a secret made here, shown once: the
// receiver checks each delivery's signature with it.
func (d *Dashboard) createWebhook(w http.ResponseWriter, r *http.Request, u *viewer) {
	target, events := strings.TrimSpace(r.PostFormValue("url")), strings.TrimSpace(r.PostFormValue("events"))
	fail := func(err error) {
		d.renderWebhooks(w, r, u, d.statusOf(err), map[string]any{"FormError": fota.ErrorMessage(err), "URL": target, "Events": events})
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		fail(fmt.Errorf("webhook secret: %w", err))
		return
	}
	text := hex.EncodeToString(secret[:])
	patterns := events
	if patterns == "" {
		patterns = "*"
	}
	wh := &fota.Webhook{URL: target, Events: []string{patterns}, Secret: fota.WebhookSecret(text)}
	if err := d.store.CreateWebhook(u.ctxFor(r), wh); err != nil {
		fail(err)
		return
	}
	d.log.Info("webhook created", "webhook_id", wh.ID, "events", strings.Join(wh.Events, ","), "by", "user:"+u.Name)
	d.renderWebhooks(w, r, u, http.StatusCreated, map[string]any{"Created": wh, "Secret": text})
}

func (d *Dashboard) removeWebhook(w http.ResponseWriter, r *http.Request, u *viewer) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		d.errorPage(w, r, u, fota.Errorf(fota.ENOTFOUND, "no webhook %q", r.PathValue("id")))
		return
	}
	if err := d.store.RemoveWebhook(u.ctxFor(r), id); err != nil {
		d.redirectWith(w, r, "/webhooks", "Not removed: "+fota.ErrorMessage(err))
		return
	}
	d.log.Info("webhook removed", "webhook_id", id, "by", "user:"+u.Name)
	d.redirectWith(w, r, "/webhooks", fmt.Sprintf("Webhook %d removed; its pending deliveries are dropped.", id))
}
