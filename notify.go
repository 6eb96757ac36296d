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
