package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ecowatt/fota"
)

var _ fota.LabelStore = (*Store)(nil)

// SetDeviceLabels sets and removes a device's labels and records it.
func (s *Store) SetDeviceLabels(ctx context.Context, id string, set map[string]string, remove []string) (*fota.Device, error) {
	var d *fota.Device
	err := s.tx(ctx, func(tx *txn) error {
		cur, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) || err == nil && !cur.Removed.IsZero() {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
		}
		if err != nil {
			return fmt.Errorf("set labels of %s: %w", id, err)
		}
		labels, detail, err := fota.EditLabels(cur.Labels, set, remove)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET labels = ? WHERE id = ?`, encodeLabels(labels), id); err != nil {
			return fmt.Errorf("set labels of %s: %w", id, err)
		}
		cur.Labels, d = labels, cur
		return addEvent(ctx, tx, &fota.Event{Time: s.now(), Kind: fota.EventLabels, DeviceID: id, Detail: detail})
	})
	return d, err
}

// SetInventory stores what a device reported about itself. A report that
// changes nothing writes nothing, so Inventory.Updated says when it last
// changed (and check-ins repeating it cost no write).
func (s *Store) SetInventory(ctx context.Context, id string, inv fota.Inventory) error {
	if inv.Updated.IsZero() {
		inv.Updated = s.now()
	}
	res, err := s.fast.ExecContext(ctx, `UPDATE devices SET chip = ?, slot_size = ?, free_flash = ?, agent_version = ?, inventory_ms = ?
		WHERE id = ? AND removed_ms = 0 AND NOT (chip = ? AND slot_size = ? AND free_flash = ? AND agent_version = ?)`,
		inv.Chip, inv.SlotSize, inv.FreeFlash, inv.AgentVersion, ms(inv.Updated), id, inv.Chip, inv.SlotSize, inv.FreeFlash, inv.AgentVersion)
	if err != nil {
		return fmt.Errorf("set inventory of %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	var known int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = ? AND removed_ms = 0`, id).Scan(&known); err != nil {
		return fmt.Errorf("set inventory of %s: %w", id, err)
	}
	if known == 0 {
		return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
	}
	return nil // unchanged
}
