package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/ecowatt/fota/protocol"
)

// CreateWebhook adds a webhook that receives the events matching events
// (patterns such as "rollout.*" or "device.rolled_back"), signed with
// secret. The answer never holds the secret.
func (a *Admin) CreateWebhook(ctx context.Context, webhookURL string, events []string, secret string) (*protocol.Webhook, error) {
	var out protocol.Webhook
	req := protocol.CreateWebhook{URL: webhookURL, Events: events, Secret: secret}
	if err := a.doJSON(ctx, "POST", "/v1/admin/webhooks", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Webhooks lists the webhooks, with their pending and failed deliveries.
func (a *Admin) Webhooks(ctx context.Context) ([]protocol.Webhook, error) {
	var out []protocol.Webhook
	return out, a.doJSON(ctx, "GET", "/v1/admin/webhooks", nil, &out)
}

// RemoveWebhook removes a webhook; its deliveries not yet sent never are.
func (a *Admin) RemoveWebhook(ctx context.Context, id int64) error {
	return a.doJSON(ctx, "DELETE", "/v1/admin/webhooks/"+strconv.FormatInt(id, 10), nil, nil)
}

// WebhookDeliveries lists a webhook's deliveries, newest event first; limit
// 0 is the server's default (100).
func (a *Admin) WebhookDeliveries(ctx context.Context, id int64, limit int) ([]protocol.Delivery, error) {
	path := "/v1/admin/webhooks/" + strconv.FormatInt(id, 10) + "/deliveries"
	if limit > 0 {
		path += "?" + url.Values{"limit": {strconv.Itoa(limit)}}.Encode()
	}
	var out []protocol.Delivery
	return out, a.doJSON(ctx, "GET", path, nil, &out)
}
