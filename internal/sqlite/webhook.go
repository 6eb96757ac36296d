package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

var _ fota.WebhookStore = (*Store)(nil)

// CreateWebhook stores a webhook; its cursor starts at the newest event.
func (s *Store) CreateWebhook(ctx context.Context, w *fota.Webhook) error {
	if err := fota.PrepareWebhook(w); err != nil {
		return err
	}
	w.Created = s.now().UTC()
	return s.tx(ctx, func(tx *txn) error {
		// The transaction holds the write lock: no event can come between
		// the newest read here and the webhook's row.
		res, err := tx.ExecContext(ctx, `INSERT INTO webhooks (url, events, secret, created_ms, cursor_id)
			VALUES (?, ?, ?, ?, (SELECT coalesce(max(id), 0) FROM events))`,
			w.URL, strings.Join(w.Events, ","), string(w.Secret), ms(w.Created))
		if err != nil {
			return fmt.Errorf("create webhook: %w", err)
		}
		w.ID, _ = res.LastInsertId()
		return addEvent(ctx, tx, fota.WebhookCreatedEvent(w))
	})
}

// Webhooks lists webhooks with their pending and failed counts.
func (s *Store) Webhooks(ctx context.Context) ([]*fota.Webhook, error) {
	return queryAll(ctx, s.db, "webhooks", func(row rowScanner) (*fota.Webhook, error) {
		w := &fota.Webhook{}
		var events string
		var created int64
		err := row.Scan(&w.ID, &w.URL, &events, &created, &w.Pending, &w.Failed)
		w.Events, w.Created = strings.Split(events, ","), fromMS(created)
		return w, err
	}, `SELECT w.id, w.url, w.events, w.created_ms,
		(SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'pending'),
		(SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'failed')
		FROM webhooks w ORDER BY w.id`)
}

// RemoveWebhook deletes a webhook and its deliveries.
func (s *Store) RemoveWebhook(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *txn) error {
		w := &fota.Webhook{ID: id}
		err := tx.QueryRowContext(ctx, `SELECT url FROM webhooks WHERE id = ?`, id).Scan(&w.URL)
		if errors.Is(err, sql.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no webhook %d", id)
		}
		if err != nil {
			return fmt.Errorf("remove webhook: %w", err)
		}
		// The deliveries go with it (ON DELETE CASCADE).
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = ?`, id); err != nil {
			return fmt.Errorf("remove webhook: %w", err)
		}
		return addEvent(ctx, tx, fota.WebhookRemovedEvent(w, s.now()))
	})
}

// FanOut makes the deliveries of new events, one transaction per webhook.
// Writers take turns on SQLite, and events are numbered in the order they
// commit, so a cursor read in the write transaction sees every event
// before it: no other fan-out can run between the read and the move.
func (s *Store) FanOut(ctx context.Context, batch int) (int, bool, error) {
	if batch <= 0 {
		return 0, false, nil
	}
	// Only webhooks behind the newest event need the write lock.
	ids, err := queryAll(ctx, s.db, "webhooks to fan out to", func(row rowScanner) (int64, error) {
		var id int64
		return id, row.Scan(&id)
	}, `SELECT id FROM webhooks WHERE cursor_id < (SELECT coalesce(max(id), 0) FROM events) ORDER BY id`)
	if err != nil {
		return 0, false, err
	}
	made, more := 0, false
	for _, id := range ids {
		n := 0
		err := s.tx(ctx, func(tx *txn) error {
			w := &fota.Webhook{ID: id}
			var events string
			var cursor int64
			err := tx.QueryRowContext(ctx, `SELECT events, cursor_id FROM webhooks WHERE id = ?`, id).Scan(&events, &cursor)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // removed meanwhile
			}
			if err != nil {
				return fmt.Errorf("fan out to webhook %d: %w", id, err)
			}
			w.Events = strings.Split(events, ",")
			evs, err := queryAll(ctx, tx, "events to fan out", scanEvent,
				`SELECT id, time_ms, kind, device_id, release_version, session_id, detail, actor, rollout_id, api FROM events WHERE id > ? ORDER BY id LIMIT ?`,
				cursor, batch)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				return nil
			}
			now := s.now()
			for _, e := range evs {
				d, err := fota.NewDelivery(w, e, now)
				if err != nil {
					return err
				}
				if d == nil {
					continue
				}
				_, err = tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, payload, state, next_attempt_ms, created_ms)
					VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, d.ID, d.WebhookID, d.EventID, d.Event, d.Payload, d.State, ms(d.NextAttempt), ms(d.Created))
				if err != nil {
					return fmt.Errorf("fan out event %d to webhook %d: %w", e.ID, id, err)
				}
				n++
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET cursor_id = ? WHERE id = ?`, evs[len(evs)-1].ID, id); err != nil {
				return fmt.Errorf("fan out to webhook %d: move cursor: %w", id, err)
			}
			more = more || len(evs) == batch
			return nil
		})
		if err != nil {
			return made, more, err
		}
		made += n
	}
	return made, more, nil
}

