package agent

import (
	"errors"
	"fmt"
)

// ImageState is the state of an app slot, as ESP-IDF's otadata keeps it.
type ImageState string

const (
	ImageEmpty         ImageState = "empty"          // erased, or being written
	ImageNew           ImageState = "new"            // written and verified; boots next, not booted yet
	ImagePendingVerify ImageState = "pending-verify" // booted, not yet confirmed by its self-test
	ImageValid         ImageState = "valid"          // confirmed
	ImageInvalid       ImageState = "invalid"        // failed its self-test, or was not confirmed in time
	ImageAborted       ImageState = "aborted"        // found damaged at boot
)

// Image describes what a slot holds. SHA256 is the signed plaintext digest:
// the boot step checks the slot against it before running it.
type Image struct {
	Version         string   `json:"version"`
	SecurityCounter uint32   `json:"security_counter"`
	Size            int64    `json:"size"`
	SHA256          [32]byte `json:"sha256"`
}

// SlotStatus is one slot's state and image.
type SlotStatus struct {
	State ImageState `json:"state"`
	Image Image      `json:"image"`
}

// Rollback is a rollback the boot step or the running image performed,
// kept until the agent has queued its report.
type Rollback struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// BootInfo is what the boot step decided.
type BootInfo struct {
	Slot     int       // the slot now running
	Image    Image     // its image
	Trial    bool      // pending verification: the image must confirm itself
	Attempts int       // boots of this trial image so far
	Rollback *Rollback // a rollback not yet acknowledged
}

// Status is the whole boot state. The security counter is not part of it:
// it outlives the boot state (see Slots.SecurityCounter).
type Status struct {
	Slots    [2]SlotStatus
	Running  int
	Next     int // the slot the next boot tries first
	Rejected []string
}

// Slots is a device's two app slots and their boot control, modelled on
// ESP-IDF's otadata with rollback enabled, plus a small key-value store
// (NVS) for the agent's own state. Implementations keep every change
// atomic: a power cut at any moment leaves either the old or the new state.
type Slots interface {
	// Boot runs the boot step: it picks the slot to run (a new image gets a
	// limited number of trial boots, then the previous valid slot runs
	// again), checks the image against its recorded SHA-256, and persists
	// the decision. It must be called once per power-up, before anything else.
	Boot() (BootInfo, error)
	// Status returns the boot state.
	Status() (Status, error)
	// SlotSize is the capacity of each slot in bytes.
	SlotSize() int64

	// Erase empties the slot that is not running, for a new image.
	Erase(slot int) error
	// WriteAt writes to a slot that is not running.
	WriteAt(slot int, p []byte, off int64) error
	// ReadAt reads from any slot.
	ReadAt(slot int, p []byte, off int64) (int, error)
	// Sync makes the slot's writes durable.
	Sync(slot int) error

	// SetPending marks a written slot as holding img, to be booted next on trial.
	SetPending(slot int, img Image) error
	// Confirm marks the running trial image valid and raises the stored
	// security counter to its own.
	Confirm() error
	// SecurityCounter is the device's anti-rollback counter, kept apart
	// from the boot state as an ESP32 keeps it in eFuses: it only rises
	// (when an image is confirmed), and losing or reformatting the boot
	// state does not lower it. An error (ErrCounterUnreadable) means it
	// cannot be known; the agent then refuses every update rather than
	// judge offers against a guess.
	SecurityCounter() (uint32, error)
	// Reject marks the running trial image invalid, so that the next boot
	// runs the previous valid slot, and records the rollback for reporting.
	Reject(reason string) error
	// AckRollback forgets the recorded rollback once it has been reported.
	AckRollback() error

	// LoadNVS returns a stored value, or ErrNoValue.
	LoadNVS(key string) ([]byte, error)
	// SaveNVS stores a value atomically.
	SaveNVS(key string, value []byte) error
	// DeleteNVS removes a value; removing an absent one is not an error.
	DeleteNVS(key string) error
}

// Errors of Slots implementations.
var (
	ErrNoValue       = errors.New("no such value")
	ErrRunningSlot   = errors.New("the running slot cannot be changed")
	ErrNotOnTrial    = errors.New("the running image is not on trial")
	ErrNoBootable    = errors.New("no bootable image")
	ErrImageTooLarge = errors.New("image does not fit the slot")
	// ErrCounterUnreadable: the stored security counter is damaged beyond
	// what its redundancy recovers, so no value read from it is safe.
	ErrCounterUnreadable = errors.New("security counter unreadable")
)

// Other returns the other slot.
func Other(slot int) int { return 1 - slot }

// CheckSlot validates a slot number, for implementations.
func CheckSlot(slot int) error {
	if slot != 0 && slot != 1 {
		return fmt.Errorf("slot %d does not exist", slot)
	}
	return nil
}
