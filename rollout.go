package fota

import (
	"context"
	"time"
)

// Rollout states. A rollout offers its release only while running or
// completed (completed: the last wave soaked and passed its gate; devices
// that were offline still get the release when they check in). Scheduled,
// paused and halted rollouts offer nothing but still hold their devices;
// aborted and completed ones no longer do (a new rollout takes their
// devices without --supersede).
const (
	RolloutScheduled = "scheduled" // created, its first wave not yet open
	RolloutRunning   = "running"
	RolloutPaused    = "paused"    // by an operator
	RolloutHalted    = "halted"    // by its health gate; an operator may resume it
	RolloutAborted   = "aborted"   // by an operator, or superseded as a whole
	RolloutCompleted = "completed" // every wave open and passed
)

// RolloutStates are the rollout states, in the order above.
var RolloutStates = []string{RolloutScheduled, RolloutRunning, RolloutPaused, RolloutHalted, RolloutAborted, RolloutCompleted}

// RolloutHolds reports whether a rollout in state keeps its devices from
// other rollouts: a new rollout that overlaps it needs --supersede.
func RolloutHolds(state string) bool {
	return state == RolloutScheduled || state == RolloutRunning || state == RolloutPaused || state == RolloutHalted
}

// RolloutOffers reports whether a rollout in state offers its release to
// the devices of its open waves.
func RolloutOffers(state string) bool { return state == RolloutRunning || state == RolloutCompleted }

// Rollout is a release going out to a set of devices in waves, each wave
// opening once the one before soaked and passed the health gate.
type Rollout struct {
	ID             int64
	ReleaseID      int64
	ReleaseVersion string // filled in by reads
	Hardware       string
	// The target: Selector (labels, "" for none) and DeviceIDs (nil for
	// none) narrow the devices of Hardware; neither means all of them.
	Selector  string
	DeviceIDs []string
	// Waves is the wave spec as given ("10%,50%,100%", "5,50,all"); WaveEnds
	// are the cumulative member counts at creation, one per wave.
	Waves    string
	WaveEnds []int
	Soak     time.Duration
	// The health gate. MaxFailuresPercent < 0 and MaxFailures < 0 mean no
	// limit of that kind.
	MaxFailuresPercent float64
	MaxFailures        int
	MinOutcomes        int
	SilentTimeout      time.Duration
	Windows            []string // maintenance windows as given; nil: any time
	Start              time.Time
	State              string
	Wave               int // the highest open wave, 1-based; 0 before the first opens
	WaveOpened         time.Time
	// GateBase is how many failures an operator accepted by resuming a
	// halted rollout: the gate counts only failures beyond it.
	GateBase int
	Reason   string // why it is halted, paused, aborted
	Created  time.Time
	Updated  time.Time
}

// Member states: where a device stands in a rollout. Stores keep them in
// step with the device's sessions for the rollout, in the same
// transaction; "downloading" and "silent" are worked out on reads.
const (
	MemberPending     = "pending"     // not offered yet (or its session ended without an outcome)
	MemberOffered     = "offered"     // a session is open
	MemberDownloading = "downloading" // (reads) offered, and chunks were served
	MemberSilent      = "silent"      // (reads) offered longer than the silent timeout, no outcome
	MemberConfirmed   = "confirmed"   // confirmed the release after its self-test
	MemberFailed      = "failed"      // rolled back, failed, refused or not applied
	MemberSuperseded  = "superseded"  // taken over by a newer rollout
	MemberRemoved     = "removed"     // the device was removed
)

// MemberStateFor is the member state a session's move to state gives its
// device: the one rule both stores apply. "" leaves the member as it is.
func MemberStateFor(state string) string {
	switch state {
	case SessionConfirmed:
		return MemberConfirmed
	case SessionRolledBack, SessionFailed, SessionRefused, SessionNotApplied:
		return MemberFailed
	case SessionAbandoned:
		return MemberPending
	}
	return ""
}

// RolloutMember is one device of a rollout.
type RolloutMember struct {
	RolloutID int64
	DeviceID  string
	Wave      int // 1-based, fixed at creation (or when the device joined)
	State     string
	Reason    string    // the session's reason for a failure
	SessionID string    // the last session opened for the rollout, "" if none
	Offered   time.Time // when that session opened
	Updated   time.Time
}

// WaveTally counts one wave's members by state. Offered includes
// Downloading and Silent, which are offered members seen more closely.
type WaveTally struct {
	Wave                                   int
	Members                                int
	Pending, Offered, Downloading, Silent  int
	Confirmed, Failed, Superseded, Removed int
}