func scanEvent(row rowScanner) (*fota.Event, error) {
	e := &fota.Event{}
	var t int64
	err := row.Scan(&e.ID, &t, &e.Kind, &e.DeviceID, &e.ReleaseVersion, &e.SessionID, &e.Detail, &e.Actor, &e.RolloutID, &e.API)
	e.Time = fromMS(t)
	return e, err
}

const deliveryColumns = `d.id, d.webhook_id, d.event_id, d.event, d.payload, d.state, d.attempts, d.next_attempt_ms, d.lease_until_ms,
	d.last_status, d.last_error, d.last_attempt_ms, d.created_ms, d.delivered_ms`

// scanDelivery reads deliveryColumns, then extra destinations.
func scanDelivery(row rowScanner, extra ...any) (*fota.Delivery, error) {
	d := &fota.Delivery{}
	var next, lease, last, created, delivered int64
	dest := append([]any{&d.ID, &d.WebhookID, &d.EventID, &d.Event, &d.Payload, &d.State, &d.Attempts, &next, &lease,
		&d.LastStatus, &d.LastError, &last, &created, &delivered}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	d.NextAttempt, d.LeaseUntil, d.LastAttempt, d.Created, d.Delivered = fromMS(next), fromMS(lease), fromMS(last), fromMS(created), fromMS(delivered)
	return d, nil
}

// ClaimDeliveries leases due deliveries. The transaction holds SQLite's
// write lock from its start, so two claimers take turns and the second
// sees the first's leases.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*fota.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	// Every replica asks every second: look before taking the write lock.
	var due int
	err := s.fast.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries
		WHERE state = 'pending' AND next_attempt_ms <= ? AND lease_until_ms <= ? LIMIT 1)`, ms(now), ms(now)).Scan(&due)
	if err != nil {
		return nil, fmt.Errorf("look for due deliveries: %w", err)
	}
	if due == 0 {
		return nil, nil
	}
	var out []*fota.Delivery
	err = inTx(ctx, s.fast, func(tx *txn) error {
		var err error
		out, err = queryAll(ctx, tx, "due deliveries", func(row rowScanner) (*fota.Delivery, error) {
			var url, secret string
			d, err := scanDelivery(row, &url, &secret)
			if err == nil {
				d.URL, d.Secret = url, fota.WebhookSecret(secret)
			}
			return d, err
		}, `SELECT `+deliveryColumns+`, w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
			WHERE d.state = 'pending' AND d.next_attempt_ms <= ? AND d.lease_until_ms <= ? ORDER BY d.next_attempt_ms LIMIT ?`,
			ms(now), ms(now), limit)
		if err != nil {
			return err
		}
		until := now.Add(lease)
		for _, d := range out {
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET lease_until_ms = ? WHERE id = ?`, ms(until), d.ID); err != nil {
				return fmt.Errorf("lease delivery: %w", err)
			}
			d.LeaseUntil = until
		}
		return nil
	})
	return out, err
}

// RecordAttempt records an attempt at a pending delivery.
func (s *Store) RecordAttempt(ctx context.Context, id string, a fota.DeliveryAttempt) error {
	var next, delivered time.Time
	switch a.State {
	case fota.DeliveryPending:
		next = a.NextAttempt
	case fota.DeliveryDelivered:
		delivered = a.At
	case fota.DeliveryFailed:
	default:
		return fota.Errorf(fota.EINVALID, "delivery state %q", a.State)
	}
	return inTx(ctx, s.fast, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_attempt_ms = ?, lease_until_ms = 0,
			last_status = ?, last_error = ?, last_attempt_ms = ?, delivered_ms = ? WHERE id = ? AND state = 'pending'`,
			a.State, ms(next), a.Status, a.Error, ms(a.At), ms(delivered), id)
		if err != nil {
			return fmt.Errorf("record delivery attempt: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var state string
		err = tx.QueryRowContext(ctx, `SELECT state FROM webhook_deliveries WHERE id = ?`, id).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no delivery %s", id)
		}
		if err != nil {
			return fmt.Errorf("record delivery attempt: %w", err)
		}
		return fota.Errorf(fota.ECONFLICT, "delivery %s is %s already", id, state)
	})
}

// Deliveries lists a webhook's deliveries, newest event first.
func (s *Store) Deliveries(ctx context.Context, webhookID int64, limit int) ([]*fota.Delivery, error) {
	if limit <= 0 {
		limit = 100
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM webhooks WHERE id = ?`, webhookID).Scan(&n); err != nil {
		return nil, fmt.Errorf("read webhook: %w", err)
	}
	if n == 0 {
		return nil, fota.Errorf(fota.ENOTFOUND, "no webhook %d", webhookID)
	}
	return queryAll(ctx, s.db, "deliveries", func(row rowScanner) (*fota.Delivery, error) { return scanDelivery(row) },
		`SELECT `+deliveryColumns+` FROM webhook_deliveries d WHERE d.webhook_id = ? ORDER BY d.event_id DESC LIMIT ?`, webhookID, limit)
}

// PruneDeliveries deletes old ended deliveries.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	res, err := s.fast.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE id IN
		(SELECT id FROM webhook_deliveries WHERE created_ms < ? AND state <> 'pending' ORDER BY created_ms LIMIT ?)`, ms(before), batch)
	if err != nil {
		return 0, fmt.Errorf("prune deliveries: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
