package cli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

const webhookUsage = `Usage:
  fota webhook add        --url URL --events 'rollout.*,device.rolled_back' --secret-file FILE
  fota webhook list       [--json]
  fota webhook remove     --id N
  fota webhook deliveries --id N [--limit 50] [--json]

Webhooks receive events as they happen. Each is POSTed as JSON with a
delivery id (X-Fota-Delivery, the same on every retry) and an HMAC-SHA256
signature (X-Fota-Signature) over its timestamp and body, keyed with the
webhook's secret. A delivery is retried, 10 s doubling to 1 h apart, until
the receiver answers 2xx or 24 hours have passed; all replicas send from
one outbox in the database, at least once: receivers drop delivery ids
they have seen. Only events recorded after add reach the webhook.

--events takes event names, with * for any part or alone for all:
rollout.*, device.rolled_back, device.confirmed, release.published, *.
An unknown name is refused with the list of names.
--secret-file holds the secret (at least 16 bytes; surrounding white space
is dropped): a file no one else may read. It goes to the server once and
is never shown again.
remove deletes the webhook with its deliveries not yet sent. deliveries
lists the newest first, with each one's last answer or error.
docs/OPERATIONS.md#webhooks shows how a receiver checks the signature.
These take --server and --token (or FOTA_SERVER and FOTA_TOKEN); add and
remove need an admin token.

Examples:
  openssl rand -hex 32 > webhook.secret && chmod 600 webhook.secret
  fota webhook add --url https://ops.example.com/fota --events 'rollout.*,device.rolled_back' --secret-file webhook.secret
  fota webhook list
  fota webhook deliveries --id 1 --limit 20
  fota webhook remove --id 1
`

func runWebhook(e *env, args []string) error {
	return subcommand(e, "webhook", args, map[string]func(*env, []string) error{
		"add": runWebhookAdd, "list": runWebhookList, "remove": runWebhookRemove, "deliveries": runWebhookDeliveries}, webhookUsage)
}

func runWebhookAdd(e *env, args []string) error {
	fs := newFlags("webhook add")
	server, token := serverFlags(fs)
	url := fs.String("url", "", "where events are POSTed (http:// or https://)")
	events := fs.String("events", "", "event names, comma-separated, * for any part: 'rollout.*,device.rolled_back' ('*': all)")
	secretFile := fs.String("secret-file", "", "file holding the signing secret (at least 16 bytes; mode 0600)")
	if err := parseNoArgs(e, fs, webhookUsage, args); err != nil {
		return err
	}
	if *url == "" || *events == "" || *secretFile == "" {
		return &usageError{msg: "--url, --events and --secret-file are required",
			hint: "fota webhook add --url https://ops.example.com/fota --events 'rollout.*' --secret-file webhook.secret"}
	}
	patterns, err := fota.ParseWebhookEvents([]string{*events})
	if err != nil {
		return usagef("--events: %s", fota.ErrorMessage(err))
	}
	secret, err := readSecretFile(e, *secretFile)
	if err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	w, err := a.CreateWebhook(e.ctx, *url, patterns, secret)
	if err != nil {
		return fmt.Errorf("add webhook: %w", err)
	}
	fmt.Fprintf(e.stdout, "added webhook %d: %s gets %s, signed with the secret in %s\n", w.ID, shown(w.URL), strings.Join(w.Events, ","), *secretFile)
	return nil
}

