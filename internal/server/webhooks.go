package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// maxDeliveriesLimit bounds ?limit= of a webhook's delivery list.
const maxDeliveriesLimit = 1000

func viewWebhook(w *fota.Webhook) protocol.Webhook {
	return protocol.Webhook{ID: w.ID, URL: w.URL, Events: w.Events, Created: w.Created, Pending: w.Pending, Failed: w.Failed}
}

func viewDelivery(d *fota.Delivery) protocol.Delivery {
	v := protocol.Delivery{ID: d.ID, EventID: d.EventID, Event: d.Event, State: d.State, Attempts: d.Attempts, LastStatus: d.LastStatus,
		LastError: d.LastError, LastAttempt: d.LastAttempt, Created: d.Created, Delivered: d.Delivered}
	if d.State == fota.DeliveryPending {
		v.NextAttempt = d.NextAttempt
	}
	return v
}

// createWebhook stores a webhook; its secret is never shown again.
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	var req protocol.CreateWebhook
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	wh := &fota.Webhook{URL: req.URL, Events: req.Events, Secret: fota.WebhookSecret(req.Secret)}
	if err := s.store.CreateWebhook(r.Context(), wh); err != nil {
		return err
	}
	s.log.Info("webhook created", "webhook_id", wh.ID, "events", strings.Join(wh.Events, ","), "by", fota.ActorFrom(r.Context()))
	return writeJSON(w, http.StatusCreated, viewWebhook(wh))
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	ws, err := s.store.Webhooks(r.Context())
	if err != nil {
		return err
	}
	out := make([]protocol.Webhook, 0, len(ws))
	for _, wh := range ws {
		out = append(out, viewWebhook(wh))
	}
	return writeJSON(w, http.StatusOK, out)
}

// webhookID reads the {id} of a webhook route.
func webhookID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fota.Errorf(fota.EINVALID, "webhook id %q: want the number fota webhook list shows", truncate(r.PathValue("id"), 20))
	}
	return id, nil
}

func (s *Server) removeWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	if err := s.store.RemoveWebhook(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("webhook removed", "webhook_id", id, "by", fota.ActorFrom(r.Context()))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxDeliveriesLimit {
			return fota.Errorf(fota.EINVALID, "limit=%q: want 1 to %d", truncate(l, 20), maxDeliveriesLimit)
		}
		limit = n
	}
	ds, err := s.store.Deliveries(r.Context(), id, limit)
	if err != nil {
		return err
	}
	out := make([]protocol.Delivery, 0, len(ds))
	for _, d := range ds {
		out = append(out, viewDelivery(d))
	}
	return writeJSON(w, http.StatusOK, out)
}
