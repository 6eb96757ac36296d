package postgres

import (
	"context"
	"errors"

	"github.com/ecowatt/fota"
)

// Placeholders until the delta tables land (issue 18): replaced in the
// next commits.
var errNoDeltas = errors.New("delta artifacts are not stored yet")

func (s *Store) DeltaFailures(ctx context.Context, deviceID string, releaseID int64) ([]string, error) {
	return nil, errNoDeltas
}

func (s *Store) Traffic(ctx context.Context, f fota.TrafficFilter) (fota.Traffic, error) {
	return fota.Traffic{}, errNoDeltas
}
