package update

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

// Gate actions: what Evaluate says to do with a rollout.
const (
	GateHold     = "hold"     // leave it as it is
	GateAdvance  = "advance"  // open the next wave
	GateComplete = "complete" // the last wave passed: the rollout is done
	GateHalt     = "halt"     // too many failures: stop offering the release
)

// Verdict is the health gate's decision on a rollout, with the reason an
// operator is shown.
type Verdict struct {
	Action string
	Reason string
}

// Evaluate is the health gate of a running rollout; any other state
// holds. It counts over the open waves (1 to r.Wave) together:
//
//   - F, failures: failed members and silent ones (offered longer than
//     the silent timeout without an outcome);
//   - O, outcomes: confirmed members and F;
//   - E, eligible members: all but superseded and removed ones.
//
// When the rollout holds devices that can authenticate (API policy
// native or both), only authenticated outcomes count: one learned on the
// EcoWatt API comes from requests anyone who knows the device id can send,
// so it decides nothing for them (a rollout of EcoWatt-only devices counts
// theirs, at the risk of forged halts and passes that concern only them).
// Members whose failures an operator accepted (resuming a halt) count as
// neither until they have a new outcome.
//
// F and O leave out the r.GateBase failures an operator accepted by
// resuming a halted rollout. It halts when F is over r.MaxFailures; when,
// with O at least max(1, r.MinOutcomes), F is over r.MaxFailuresPercent of
// O; or when F is over that percentage of E, so that the share would stay
// over the limit even if every other member confirmed. Otherwise it holds
// while the open wave soaks (until r.WaveOpened + r.Soak) and while O is
// below min(r.MinOutcomes, eligible members not accepted as failures);
// then it advances to the next wave, or completes after the last.
//
// Evaluate is pure: the caller applies the verdict with a
// fota.RolloutTransition from the state and wave it read, so a stale
// verdict (the rollout moved meanwhile) is refused rather than applied.
func Evaluate(r *fota.Rollout, tallies []fota.WaveTally, now time.Time) Verdict {
	if r.State != fota.RolloutRunning {
		return Verdict{GateHold, "rollout is " + r.State}
	}
	if r.Wave < 1 {
		return Verdict{GateHold, "no wave is open yet"}
	}
	var rawFailed, confirmed, eligible int
	var legacy, legacyFailed, legacyConfirmed int
	trusted := false
	for _, t := range tallies {
		if t.Members-t.Superseded-t.Removed > t.Legacy {
			trusted = true
		}
		if t.Wave >= 1 && t.Wave <= r.Wave {
			rawFailed += t.Failed + t.Silent
			confirmed += t.Confirmed
			// Accepted failures count neither way until the device has a
			// new outcome.
			eligible += t.Members - t.Superseded - t.Removed - t.Accepted
			legacy += t.Legacy
			legacyFailed += t.LegacyFailed + t.LegacySilent
			legacyConfirmed += t.LegacyConfirmed
		}
	}
	if trusted {
		// The rollout has devices that can prove who they are, in any
		// wave: only authenticated outcomes decide, since the others come
		// from requests anyone could send and must not decide what those
		// devices get. A canary wave of EcoWatt-only devices then gates on
		// its soak alone.
		rawFailed -= legacyFailed
		confirmed -= legacyConfirmed
		eligible = max(eligible-legacy, 0)
	}
	failed := max(rawFailed-r.GateBase, 0)
	outcomes := max(rawFailed+confirmed-r.GateBase, 0)
	where := openWaves(r.Wave)
	accepted := ""
	if r.GateBase > 0 {
		accepted = "; not counting " + plural(r.GateBase, "failure") + " accepted on resume"
	}

	pct := r.MaxFailuresPercent
	switch {
	case r.MaxFailures >= 0 && failed > r.MaxFailures:
		return Verdict{GateHalt, fmt.Sprintf("%s in %s failed or went silent, over the limit of %d%s",
			plural(failed, "device"), where, r.MaxFailures, accepted)}
	case pct >= 0 && outcomes >= max(1, r.MinOutcomes) && float64(failed)*100 > pct*float64(outcomes):
		return Verdict{GateHalt, fmt.Sprintf("%d of %s with an outcome in %s failed or went silent (%.1f%%), over the %s%% limit%s",
			failed, plural(outcomes, "device"), where, float64(failed)*100/float64(outcomes), formatPercent(pct), accepted)}
	case pct >= 0 && eligible > 0 && float64(failed)*100 > pct*float64(eligible):
		return Verdict{GateHalt, fmt.Sprintf("%d of %s in %s failed or went silent: even if all the others confirm, %.1f%% stays over the %s%% limit%s",
			failed, plural(eligible, "device"), where, float64(failed)*100/float64(eligible), formatPercent(pct), accepted)}
	}

	if soaked := r.WaveOpened.Add(r.Soak); now.Before(soaked) {
		return Verdict{GateHold, fmt.Sprintf("wave %d soaks until %s", r.Wave, soaked.UTC().Format(time.RFC3339))}
	}
	// Accepted failures are left out of the outcomes, so they cannot count
	// towards the outcomes needed either: without this, a small wave
	// resumed after a halt could wait for outcomes it can never have.
	need := min(max(r.MinOutcomes, 0), max(eligible-r.GateBase, 0))
	if outcomes < need {
		return Verdict{GateHold, fmt.Sprintf("waiting for outcomes in %s: %d of %d needed", where, outcomes, need)}
	}

	passed := fmt.Sprintf("wave %d passed: %d confirmed, %d failed or silent", r.Wave, confirmed, rawFailed)
	if r.Wave > 1 {
		passed += " in " + where
	}
	if r.Wave < len(r.WaveEnds) {
		return Verdict{GateAdvance, passed}
	}
	return Verdict{GateComplete, passed}
}

