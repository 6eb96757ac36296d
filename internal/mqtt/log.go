package mqtt

import (
	"context"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
)

// quietHandler is mochi's log handler: mochi logs at Info for every
// listener, hook and start, and at Warn for things that happen per
// connection (a short keepalive, a bad packet, a full inflight store) —
// at 10,000 devices, a flood. It passes Warn and above, except those
// per-connection messages, which become Debug.
type quietHandler struct{ inner slog.Handler }

// perConnection are mochi's per-connection Warn messages.
var perConnection = map[string]bool{
	mochi.ErrMinimumKeepalive.Error(): true,
	"error processing packet":         true,
	"client store quota reached":      true,
	"packet ids exhausted":            true,
	"":                                true, // a listener's connection error
}

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && (h.inner.Enabled(ctx, l) || h.inner.Enabled(ctx, slog.LevelDebug))
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	if r.Level < slog.LevelError && perConnection[r.Message] {
		if !h.inner.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.inner.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.inner.WithGroup(name)}
}
