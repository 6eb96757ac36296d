package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

const deviceColumns = `id, hardware, version, security_counter, psk, pinned_version, created_ms, last_seen_ms`

func scanDevice(row rowScanner) (*fota.Device, error) {
	d := &fota.Device{}
	var psk []byte
	var created, seen int64
	if err := row.Scan(&d.ID, &d.Hardware, &d.Version, &d.SecurityCounter, &psk, &d.PinnedVersion, &created, &seen); err != nil {
		return nil, err
	}
	if len(psk) != len(d.PSK) {
		return nil, fmt.Errorf("device %s has a %d-byte key", d.ID, len(psk))
	}
	copy(d.PSK[:], psk)
	d.Created, d.LastSeen = fromMS(created), fromMS(seen)
	return d, nil
}

// CreateDevice stores a device and its device-added event.
func (s *Store) CreateDevice(ctx context.Context, d *fota.Device) error {
	d.Created = s.now().UTC()
	return s.tx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (id, hardware, version, security_counter, psk, pinned_version, created_ms)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, d.ID, d.Hardware, d.Version, d.SecurityCounter, d.PSK[:], d.PinnedVersion, ms(d.Created))
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "device %s exists already", d.ID)
		}
		if err != nil {
			return fmt.Errorf("create device: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: d.Created, Kind: fota.EventDeviceAdded, DeviceID: d.ID, ReleaseVersion: d.Version,
			Detail: "hardware " + d.Hardware})
	})
}

// Device returns a device.
func (s *Store) Device(ctx context.Context, id string) (*fota.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
	return one(d, err, fota.Errorf(fota.ENOTFOUND, "unknown device %q", id), "device")
}

// Devices lists devices by id.
func (s *Store) Devices(ctx context.Context) ([]*fota.Device, error) {
	return queryAll(ctx, s.db, "devices", scanDevice, `SELECT `+deviceColumns+` FROM devices ORDER BY id`)
}

// DeviceSeen records a device request.
func (s *Store) DeviceSeen(ctx context.Context, id, version string, at time.Time) error {
	res, err := s.fast.ExecContext(ctx, `UPDATE devices SET last_seen_ms = ?, version = CASE WHEN ? = '' THEN version ELSE ? END WHERE id = ?`,
		ms(at), version, version, id)
	if err != nil {
		return fmt.Errorf("record device seen: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
	}
	return nil
}

// PinDevice pins a device to a version, or unpins it.
func (s *Store) PinDevice(ctx context.Context, id, version string) error {
	return s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET pinned_version = ? WHERE id = ?`, version, id)
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

// RejectedReleases lists releases the device rolled back from.
func (s *Store) RejectedReleases(ctx context.Context, deviceID string) ([]int64, error) {
	return queryAll(ctx, s.db, "rejected releases", func(row rowScanner) (id int64, err error) { return id, row.Scan(&id) },
		`SELECT DISTINCT release_id FROM sessions WHERE device_id = ? AND state = ? AND release_id IS NOT NULL`, deviceID, fota.SessionRolledBack)
}