// RolloutTransition moves a rollout from one position (state and wave) to
// another, only if it is still where the caller saw it: replicas racing to
// open a wave or halt do it once.
type RolloutTransition struct {
	FromState string
	FromWave  int
	State     string
	Wave      int // a change sets WaveOpened to now
	Reason    string
	GateBase  int
	// Event is the event kind recorded, with Detail.
	Event  string
	Detail string
	// EndSessions ends the rollout's active sessions as abandoned with
	// Reason (a halt, an abort): their devices get 410 and keep the image
	// they run.
	EndSessions bool
}

// RolloutStore keeps rollouts and their members.
type RolloutStore interface {
	// CreateRollout stores r (ID, Created, Updated set; State as given)
	// and its members with a rollout-created event. In the same
	// transaction it checks the members against the rollouts that hold
	// them (RolloutHolds, same hardware): if any overlap, it fails with
	// ECONFLICT naming those rollouts and how many devices overlap, unless
	// supersede, when those memberships end as superseded (a rollout left
	// with no member that is not superseded or removed ends as aborted,
	// with a rollout-superseded event). Memberships in rollouts that no
	// longer hold (completed, aborted) are superseded silently. Durable.
	// Errors: ENOTFOUND if the release is gone; EGONE if it was withdrawn.
	CreateRollout(ctx context.Context, r *Rollout, members []*RolloutMember, supersede bool) error
	// Rollout returns a rollout. Errors: ENOTFOUND.
	Rollout(ctx context.Context, id int64) (*Rollout, error)
	// Rollouts lists rollouts, newest first.
	Rollouts(ctx context.Context) ([]*Rollout, error)
	// DeviceRollout returns the device's current membership, the newest
	// that is not superseded or removed, with its rollout. Errors:
	// ENOTFOUND if it is in none.
	DeviceRollout(ctx context.Context, deviceID string) (*Rollout, *RolloutMember, error)
	// RolloutMembers lists a rollout's members by wave, then device id;
	// offered members whose session was served chunks read as downloading,
	// and those offered before silentBefore as silent.
	RolloutMembers(ctx context.Context, id int64, silentBefore time.Time) ([]*RolloutMember, error)
	// RolloutTally counts a rollout's members per wave (all waves, in
	// order), with the same reading of downloading and silent.
	RolloutTally(ctx context.Context, id int64, silentBefore time.Time) ([]WaveTally, error)
	// JoinRollout adds a device to a rollout after its creation (it was
	// registered or labelled since), unless it is a member already or in
	// another rollout of the hardware that holds it; it reports whether
	// it joined. Durable.
	JoinRollout(ctx context.Context, m *RolloutMember) (bool, error)
	// TransitionRollout applies t if the rollout is still at t.FromState
	// and t.FromWave, with t's event; it returns the sessions it ended.
	// Durable. Errors: ENOTFOUND; ECONFLICT if the rollout moved.
	TransitionRollout(ctx context.Context, id int64, t RolloutTransition) ([]*Session, error)
}

// Inventory is what a device reports about itself on authenticated
// check-ins; stored and shown, never trusted for a decision.
type Inventory struct {
	Chip         string
	SlotSize     int64
	FreeFlash    int64
	AgentVersion string
	Updated      time.Time // when it last changed
}

// LabelStore keeps device labels and inventory.
type LabelStore interface {
	// SetDeviceLabels sets and removes labels of a device and records it;
	// it returns the device as changed. Durable. Errors: ENOTFOUND
	// (removed devices too); EINVALID for a label ValidLabel refuses.
	SetDeviceLabels(ctx context.Context, id string, set map[string]string, remove []string) (*Device, error)
	// SetInventory stores what a device reported about itself. Fast.
	// Errors: ENOTFOUND.
	SetInventory(ctx context.Context, id string, inv Inventory) error
}

// Rollout event kinds (Event.RolloutID names the rollout).
const (
	EventRolloutCreated    = "rollout-created"
	EventRolloutWaveOpened = "rollout-wave-opened"
	EventRolloutPaused     = "rollout-paused"
	EventRolloutResumed    = "rollout-resumed"
	EventRolloutHalted     = "rollout-halted"
	EventRolloutAborted    = "rollout-aborted"
	EventRolloutCompleted  = "rollout-completed"
	EventRolloutSuperseded = "rollout-superseded"
	EventLabels            = "labels"
)
