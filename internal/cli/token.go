package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/postgres"
	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/protocol"
)

const tokenUsage = `Usage:
  fota token create --name NAME [--scope admin|read|metrics] [--expires 30d]
  fota token list
  fota token revoke NAME

Admin API tokens: each has a unique name, a scope and an optional expiry.
admin may do everything; read may read the admin API (GET; not the token
list) and /metrics; metrics may only scrape /metrics. create prints the new token alone on
stdout, once; only its hash is stored. revoke takes effect at the token's
next request, on every replica. Events name the token behind each change.

They work over the admin API (--server and --token, or FOTA_SERVER and
FOTA_TOKEN; an admin token), or on the server's machine with --data DIR (or
--db DSN), while it runs or not: that is how the first tokens are made.

Examples:
  export FOTA_TOKEN=$(fota token create --data ./fota-data --name ci)
  fota token create --name prom --scope metrics --expires 30d
  fota token list
  fota token revoke ci
`

func runToken(e *env, args []string) error {
	return subcommand(e, "token", args, map[string]func(*env, []string) error{
		"create": runTokenCreate, "list": runTokenList, "revoke": runTokenRevoke}, tokenUsage)
}

// tokenTarget is where a token command acts: the store on this machine
// (--data, --db) or the admin API.
type tokenTarget struct {
	data, db, server, token *string
}

func tokenFlags(fs *flag.FlagSet) *tokenTarget {
	t := &tokenTarget{}
	t.data = fs.String("data", "", "the server's data folder, to act on its database directly (default ./fota-data when no server is given)")
	t.db = fs.String("db", "", "the server's PostgreSQL DSN, to act on it directly")
	t.server, t.token = serverFlags(fs)
	return t
}

// tokenKeeper is where token commands act: the admin API, or the server's
// store on this machine.
type tokenKeeper interface {
	create(ctx context.Context, name, scope string, expires time.Duration) (string, error)
	list(ctx context.Context) ([]protocol.Token, error)
	revoke(ctx context.Context, name string) error
	Close() error
}

// open picks where to act: --data or --db win; else a server given; else
// ./fota-data.
func (t *tokenTarget) open(e *env) (tokenKeeper, error) {
	if *t.db != "" {
		store, err := postgres.Open(e.ctx, *t.db)
		return localTokens{store}, err
	}
	if *t.data == "" && *t.server != "" {
		a, err := adminClient(*t.server, *t.token)
		return apiTokens{a}, err
	}
	data := *t.data
	if data == "" {
		data = "./fota-data"
	}
	if _, err := os.Stat(filepath.Join(data, "fota.db")); err != nil {
		return nil, withHint(fmt.Errorf("no fota database in %s", data),
			"start 'fota serve --data "+data+"' once, pass the right --data, or give --server and --token to use the admin API")
	}
	store, err := sqlite.Open(e.ctx, filepath.Join(data, "fota.db"))
	return localTokens{store}, err
}

type apiTokens struct{ a *client.Admin }

func (t apiTokens) create(ctx context.Context, name, scope string, expires time.Duration) (string, error) {
	tok, err := t.a.CreateToken(ctx, name, scope, expires)
	if err != nil {
		return "", err
	}
	return tok.Text, nil
}
func (t apiTokens) list(ctx context.Context) ([]protocol.Token, error) { return t.a.Tokens(ctx) }
func (t apiTokens) revoke(ctx context.Context, name string) error      { return t.a.RevokeToken(ctx, name) }
func (t apiTokens) Close() error                                       { return nil }

// localTokens acts on the store directly; its events name "local".
type localTokens struct{ store fota.Store }

func (t localTokens) create(ctx context.Context, name, scope string, expires time.Duration) (string, error) {
	return createScopedToken(ctx, t.store, name, scope, expires)
}

func (t localTokens) list(ctx context.Context) ([]protocol.Token, error) {
	all, err := t.store.Tokens(ctx)
	out := make([]protocol.Token, 0, len(all))
	for _, tk := range all {
		out = append(out, protocol.Token{Name: tk.Name, Scope: tk.Scope, Created: tk.Created, Expires: tk.Expires, Revoked: tk.Revoked})
	}
	return out, err
}

func (t localTokens) revoke(ctx context.Context, name string) error {
	return t.store.RevokeToken(fota.WithActor(ctx, "local"), name)
}