// readSecretFile reads a webhook secret: refused from a file anyone may
// read, and never printed.
func readSecretFile(e *env, path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("webhook secret: %s is not a file", path)
	}
	// File modes say nothing on Windows.
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o004 != 0 {
		return "", withHint(fmt.Errorf("webhook secret: anyone on this machine can read %s (mode %04o)", path, st.Mode().Perm()),
			"chmod 600 "+path+", and make a new secret if others may have read it")
	}
	if w := keys.PermissionWarning(path); w != "" {
		e.warn("%s", w)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, fota.MaxWebhookSecret+64))
	if err != nil {
		return "", fmt.Errorf("webhook secret: read %s: %w", path, err)
	}
	secret := strings.TrimSpace(string(b))
	switch n := len(secret); {
	case n < fota.MinWebhookSecret:
		return "", withHint(fmt.Errorf("webhook secret: %s holds %d bytes; a secret needs at least %d", path, n, fota.MinWebhookSecret),
			"openssl rand -hex 32 > "+path)
	case n > fota.MaxWebhookSecret:
		return "", fmt.Errorf("webhook secret: %s holds more than %d bytes", path, fota.MaxWebhookSecret)
	case !fota.PlainText(secret):
		return "", fmt.Errorf("webhook secret: %s holds control characters or a line break; write the secret on one line", path)
	}
	return secret, nil
}

func runWebhookList(e *env, args []string) error {
	fs := newFlags("webhook list")
	server, token := serverFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, webhookUsage, args); err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	ws, err := a.Webhooks(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, ws)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tURL\tEVENTS\tCREATED\tPENDING\tFAILED")
	for _, w := range ws {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\n", w.ID, shown(w.URL), shown(strings.Join(w.Events, ",")),
			w.Created.Local().Format(time.DateTime), w.Pending, w.Failed)
	}
	return tw.Flush()
}

// webhookIDFlag adds --id.
func webhookIDFlag(fs *flag.FlagSet) *int64 {
	return fs.Int64("id", 0, "webhook id, as fota webhook list shows it")
}

func runWebhookRemove(e *env, args []string) error {
	fs := newFlags("webhook remove")
	server, token := serverFlags(fs)
	id := webhookIDFlag(fs)
	if err := parseNoArgs(e, fs, webhookUsage, args); err != nil {
		return err
	}
	if *id <= 0 {
		return &usageError{msg: "--id is required", hint: "fota webhook list shows the ids; fota webhook remove --id 1"}
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	if err := a.RemoveWebhook(e.ctx, *id); err != nil {
		return fmt.Errorf("remove webhook %d: %w", *id, err)
	}
	fmt.Fprintf(e.stdout, "webhook %d removed, with its deliveries not yet sent\n", *id)
	return nil
}

func runWebhookDeliveries(e *env, args []string) error {
	fs := newFlags("webhook deliveries")
	server, token := serverFlags(fs)
	id := webhookIDFlag(fs)
	limit := fs.Int("limit", 50, "how many, newest first (at most 1000)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, webhookUsage, args); err != nil {
		return err
	}
	if *id <= 0 {
		return &usageError{msg: "--id is required", hint: "fota webhook list shows the ids; fota webhook deliveries --id 1"}
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("--limit %d: want 1 to 1000", *limit)
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	ds, err := a.WebhookDeliveries(e.ctx, *id, *limit)
	if err != nil {
		return fmt.Errorf("deliveries of webhook %d: %w", *id, err)
	}
	if *asJSON {
		return printJSON(e, ds)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DELIVERY\tEVENT\tSTATE\tATTEMPTS\tCREATED\tLAST ANSWER\tWHEN")
	for _, d := range ds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, shown(d.Event), d.State, d.Attempts, d.Created.Local().Format(time.DateTime),
			lastAnswer(d), deliveryWhen(d))
	}
	return tw.Flush()
}

// lastAnswer is what the last attempt got: the receiver's status, or why
// none came.
func lastAnswer(d protocol.Delivery) string {
	switch {
	case d.Attempts == 0:
		return "-"
	case d.LastError != "":
		return shown(d.LastError)
	}
	return strconv.Itoa(d.LastStatus)
}

// deliveryWhen says when a delivery was delivered, or will be tried next.
func deliveryWhen(d protocol.Delivery) string {
	switch d.State {
	case fota.DeliveryDelivered:
		return "delivered " + d.Delivered.Local().Format(time.DateTime)
	case fota.DeliveryPending:
		return "next try " + d.NextAttempt.Local().Format(time.DateTime)
	}
	return "gave up " + d.LastAttempt.Local().Format(time.DateTime)
}
