package fota

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	MemberAccepted    = "accepted"    // failed, and accepted by an operator resuming the halted rollout
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

// MemberEnded reports whether a membership in state has ended for good:
// sessions no longer move it, and it holds the device for nothing.
func MemberEnded(state string) bool { return state == MemberSuperseded || state == MemberRemoved }

// SessionMemberChange is what a session's move ch does to its rollout
// member: the state (ch.Member if set, else MemberStateFor(ch.State); ""
// leaves the member as it is) and the reason (ch.Reason for a failure,
// "" otherwise). Both stores apply it in the move's transaction. A
// ch.Member that sessions cannot set (the read-only downloading and silent,
// or superseded and removed, which only rollouts and removals set) is
// EINVALID.
func SessionMemberChange(ch StateChange) (state, reason string, err error) {
	state = ch.Member
	switch state {
	case "":
		state = MemberStateFor(ch.State)
	case MemberPending, MemberOffered, MemberConfirmed, MemberFailed:
	default:
		return "", "", Errorf(EINVALID, "a session cannot move its rollout member to %q", ch.Member)
	}
	if state == MemberFailed {
		reason = ch.Reason
	}
	return state, reason, nil
}

// MemberReading is how a member stored in state reads: an offered one
// offered before the silent timeout (silent) reads as silent, else one
// whose session was served chunks (served) as downloading. Silent wins: a
// device that stopped half way is what an operator must see.
func MemberReading(state string, silent, served bool) string {
	switch {
	case state != MemberOffered:
		return state
	case silent:
		return MemberSilent
	case served:
		return MemberDownloading
	}
	return MemberOffered
}

// MemberCounts reports whether a session on api moves its device's
// rollout member: always on the native API, whose requests are the
// device's; on the EcoWatt API only for a device that has no other (policy
// ecowatt), since anyone who knows a device id can drive such a session.
func MemberCounts(api, devicePolicy string) bool {
	return api != APIEcoWatt || devicePolicy == APIEcoWatt
}

// LegacyOutcome reports whether a member's state came from an EcoWatt-API
// session (outcomeAPI, the API of the session that last took the member;
// "" if none did, then by whether the device is EcoWatt-only): an outcome
// anyone could have sent.
func LegacyOutcome(outcomeAPI string, legacyDevice bool) bool {
	return outcomeAPI == APIEcoWatt || outcomeAPI == "" && legacyDevice
}

// Add counts n members that read as reading (MemberReading).
// legacyDevice says they are EcoWatt-only devices now; legacyOutcome that
// their state came from an EcoWatt-API session (or, with no session
// left, that they are EcoWatt-only): an outcome anyone could have sent.
func (t *WaveTally) Add(reading string, n int, legacyDevice, legacyOutcome bool) {
	t.Members += n
	if legacyDevice && reading != MemberSuperseded && reading != MemberRemoved {
		t.Legacy += n
	}
	if legacyOutcome {
		switch reading {
		case MemberConfirmed:
			t.LegacyConfirmed += n
		case MemberFailed:
			t.LegacyFailed += n
		case MemberSilent:
			t.LegacySilent += n
		}
	}
	switch reading {
	case MemberPending:
		t.Pending += n
	case MemberOffered:
		t.Offered += n
	case MemberDownloading:
		t.Offered += n
		t.Downloading += n
	case MemberSilent:
		t.Offered += n
		t.Silent += n
	case MemberConfirmed:
		t.Confirmed += n
	case MemberFailed:
		t.Failed += n
	case MemberAccepted:
		t.Accepted += n
	case MemberSuperseded:
		t.Superseded += n
	case MemberRemoved:
		t.Removed += n
	}
}

// CheckNewRollout checks a rollout and its members before a store keeps
// them, defaulting members' State to MemberPending: a known state, waves
// within the rollout's, each device once.
func CheckNewRollout(r *Rollout, members []*RolloutMember) error {
	if !slices.Contains(RolloutStates, r.State) {
		return Errorf(EINVALID, "rollout state %q: want one of %s", r.State, strings.Join(RolloutStates, ", "))
	}
	if len(r.WaveEnds) == 0 {
		return Errorf(EINVALID, "a rollout needs at least one wave")
	}
	if r.Wave < 0 || r.Wave > len(r.WaveEnds) {
		return Errorf(EINVALID, "rollout wave %d: it has waves 1 to %d", r.Wave, len(r.WaveEnds))
	}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if err := checkMember(m, len(r.WaveEnds)); err != nil {
			return err
		}
		if seen[m.DeviceID] {
			return Errorf(EINVALID, "device %s is listed twice in the rollout", m.DeviceID)
		}
		seen[m.DeviceID] = true
	}
	return nil
}

