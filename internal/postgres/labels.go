package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

var _ fota.LabelStore = (*Store)(nil)

// SetDeviceLabels sets and removes a device's labels and records it.
func (s *Store) SetDeviceLabels(ctx context.Context, id string, set map[string]string, remove []string) (*fota.Device, error) {
	var d *fota.Device
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// FOR UPDATE: two operators editing one device's labels on two
		// replicas each apply their edit to the other's result.
		cur, err := scanDevice(tx.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !cur.Removed.IsZero() {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
		}
		if err != nil {
			return fmt.Errorf("set labels of %s: %w", id, err)
		}
		labels, detail, err := fota.EditLabels(cur.Labels, set, remove)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE devices SET labels = $1 WHERE id = $2`, encodeLabels(labels), id); err != nil {
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
	tag, err := s.fast.Exec(ctx, `UPDATE devices SET chip = $1, slot_size = $2, free_flash = $3, agent_version = $4, inventory_ms = $5
		WHERE id = $6 AND removed_ms = 0 AND (chip, slot_size, free_flash, agent_version) <> ($1, $2, $3, $4)`,
		inv.Chip, inv.SlotSize, inv.FreeFlash, inv.AgentVersion, ms(inv.Updated), id)
	if err != nil {
		return fmt.Errorf("set inventory of %s: %w", id, err)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	var known bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND removed_ms = 0)`, id).Scan(&known); err != nil {
		return fmt.Errorf("set inventory of %s: %w", id, err)
	}
	if !known {
		return fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
	}
	return nil // unchanged
}