func (t localTokens) Close() error { return t.store.Close() }

func runTokenCreate(e *env, args []string) error {
	fs := newFlags("token create")
	target := tokenFlags(fs)
	name := fs.String("name", "", "a unique name to tell tokens apart, e.g. ci or prom (required)")
	scope := fs.String("scope", fota.ScopeAdmin, "what it may do: admin, read or metrics")
	expiresFlag := fs.String("expires", "", "how long it lasts, e.g. 30d, 2w or 12h, at most 366d (default: until revoked)")
	if err := parseNoArgs(e, fs, tokenUsage, args); err != nil {
		return err
	}
	if *name == "" {
		return &usageError{msg: "--name is required: tokens are told apart, listed and revoked by name", hint: "fota token create --name ci"}
	}
	if !fota.ValidScope(*scope) {
		return usagef("--scope %q: want admin, read or metrics", *scope)
	}
	expires, err := parseExpiry(*expiresFlag)
	if err != nil {
		return usagef("--expires %v", err)
	}
	k, err := target.open(e)
	if err != nil {
		return err
	}
	defer k.Close()
	text, err := k.create(e.ctx, *name, *scope, expires)
	if err != nil {
		return fmt.Errorf("create token %s: %w", *name, err)
	}
	fmt.Fprintln(e.stdout, text)
	return nil
}

func runTokenList(e *env, args []string) error {
	fs := newFlags("token list")
	target := tokenFlags(fs)
	if err := parseNoArgs(e, fs, tokenUsage, args); err != nil {
		return err
	}
	k, err := target.open(e)
	if err != nil {
		return err
	}
	defer k.Close()
	ts, err := k.list(e.ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tCREATED\tEXPIRES\tSTATE")
	now := time.Now()
	for _, t := range ts {
		expires, state := "never", "in force"
		if !t.Expires.IsZero() {
			expires = t.Expires.Local().Format(time.DateTime)
			if !now.Before(t.Expires) {
				state = "expired"
			}
		}
		if !t.Revoked.IsZero() {
			state = "revoked " + t.Revoked.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", shown(t.Name), shown(t.Scope), t.Created.Local().Format(time.DateTime), expires, state)
	}
	return tw.Flush()
}

func runTokenRevoke(e *env, args []string) error {
	fs := newFlags("token revoke")
	target := tokenFlags(fs)
	rest, err := parseFlags(e, fs, tokenUsage, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return &usageError{msg: "fota token revoke needs exactly one token name", hint: "fota token list shows them; fota token revoke ci"}
	}
	k, err := target.open(e)
	if err != nil {
		return err
	}
	defer k.Close()
	if err := k.revoke(e.ctx, rest[0]); err != nil {
		return fmt.Errorf("revoke token %s: %w", rest[0], err)
	}
	fmt.Fprintf(e.stdout, "token %s revoked\n", rest[0])
	return nil
}

func createToken(ctx context.Context, store fota.Store, name string) (string, error) {
	return createScopedToken(ctx, store, name, fota.ScopeAdmin, 0)
}

// createScopedToken makes a token on this machine's store and returns its
// text; the event it records says it was made locally.
func createScopedToken(ctx context.Context, store fota.Store, name, scope string, expires time.Duration) (string, error) {
	token, hash, err := server.NewToken()
	if err != nil {
		return "", err
	}
	t := &fota.Token{Name: name, Hash: hash, Scope: scope}
	if expires > 0 {
		t.Expires = time.Now().Add(expires).UTC()
	}
	if err := store.CreateToken(fota.WithActor(ctx, "local"), t); err != nil {
		return "", err
	}
	return token, nil
}

// parseExpiry reads a token's life: days, weeks or a Go duration, positive
// and at most a year and a day; "" is for ever.
func parseExpiry(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if n, unit, ok := cutUnit(strings.TrimSpace(s)); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v > 366 {
			return 0, fmt.Errorf("%q: want at most 366d", s)
		}
		d = time.Duration(v) * unit
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q: want a life such as 30d, 2w or 12h", s)
		}
	}
	if d <= 0 || d > 366*24*time.Hour {
		return 0, fmt.Errorf("%q: want a life longer than 0 and at most 366d (leave --expires out for a token that lasts until revoked)", s)
	}
	return d, nil
}
