package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

const deviceColumns = `id, hardware, version, security_counter, psk, pinned_version, api, created_ms, last_seen_ms, removed_ms,
	labels, chip, slot_size, free_flash, agent_version, inventory_ms`

func scanDevice(row rowScanner) (*fota.Device, error) {
	d := &fota.Device{}
	var psk []byte
	var labels string
	var created, seen, removed, inventory int64
	inv := &d.Inventory
	if err := row.Scan(&d.ID, &d.Hardware, &d.Version, &d.SecurityCounter, &psk, &d.PinnedVersion, &d.API, &created, &seen, &removed,
		&labels, &inv.Chip, &inv.SlotSize, &inv.FreeFlash, &inv.AgentVersion, &inventory); err != nil {
		return nil, err
	}
	if len(psk) != len(d.PSK) {
		return nil, fmt.Errorf("device %s has a %d-byte key", d.ID, len(psk))
	}
	copy(d.PSK[:], psk)
	d.Created, d.LastSeen, d.Removed, inv.Updated = fromMS(created), fromMS(seen), fromMS(removed), fromMS(inventory)
	var err error
	if d.Labels, err = decodeLabels(labels); err != nil {
		return nil, fmt.Errorf("device %s: %w", d.ID, err)
	}
	return d, nil
}

// decodeLabels reads the labels column, never returning a nil map.
func decodeLabels(text string) (map[string]string, error) {
	labels := map[string]string{}
	if text == "{}" {
		return labels, nil // most devices: skip the decoder on every read
	}
	if err := json.Unmarshal([]byte(text), &labels); err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	return labels, nil
}

// encodeLabels writes the labels column: a JSON object, keys sorted.
func encodeLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(labels) // strings only: cannot fail
	return string(b)
}

// CreateDevice stores a device and its device-added event.
func (s *Store) CreateDevice(ctx context.Context, d *fota.Device) error {
	d.Created = s.now().UTC()
	if d.API == "" {
		d.API = fota.APINative
	}
	if !fota.ValidAPIPolicy(d.API) {
		return fota.Errorf(fota.EINVALID, "API policy %q: want native, ecowatt or both", d.API)
	}
	if err := fota.ValidLabels(d.Labels); err != nil {
		return err
	}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	return s.tx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (id, hardware, version, security_counter, psk, pinned_version, api, created_ms, labels)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, d.ID, d.Hardware, d.Version, d.SecurityCounter, d.PSK[:], d.PinnedVersion, d.API, ms(d.Created),
			encodeLabels(d.Labels))
		if isUnique(err) {
			var removed int64
			if tx.QueryRowContext(ctx, `SELECT removed_ms FROM devices WHERE id = ?`, d.ID).Scan(&removed) == nil && removed > 0 {
				return fota.DeviceRemovedConflict(d.ID, fromMS(removed))
			}
			return fota.Errorf(fota.ECONFLICT, "device %s exists already", d.ID)
		}
		if err != nil {
			return fmt.Errorf("create device: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: d.Created, Kind: fota.EventDeviceAdded, DeviceID: d.ID, ReleaseVersion: d.Version,
			Detail: fota.DeviceAddedDetail(d)})
	})
}

// Device returns a device.
func (s *Store) Device(ctx context.Context, id string) (*fota.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
	return one(d, err, fota.Errorf(fota.ENOTFOUND, "unknown device %q", id), "device")
}

// Devices lists devices by id.
func (s *Store) Devices(ctx context.Context) ([]*fota.Device, error) {
	return queryAll(ctx, s.db, "devices", scanDevice, `SELECT `+deviceColumns+` FROM devices WHERE removed_ms = 0 ORDER BY id`)
}

// DeviceSeen records a device request. It is group-committed with the
// other check-ins of the moment (batch.go).
func (s *Store) DeviceSeen(ctx context.Context, id, version string, inv *fota.Inventory, at time.Time) error {
	return s.seen.do(ctx, seenWrite{id: id, version: version, inv: inv, at: ms(at)})
}

type seenWrite struct {
	id, version string
	inv         *fota.Inventory
	at          int64
}

func (s *Store) writeSeen(batch []seenWrite) []error {
	results := make([]error, len(batch))
	err := inTx(context.Background(), s.fast, func(tx *txn) error {
		for i, w := range batch {
			var res sql.Result
			var err error
			if w.inv == nil {
				res, err = tx.ExecContext(context.Background(), `UPDATE devices SET last_seen_ms = ?, version = CASE WHEN ? = '' THEN version ELSE ? END WHERE id = ?`,
					w.at, w.version, w.version, w.id)
			} else {
				inv := w.inv
				res, err = tx.ExecContext(context.Background(), `UPDATE devices SET last_seen_ms = ?, version = CASE WHEN ? = '' THEN version ELSE ? END,
			inventory_ms = CASE WHEN chip = ? AND slot_size = ? AND free_flash = ? AND agent_version = ? THEN inventory_ms ELSE ? END,
			chip = ?, slot_size = ?, free_flash = ?, agent_version = ? WHERE id = ?`,
					w.at, w.version, w.version, inv.Chip, inv.SlotSize, inv.FreeFlash, inv.AgentVersion, w.at,
					inv.Chip, inv.SlotSize, inv.FreeFlash, inv.AgentVersion, w.id)
			}
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				results[i] = fota.Errorf(fota.ENOTFOUND, "unknown device %q", w.id)
			}
		}
		return nil
	})
	if err != nil {
		return failAll(len(batch), fmt.Errorf("record device seen: %w", err))
	}
	return results
}