// openWaves names the waves 1 to wave for a reason.
func openWaves(wave int) string {
	if wave == 1 {
		return "wave 1"
	}
	return fmt.Sprintf("waves 1-%d", wave)
}

// plural writes "1 device", "2 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func formatPercent(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }

// Default health-gate limits for ParseMaxFailures.
const (
	defaultMaxFailuresPercent = 5
	defaultMaxFailures        = -1
)

// maxFailuresHelp ends every max-failures error: operators read it.
const maxFailuresHelp = "write a percentage, a count, both, or none (e.g. 5%, 3, 5%,3 or none)"

// ParseMaxFailures parses a health-gate limit: a percentage of outcomes
// ("5%"), a count of failures ("3"), both ("5%,3", either trips the gate),
// or "none". A kind not given is -1, no limit of that kind; "" is the
// default, 5% and no count. Errors are EINVALID.
func ParseMaxFailures(s string) (percent float64, count int, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return defaultMaxFailuresPercent, defaultMaxFailures, nil
	case strings.EqualFold(s, "none"):
		return -1, -1, nil
	}
	percent, count = -1, -1
	terms := strings.Split(s, ",")
	if len(terms) > 2 {
		return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: at most one percentage and one count; %s", s, maxFailuresHelp)
	}
	for _, raw := range terms {
		term := strings.TrimSpace(raw)
		if num, ok := strings.CutSuffix(term, "%"); ok {
			num = strings.TrimSpace(num)
			p, err := strconv.ParseFloat(num, 64)
			switch {
			case err != nil || num == "" || strings.Trim(num, "0123456789.") != "":
				return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: %q is not a percentage; %s", s, term, maxFailuresHelp)
			case p > 100:
				return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: a percentage is at most 100%%", s)
			case percent >= 0:
				return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: two percentages; %s", s, maxFailuresHelp)
			}
			percent = p
			continue
		}
		n, err := strconv.Atoi(term)
		switch {
		case err != nil || term == "" || strings.Trim(term, "0123456789") != "":
			return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: %q is not a percentage or a count; %s", s, term, maxFailuresHelp)
		case count >= 0:
			return 0, 0, fota.Errorf(fota.EINVALID, "max failures %q: two counts; %s", s, maxFailuresHelp)
		}
		count = n
	}
	return percent, count, nil
}
