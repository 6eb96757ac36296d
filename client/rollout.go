package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/ecowatt/fota/protocol"
)

// CreateRollout starts a rollout.
func (a *Admin) CreateRollout(ctx context.Context, req protocol.CreateRollout) (*protocol.Rollout, error) {
	var out protocol.Rollout
	if err := a.doJSON(ctx, "POST", "/v1/admin/rollouts", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollouts lists rollouts, newest first, with their counts.
func (a *Admin) Rollouts(ctx context.Context) ([]protocol.Rollout, error) {
	var out []protocol.Rollout
	return out, a.doJSON(ctx, "GET", "/v1/admin/rollouts", nil, &out)
}

// Rollout reads a rollout with its devices.
func (a *Admin) Rollout(ctx context.Context, id int64) (*protocol.Rollout, error) {
	var out protocol.Rollout
	if err := a.doJSON(ctx, "GET", "/v1/admin/rollouts/"+strconv.FormatInt(id, 10), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RolloutAction pauses, resumes or aborts a rollout.
func (a *Admin) RolloutAction(ctx context.Context, id int64, action, reason string) (*protocol.Rollout, error) {
	var out protocol.Rollout
	path := "/v1/admin/rollouts/" + strconv.FormatInt(id, 10) + "/" + url.PathEscape(action)
	if err := a.doJSON(ctx, "POST", path, protocol.RolloutAction{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetLabels sets and removes a device's labels.
func (a *Admin) SetLabels(ctx context.Context, id string, set map[string]string, remove []string) (*protocol.Device, error) {
	var out protocol.Device
	if err := a.doJSON(ctx, "PATCH", "/v1/admin/devices/"+url.PathEscape(id)+"/labels", protocol.SetLabels{Set: set, Remove: remove}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