// PinDevice pins a device to a version, or unpins it.
func (s *Store) PinDevice(ctx context.Context, id, version string) error {
	return s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET pinned_version = ? WHERE id = ? AND removed_ms = 0`, version, id)
		if err != nil {
			return fmt.Errorf("pin device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
		}
		detail := "pinned to " + version
		if version == "" {
			detail = "unpinned"
		}
		return addEvent(ctx, tx, &fota.Event{Time: s.now(), Kind: fota.EventAssigned, DeviceID: id, ReleaseVersion: version, Detail: detail})
	})
}

// SetDeviceAPI sets a device's API policy, abandoning its active
// sessions on an API the policy no longer allows.
func (s *Store) SetDeviceAPI(ctx context.Context, id, policy string) ([]*fota.Session, error) {
	if !fota.ValidAPIPolicy(policy) {
		return nil, fota.Errorf(fota.EINVALID, "API policy %q: want native, ecowatt or both", policy)
	}
	var ended []*fota.Session
	err := s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET api = ? WHERE id = ? AND removed_ms = 0`, policy, id)
		if err != nil {
			return fmt.Errorf("set API policy: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
		}
		// The gate tells EcoWatt-only members apart by this.
		if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET legacy = ? = ? WHERE device_id = ?`, policy, fota.APIEcoWatt, id); err != nil {
			return fmt.Errorf("set API policy: rollout memberships: %w", err)
		}
		d := &fota.Device{API: policy}
		active, err := queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions WHERE device_id = ? AND state IN `+activeStates, id)
		if err != nil {
			return err
		}
		for _, sess := range active {
			if !d.Allows(sess.API) {
				ended = append(ended, sess)
			}
		}
		if len(ended) > 0 {
			if err := s.abandon(ctx, tx, `device_id = ? AND api = ?`, "the device's API policy no longer allows the "+ended[0].API+" API", id, ended[0].API); err != nil {
				return err
			}
		}
		return addEvent(ctx, tx, &fota.Event{Time: s.now(), Kind: fota.EventAPIPolicy, DeviceID: id, Detail: "API policy " + policy})
	})
	return ended, err
}

// RejectedReleases lists releases the device rolled back from or refused
// on the native API.
func (s *Store) RejectedReleases(ctx context.Context, deviceID string) ([]int64, error) {
	return queryAll(ctx, s.db, "rejected releases", func(row rowScanner) (id int64, err error) { return id, row.Scan(&id) },
		`SELECT DISTINCT release_id FROM sessions WHERE device_id = ? AND state IN (?, ?) AND api = ? AND release_id IS NOT NULL`,
		deviceID, fota.SessionRolledBack, fota.SessionRefused, fota.APINative)
}

// Backoffs lists the device's backoffs.
func (s *Store) Backoffs(ctx context.Context, deviceID string) ([]*fota.Backoff, error) {
	return queryAll(ctx, s.db, "backoffs", func(row rowScanner) (*fota.Backoff, error) {
		b := &fota.Backoff{}
		var until int64
		err := row.Scan(&b.DeviceID, &b.ReleaseID, &b.ReleaseVersion, &b.Failures, &until)
		b.Until = fromMS(until)
		return b, err
	}, `SELECT b.device_id, b.release_id, r.version, b.failures, b.until_ms FROM backoffs b JOIN releases r ON r.id = b.release_id
		WHERE b.device_id = ? ORDER BY b.release_id`, deviceID)
}

// ClearBackoffs deletes the device's backoffs.
func (s *Store) ClearBackoffs(ctx context.Context, deviceID string) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *txn) error {
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ?`, deviceID).Scan(&exists); err != nil {
			return fmt.Errorf("clear backoffs: %w", err)
		}
		if exists == 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", deviceID)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM backoffs WHERE device_id = ?`, deviceID)
		if err != nil {
			return fmt.Errorf("clear backoffs: %w", err)
		}
		n, _ = res.RowsAffected()
		return addEvent(ctx, tx, &fota.Event{Time: s.now(), Kind: fota.EventBackoffClear, DeviceID: deviceID,
			Detail: fmt.Sprintf("%d held-back release(s) offered again", n)})
	})
	return int(n), err
}

// RemoveDevice marks a device removed and ends its active sessions.
func (s *Store) RemoveDevice(ctx context.Context, id string) ([]*fota.Session, error) {
	var ended []*fota.Session
	err := s.tx(ctx, func(tx *txn) error {
		now := s.now()
		res, err := tx.ExecContext(ctx, `UPDATE devices SET removed_ms = ? WHERE id = ? AND removed_ms = 0`, ms(now), id)
		if err != nil {
			return fmt.Errorf("remove device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
		}
		if ended, err = queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions WHERE device_id = ? AND state IN `+activeStates, id); err != nil {
			return err
		}
		if err := s.abandon(ctx, tx, `device_id = ?`, "the device was removed", id); err != nil {
			return err
		}
		// Memberships that ended before (superseded) keep saying so.
		if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, updated_ms = ? WHERE device_id = ? AND state NOT IN `+endedMembers,
			fota.MemberRemoved, ms(now), id); err != nil {
			return fmt.Errorf("remove device from its rollouts: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM backoffs WHERE device_id = ?`, id); err != nil {
			return fmt.Errorf("remove device: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventDeviceRemoved, DeviceID: id,
			Detail: fmt.Sprintf("removed; %d update session(s) ended", len(ended))})
	})
	return ended, err
}
