package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

var _ fota.WebhookStore = (*Store)(nil)

// CreateWebhook stores a webhook. Its cursor starts at its own
// transaction: the events of transactions that write after it reach it,
// those of transactions older than it do not.
func (s *Store) CreateWebhook(ctx context.Context, w *fota.Webhook) error {
	if err := fota.PrepareWebhook(w); err != nil {
		return err
	}
	w.Created = s.now().UTC()
	return s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO webhooks (url, events, secret, created_ms, cursor_tx, cursor_id)
			VALUES ($1, $2, $3, $4, pg_current_xact_id(), 0) RETURNING id`,
			w.URL, strings.Join(w.Events, ","), string(w.Secret), ms(w.Created)).Scan(&w.ID)
		if err != nil {
			return fmt.Errorf("create webhook: %w", err)
		}
		return addEvent(ctx, tx, fota.WebhookCreatedEvent(w))
	})
}

// Webhooks lists webhooks with their pending and failed counts.
func (s *Store) Webhooks(ctx context.Context) ([]*fota.Webhook, error) {
	return queryAll(ctx, s.pool, "webhooks", func(row rowScanner) (*fota.Webhook, error) {
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
	return s.tx(ctx, func(tx pgx.Tx) error {
		w := &fota.Webhook{ID: id}
		// The deliveries go with it (ON DELETE CASCADE).
		err := tx.QueryRow(ctx, `DELETE FROM webhooks WHERE id = $1 RETURNING url`, id).Scan(&w.URL)
		if errors.Is(err, pgx.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no webhook %d", id)
		}
		if err != nil {
			return fmt.Errorf("remove webhook: %w", err)
		}
		return addEvent(ctx, tx, fota.WebhookRemovedEvent(w, s.now()))
	})
}

// settled is the condition on an event e that it can be fanned out: its
// transaction is older than every transaction still running, so no event
// before it in (tx, id) order can still commit (see 007_webhooks.sql).
const settled = `e.tx < pg_snapshot_xmin(pg_current_snapshot())`

// FanOut makes the deliveries of new events, one transaction per webhook.
// The webhook's row is locked for the transaction, and a replica that
// finds it locked leaves it to the one fanning out to it: each event
// becomes one delivery however many replicas run this at once.
func (s *Store) FanOut(ctx context.Context, batch int) (int, bool, error) {
	if batch <= 0 {
		return 0, false, nil
	}
	// Only webhooks with settled events after their cursor need a
	// transaction that writes.
	ids, err := queryAll(ctx, s.pool, "webhooks to fan out to", func(row rowScanner) (int64, error) {
		var id int64
		return id, row.Scan(&id)
	}, `SELECT w.id FROM webhooks w WHERE EXISTS
		(SELECT 1 FROM events e WHERE (e.tx, e.id) > (w.cursor_tx, w.cursor_id) AND `+settled+`) ORDER BY w.id`)
	if err != nil {
		return 0, false, err
	}
	made, more := 0, false
	for _, id := range ids {
		n := 0
		err := s.tx(ctx, func(tx pgx.Tx) error {
			w := &fota.Webhook{ID: id}
			var events, cursorTx string
			var cursorID int64
			err := tx.QueryRow(ctx, `SELECT events, cursor_tx::text, cursor_id FROM webhooks WHERE id = $1 FOR UPDATE SKIP LOCKED`, id).
				Scan(&events, &cursorTx, &cursorID)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // removed meanwhile, or another replica is at it
			}
			if err != nil {
				return fmt.Errorf("fan out to webhook %d: %w", id, err)
			}
			w.Events = strings.Split(events, ",")
			type settledEvent struct {
				*fota.Event
				tx string
			}
			evs, err := queryAll(ctx, tx, "events to fan out", func(row rowScanner) (settledEvent, error) {
				e := settledEvent{Event: &fota.Event{}}
				var t int64
				err := row.Scan(&e.ID, &e.tx, &t, &e.Kind, &e.DeviceID, &e.ReleaseVersion, &e.SessionID, &e.Detail, &e.Actor, &e.RolloutID, &e.API)
				e.Time = fromMS(t)
				return e, err
			}, `SELECT e.id, e.tx::text, e.time_ms, e.kind, e.device_id, e.release_version, e.session_id, e.detail, e.actor, e.rollout_id, e.api
				FROM events e WHERE (e.tx, e.id) > ($1::text::xid8, $2) AND `+settled+` ORDER BY e.tx, e.id LIMIT $3`,
				cursorTx, cursorID, batch)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				return nil
			}
			now := s.now()
			b := &pgx.Batch{}
			for _, e := range evs {
				d, err := fota.NewDelivery(w, e.Event, now)
				if err != nil {
					return err
				}
				if d != nil {
					b.Queue(`INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, payload, state, next_attempt_ms, created_ms)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, d.ID, d.WebhookID, d.EventID, d.Event, d.Payload, d.State, ms(d.NextAttempt), ms(d.Created))
				}
			}
			last := evs[len(evs)-1]
			b.Queue(`UPDATE webhooks SET cursor_tx = $1::text::xid8, cursor_id = $2 WHERE id = $3`, last.tx, last.ID, id)
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return fmt.Errorf("fan out to webhook %d: %w", id, err)
			}
			n = b.Len() - 1
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

