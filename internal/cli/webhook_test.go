package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/webhook"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// webhookEnv is adminEnv with a webhook dispatcher running over the
// server's store, as fota serve runs one, and a receiver that answers 500
// to the first failFirst deliveries.
func webhookEnv(t *testing.T, failFirst int) (dir, receiverURL string, received func() []protocol.WebhookEvent) {
	dir, keyDir, _ := setup(t)
	store, blobs, err := openData(context.Background(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := keys.LoadPublicKey(filepath.Join(keyDir, "signing.pub"))
	hooks := webhook.New(webhook.Config{Store: store, Poll: 10 * time.Millisecond, Backoff: func(int) time.Duration { return time.Millisecond }})
	srv, err := server.New(server.Config{Store: store, Blobs: blobs, Trusted: []*keys.PublicKey{pub}, SessionChanged: hooks.Notify})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); hooks.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		<-done
		hs.Close()
		srv.Close()
		store.Close()
		blobs.Close()
	})

	var mu sync.Mutex
	var got []protocol.WebhookEvent
	requests := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if requests++; requests <= failFirst {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var ev protocol.WebhookEvent
		json.Unmarshal(body, &ev)
		got = append(got, ev)
	}))
	t.Cleanup(recv.Close)

	token, err := createToken(context.Background(), store, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FOTA_SERVER", hs.URL)
	t.Setenv("FOTA_TOKEN", token)
	return dir, recv.URL + "/fota", func() []protocol.WebhookEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]protocol.WebhookEvent(nil), got...)
	}
}

func TestWebhookCommands(t *testing.T) {
	dir, url, received := webhookEnv(t, 1)
	const secretText = "cli-test-secret-0123456789abcdef"
	secret := filepath.Join(dir, "webhook.secret")
	os.WriteFile(secret, []byte(secretText+"\n"), 0o600)

	run(t, "webhook", "add", "--url", url, "--events", "token.*").expect(t, 2, "", "--url, --events and --secret-file are required")
	run(t, "webhook", "add", "--url", url, "--events", "token.create", "--secret-file", secret).
		expect(t, 2, "", "matches no event; the events are: rollout.created")
	run(t, "webhook", "add", "--url", url, "--events", "token.*", "--secret-file", filepath.Join(dir, "nope")).
		expect(t, 1, "", "no such file")
	open := filepath.Join(dir, "open.secret")
	os.WriteFile(open, []byte(secretText), 0o644)
	run(t, "webhook", "add", "--url", url, "--events", "token.*", "--secret-file", open).
		expect(t, 1, "", "anyone on this machine can read "+open+" (mode 0644)\nfota: hint: chmod 600 "+open)
	short := filepath.Join(dir, "short.secret")
	os.WriteFile(short, []byte("tiny\n"), 0o600)
	run(t, "webhook", "add", "--url", url, "--events", "token.*", "--secret-file", short).expect(t, 1, "", "holds 4 bytes; a secret needs at least 16")
	run(t, "webhook", "add", "--url", "ftp://example.com/", "--events", "token.*", "--secret-file", secret).
		expect(t, 1, "", "server answered 400: webhook URL \"ftp://example.com/\": want an http:// or https:// URL")

	out := run(t, "webhook", "add", "--url", url, "--events", "token.*,device.device_added", "--secret-file", secret)
	out.expect(t, 0, "added webhook 1: "+url+" gets token.*,device.device_added, signed with the secret in "+secret, "")
	// Readable by the group: taken, with a warning.
	shared := filepath.Join(dir, "shared.secret")
	os.WriteFile(shared, []byte(secretText), 0o640)
	run(t, "webhook", "add", "--url", url, "--events", "*", "--secret-file", shared).expect(t, 0, "added webhook 2", "is readable by others (mode 0640)")

	list := run(t, "webhook", "list")
	list.expect(t, 0, "token.*,device.device_added", "")
	for _, want := range []string{"ID", "PENDING", url} {
		if !strings.Contains(list.stdout, want) {
			t.Fatalf("webhook list lacks %q:\n%s", want, list.stdout)
		}
	}
	var hooks []protocol.Webhook
	if err := json.Unmarshal([]byte(run(t, "webhook", "list", "--json").stdout), &hooks); err != nil || len(hooks) != 2 || hooks[0].ID != 1 {
		t.Fatalf("webhook list --json: %+v %v", hooks, err)
	}

	// Events after the webhooks were added reach them; the first attempt
	// fails and is tried again.
	run(t, "token", "create", "--name", "ci").expect(t, 0, "fota_", "")
	var ds []protocol.Delivery
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ds = nil
		json.Unmarshal([]byte(run(t, "webhook", "deliveries", "--id", "1", "--json").stdout), &ds)
		if len(ds) == 1 && ds[0].State == "delivered" && len(received()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries of webhook 1: %+v; received %+v", ds, received())
		}
	}
	if ds[0].Event != "token.created" || ds[0].LastStatus != 200 {
		t.Fatalf("delivery %+v", ds[0])
	}
	table := run(t, "webhook", "deliveries", "--id", "1", "--limit", "5")
	table.expect(t, 0, "token.created", "")
	for _, want := range []string{ds[0].ID, "delivered", "LAST ANSWER"} {
		if !strings.Contains(table.stdout, want) {
			t.Fatalf("webhook deliveries lacks %q:\n%s", want, table.stdout)
		}
	}
	for _, ev := range received() {
		if ev.Event != "token.created" || ev.Detail != "token ci, scope admin" || ev.Actor != "token:test" {
			t.Fatalf("received %+v", ev)
		}
	}
	run(t, "webhook", "deliveries").expect(t, 2, "", "--id is required")
	run(t, "webhook", "deliveries", "--id", "1", "--limit", "0").expect(t, 2, "", "want 1 to 1000")
	run(t, "webhook", "deliveries", "--id", "9").expect(t, 1, "", "no webhook 9")

	run(t, "webhook", "remove", "--id", "1").expect(t, 0, "webhook 1 removed", "")
	run(t, "webhook", "remove", "--id", "1").expect(t, 1, "", "no webhook 1")
	run(t, "webhook", "remove").expect(t, 2, "", "--id is required")
	run(t, "webhook", "list").expect(t, 0, "", "")
	if strings.Contains(run(t, "webhook", "list").stdout, "token.*") {
		t.Fatal("a removed webhook is still listed")
	}
	// The secret is shown nowhere: not by the commands, not in the history.
	for _, r := range []result{out, list, table, run(t, "status", "--events", "50")} {
		if strings.Contains(r.stdout+r.stderr, secretText) {
			t.Fatalf("the secret shows:\n%s%s", r.stdout, r.stderr)
		}
	}
	run(t, "status", "--events", "50").expect(t, 0, "webhook-removed", "")
}
