//go:build !unix

package mqtt

import "log/slog"

// socketLimit is want: other systems' limits are not read.
func socketLimit(want int, _ *slog.Logger) int { return want }