// ClaimDeliveries leases due deliveries. Rows another replica is leasing
// right now are skipped, and a row leased since this statement's snapshot
// is checked again under its lock, so no delivery is leased twice.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*fota.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	until := now.Add(lease)
	out, err := queryAll(ctx, s.fast, "due deliveries", func(row rowScanner) (*fota.Delivery, error) {
		var url, secret string
		d, err := scanDelivery(row, &url, &secret)
		if err == nil {
			d.URL, d.Secret = url, fota.WebhookSecret(secret)
		}
		return d, err
	}, `WITH due AS (SELECT id FROM webhook_deliveries
			WHERE state = 'pending' AND next_attempt_ms <= $1 AND lease_until_ms <= $1
			ORDER BY next_attempt_ms LIMIT $3 FOR UPDATE SKIP LOCKED)
		UPDATE webhook_deliveries d SET lease_until_ms = $2 FROM due, webhooks w
		WHERE d.id = due.id AND w.id = d.webhook_id
		RETURNING `+deliveryColumns+`, w.url, w.secret`, ms(now), ms(until), limit)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *fota.Delivery) int { return a.NextAttempt.Compare(b.NextAttempt) })
	return out, nil
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
	tag, err := s.fast.Exec(ctx, `UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_ms = $2, lease_until_ms = 0,
		last_status = $3, last_error = $4, last_attempt_ms = $5, delivered_ms = $6 WHERE id = $7 AND state = 'pending'`,
		a.State, ms(next), a.Status, a.Error, ms(a.At), ms(delivered), id)
	if err != nil {
		return fmt.Errorf("record delivery attempt: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var state string
	err = s.fast.QueryRow(ctx, `SELECT state FROM webhook_deliveries WHERE id = $1`, id).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return fota.Errorf(fota.ENOTFOUND, "no delivery %s", id)
	}
	if err != nil {
		return fmt.Errorf("record delivery attempt: %w", err)
	}
	return fota.Errorf(fota.ECONFLICT, "delivery %s is %s already", id, state)
}

// Deliveries lists a webhook's deliveries, newest event first.
func (s *Store) Deliveries(ctx context.Context, webhookID int64, limit int) ([]*fota.Delivery, error) {
	if limit <= 0 {
		limit = 100
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1)`, webhookID).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read webhook: %w", err)
	}
	if !exists {
		return nil, fota.Errorf(fota.ENOTFOUND, "no webhook %d", webhookID)
	}
	return queryAll(ctx, s.pool, "deliveries", func(row rowScanner) (*fota.Delivery, error) { return scanDelivery(row) },
		`SELECT `+deliveryColumns+` FROM webhook_deliveries d WHERE d.webhook_id = $1 ORDER BY d.event_id DESC LIMIT $2`, webhookID, limit)
}

// PruneDeliveries deletes old ended deliveries; replicas pruning at once
// each take rows the others have not locked.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	tag, err := s.fast.Exec(ctx, `DELETE FROM webhook_deliveries WHERE id IN
		(SELECT id FROM webhook_deliveries WHERE created_ms < $1 AND state <> 'pending' ORDER BY created_ms LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		ms(before), batch)
	if err != nil {
		return 0, fmt.Errorf("prune deliveries: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