// CheckJoin checks a member joining a rollout of waves waves, defaulting
// its State to MemberPending.
func CheckJoin(m *RolloutMember, waves int) error { return checkMember(m, waves) }

func checkMember(m *RolloutMember, waves int) error {
	if m.State == "" {
		m.State = MemberPending
	}
	switch m.State {
	case MemberPending, MemberOffered, MemberConfirmed, MemberFailed, MemberAccepted, MemberSuperseded, MemberRemoved:
	default:
		return Errorf(EINVALID, "device %s: member state %q cannot be stored", m.DeviceID, m.State)
	}
	if m.Wave < 1 || m.Wave > waves {
		return Errorf(EINVALID, "device %s: wave %d, the rollout has waves 1 to %d", m.DeviceID, m.Wave, waves)
	}
	return nil
}

// RolloutOverlap is a rollout holding some of a new rollout's devices.
type RolloutOverlap struct {
	RolloutID      int64
	ReleaseVersion string
	State          string
	Devices        int // how many of the new rollout's devices it holds
}

// RolloutOverlapConflict is the error for creating a rollout whose devices
// rollouts in overlaps hold, without --supersede.
func RolloutOverlapConflict(overlaps []RolloutOverlap) *Error {
	parts := make([]string, len(overlaps))
	for i, o := range overlaps {
		parts[i] = fmt.Sprintf("rollout %d (release %s, %s) holds %d of its devices", o.RolloutID, o.ReleaseVersion, o.State, o.Devices)
	}
	return Errorf(ECONFLICT, "%s; take them over with --supersede (in the dashboard: Take devices over), or abort that rollout first", strings.Join(parts, "; "))
}

// CheckRolloutOffer is the rule OpenSession applies to a session of
// release releaseID for rollout id on device deviceID. r is the rollout
// (nil: there is none) and m the device's membership (nil: it has none).
// The session may open only if r offers (RolloutOffers) that very release
// and m is still in the rollout (not MemberEnded) in an open wave. The
// error, EGONE, says which of these failed.
func CheckRolloutOffer(id int64, r *Rollout, m *RolloutMember, deviceID string, releaseID int64) error {
	switch {
	case r == nil:
		return Errorf(EGONE, "rollout %d does not exist", id)
	case !RolloutOffers(r.State) && r.Reason != "":
		return Errorf(EGONE, "rollout %d is %s: %s", id, r.State, r.Reason)
	case !RolloutOffers(r.State):
		return Errorf(EGONE, "rollout %d is %s", id, r.State)
	case r.ReleaseID != releaseID:
		return Errorf(EGONE, "rollout %d does not offer that release (its release %s was deleted, or is another)", id, r.ReleaseVersion)
	case m == nil:
		return Errorf(EGONE, "device %s is not in rollout %d", deviceID, id)
	case MemberEnded(m.State):
		return Errorf(EGONE, "device %s is no longer in rollout %d (%s)", deviceID, id, m.State)
	case m.Wave > r.Wave:
		return Errorf(EGONE, "device %s is not in an open wave of rollout %d: it is in wave %d, wave %d is the last open", deviceID, id, m.Wave, r.Wave)
	}
	return nil
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
	// Accepted are failures an operator accepted by resuming a halt.
	Accepted int
	// Legacy counts the EcoWatt-only members (not superseded or removed);
	// the Legacy* fields the share of Confirmed, Failed and Silent that
	// came from EcoWatt-API sessions: outcomes learned from
	// unauthenticated requests.
	Legacy, LegacyConfirmed, LegacyFailed, LegacySilent int
}

// SumTallies adds waves' tallies up: the rollout's whole count.
func SumTallies(ts []WaveTally) WaveTally {
	var sum WaveTally
	for _, t := range ts {
		sum.Members += t.Members
		sum.Pending += t.Pending
		sum.Offered += t.Offered
		sum.Downloading += t.Downloading
		sum.Silent += t.Silent
		sum.Confirmed += t.Confirmed
		sum.Failed += t.Failed
		sum.Superseded += t.Superseded
		sum.Removed += t.Removed
		sum.Accepted += t.Accepted
		sum.Legacy += t.Legacy
		sum.LegacyConfirmed += t.LegacyConfirmed
		sum.LegacyFailed += t.LegacyFailed
		sum.LegacySilent += t.LegacySilent
	}
	return sum
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
	// AcceptFailures moves the failed members to accepted (resuming a
	// halted rollout): the gate counts only failures from then on.
	AcceptFailures bool
	// EndSessions ends the rollout's active sessions that have not begun
	// to install (every state but applied) as abandoned with Reason (a
	// halt, an abort): their devices get 410 and keep the image they run.
	// A device already rebooting into the release reports how it went.
	EndSessions bool
}

