package fota

import "github.com/ecowatt/fota/protocol"

// Notifier wakes devices so they check in now rather than at their next
// timer tick (MQTT push: internal/mqtt). Push is an optimisation only:
// the timer stays, so a notification lost, late or sent to an offline
// device costs nothing but time, and Notify reports no error. It must not
// block on the network: implementations queue and publish in the
// background.
type Notifier interface {
	Notify(deviceIDs []string, n protocol.Notification)
}

// PushStats are a Notifier's counters, which /metrics shows when the
// notifier has them (PushStatser).
type PushStats struct {
	// Connected: the notifier can publish now (a broker in the server
	// always can; a publisher, while its broker connection is up).
	Connected bool
	// Devices is how many devices are connected to a broker in the
	// server; -1 when the broker is another's.
	Devices int64
	// Published counts notifications handed on, Delivered those written
	// to a device's connection (known to a broker in the server only),
	// Dropped those lost (queue full, broker away).
	Published, Delivered, Dropped uint64
}

// PushStatser is a Notifier with counters.
type PushStatser interface {
	PushStats() PushStats
}