// Check checks a transition before a store applies it.
func (t RolloutTransition) Check() error {
	if !slices.Contains(RolloutStates, t.State) {
		return Errorf(EINVALID, "rollout state %q: want one of %s", t.State, strings.Join(RolloutStates, ", "))
	}
	if t.Wave < 0 || t.FromWave < 0 {
		return Errorf(EINVALID, "rollout wave %d: want 0 (none open yet) or a wave number", min(t.Wave, t.FromWave))
	}
	if t.Event == "" {
		return Errorf(EINVALID, "a rollout transition records an event; none given")
	}
	return nil
}

// OpensWave reports whether t opens a wave, which sets WaveOpened: its wave
// changes, or a scheduled rollout starts running its wave.
func (t RolloutTransition) OpensWave() bool {
	return t.Wave != t.FromWave || t.FromState == RolloutScheduled && t.State == RolloutRunning
}

// WithdrawnRolloutReason is why a rollout ended when its release was
// withdrawn with reason.
func WithdrawnRolloutReason(reason string) string {
	if reason == "" {
		return "release withdrawn"
	}
	return "release withdrawn: " + reason
}

// RolloutCreatedDetail describes a new rollout of members devices for its
// created event, with the rollouts it took devices over from.
func RolloutCreatedDetail(r *Rollout, members int, tookOver []RolloutOverlap) string {
	d := fmt.Sprintf("release %s to %d %s device(s) in %d wave(s) (%s), %s", r.ReleaseVersion, members, r.Hardware, len(r.WaveEnds), r.Waves, r.State)
	for _, o := range tookOver {
		d += fmt.Sprintf("; took over %d device(s) from rollout %d", o.Devices, o.RolloutID)
	}
	return d
}

// ReleaseInRolloutConflict is the error for deleting a release that
// rollouts still hold their devices for (RolloutHolds): aborted and
// completed ones keep only its version, for history.
func ReleaseInRolloutConflict(version string, rollouts []*Rollout) *Error {
	parts := make([]string, len(rollouts))
	for i, r := range rollouts {
		parts[i] = fmt.Sprintf("rollout %d (%s)", r.ID, r.State)
	}
	return Errorf(ECONFLICT, "release %s is rolled out by %s; abort the rollout first, then delete the release", version, strings.Join(parts, ", "))
}

// SupersededReason is why a rollout whose every device a newer rollout
// took over ended.
func SupersededReason(by int64) string { return fmt.Sprintf("superseded by rollout %d", by) }

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
	// Errors: ENOTFOUND if the release is gone; EGONE if it was withdrawn;
	// EINVALID if CheckNewRollout refuses, or a member is not a registered
	// device of the release's hardware.
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
	// and those offered before silentBefore as silent (MemberReading).
	// Errors: ENOTFOUND.
	RolloutMembers(ctx context.Context, id int64, silentBefore time.Time) ([]*RolloutMember, error)
	// RolloutTally counts a rollout's members per wave (all waves, in
	// order), with the same reading of downloading and silent. Errors:
	// ENOTFOUND.
	RolloutTally(ctx context.Context, id int64, silentBefore time.Time) ([]WaveTally, error)
	// JoinRollout adds a device to a rollout after its creation (it was
	// registered or labelled since), unless it is a member already or in
	// another rollout of the hardware that holds it; it reports whether
	// it joined. Its memberships in rollouts that no longer hold end as
	// superseded, silently, as CreateRollout's do. Durable. Errors:
	// ENOTFOUND for an unknown rollout or device (removed ones too);
	// EINVALID for a device of other hardware or a wave the rollout lacks.
	JoinRollout(ctx context.Context, m *RolloutMember) (bool, error)
	// TransitionRollout applies t if the rollout is still at t.FromState
	// and t.FromWave, with t's event; it returns the sessions it ended.
	// Durable. Errors: ENOTFOUND; ECONFLICT if the rollout moved; EINVALID
	// if t.Check refuses.
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
