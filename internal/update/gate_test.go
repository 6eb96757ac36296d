package update_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

// tally is a wave's count: members, and of them confirmed, failed and
// silent; the rest pending.
func tally(wave, members, confirmed, failed, silent int) fota.WaveTally {
	return fota.WaveTally{
		Wave: wave, Members: members,
		Pending:   members - confirmed - failed - silent,
		Offered:   silent,
		Silent:    silent,
		Confirmed: confirmed,
		Failed:    failed,
	}
}

func TestGateEvaluate(t *testing.T) {
	opened := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	soaked := opened.Add(2 * time.Hour)
	// running: wave 1 of 3 open since opened, an hour's soak, at most 5%
	// failures, no count limit, no minimum of outcomes.
	running := func(change func(r *fota.Rollout)) *fota.Rollout {
		r := &fota.Rollout{
			ID: 1, State: fota.RolloutRunning, Wave: 1, WaveOpened: opened,
			WaveEnds: []int{10, 50, 100}, Soak: time.Hour,
			MaxFailuresPercent: 5, MaxFailures: -1,
		}
		if change != nil {
			change(r)
		}
		return r
	}
	for _, tt := range []struct {
		name    string
		rollout *fota.Rollout
		tallies []fota.WaveTally
		now     time.Time
		want    update.Verdict
	}{
		{
			name:    "wave passes",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0), tally(2, 40, 0, 0, 0), tally(3, 50, 0, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 10 confirmed, 0 failed or silent"},
		},
		{
			name:    "last wave completes",
			rollout: running(func(r *fota.Rollout) { r.Wave = 3 }),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0), tally(2, 40, 39, 1, 0), tally(3, 50, 50, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateComplete, "wave 3 passed: 99 confirmed, 1 failed or silent in waves 1-3"},
		},
		{
			name:    "paused holds",
			rollout: running(func(r *fota.Rollout) { r.State = fota.RolloutPaused }),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHold, "rollout is paused"},
		},
		{
			name:    "scheduled holds",
			rollout: running(func(r *fota.Rollout) { r.State, r.Wave = fota.RolloutScheduled, 0 }),
			now:     soaked,
			want:    update.Verdict{update.GateHold, "rollout is scheduled"},
		},
		{
			// Confirmations that arrive after a halt do not undo it: only an
			// operator resumes a halted rollout.
			name:    "late outcomes after a halt",
			rollout: running(func(r *fota.Rollout) { r.State = fota.RolloutHalted }),
			tallies: []fota.WaveTally{tally(1, 100, 97, 3, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHold, "rollout is halted"},
		},
		{
			name:    "running with no wave open",
			rollout: running(func(r *fota.Rollout) { r.Wave = 0 }),
			now:     soaked,
			want:    update.Verdict{update.GateHold, "no wave is open yet"},
		},
		{
			name:    "percentage over the limit",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 100, 17, 3, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "3 of 20 devices with an outcome in wave 1 failed or went silent (15.0%), over the 5% limit"},
		},
		{
			name:    "percentage at the limit passes",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 20, 19, 1, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 19 confirmed, 1 failed or silent"},
		},
		{
			name:    "percentage over waves 1-2 together",
			rollout: running(func(r *fota.Rollout) { r.Wave = 2 }),
			tallies: []fota.WaveTally{tally(1, 10, 9, 1, 0), tally(2, 40, 38, 2, 0), tally(3, 50, 0, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "3 of 50 devices with an outcome in waves 1-2 failed or went silent (6.0%), over the 5% limit"},
		},
		{
			name:    "waves not open yet do not count",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0), tally(2, 40, 0, 40, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 10 confirmed, 0 failed or silent"},
		},
		{
			name:    "the first outcome is a failure, no minimum",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 100, 0, 1, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "1 of 1 device with an outcome in wave 1 failed or went silent (100.0%), over the 5% limit"},
		},
		{
			name:    "too few outcomes for the percentage",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 10 }),
			tallies: []fota.WaveTally{tally(1, 100, 1, 1, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHold, "waiting for outcomes in wave 1: 2 of 10 needed"},
		},
		{
			name:    "enough outcomes for the percentage",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 10 }),
			tallies: []fota.WaveTally{tally(1, 100, 9, 1, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "1 of 10 devices with an outcome in wave 1 failed or went silent (10.0%), over the 5% limit"},
		},
		{
			name:    "a minimum above the wave waits for every member only",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 50 }),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 10 confirmed, 0 failed or silent"},
		},
		{
			name:    "count over the limit",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = -1, 3 }),
			tallies: []fota.WaveTally{tally(1, 100, 96, 4, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "4 devices in wave 1 failed or went silent, over the limit of 3"},
		},
		{
			name:    "count at the limit passes",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = -1, 3 }),
			tallies: []fota.WaveTally{tally(1, 10, 7, 3, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 7 confirmed, 3 failed or silent"},
		},
		{
			name:    "no limits at all",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = -1, -1 }),
			tallies: []fota.WaveTally{tally(1, 10, 0, 10, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 0 confirmed, 10 failed or silent"},
		},
		{
			name:    "both limits, the count trips",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = 50, 2 }),
			tallies: []fota.WaveTally{tally(1, 100, 97, 3, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "3 devices in wave 1 failed or went silent, over the limit of 2"},
		},
		{
			name:    "both limits, the percentage trips",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = 5, 10 }),
			tallies: []fota.WaveTally{tally(1, 100, 17, 3, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "3 of 20 devices with an outcome in wave 1 failed or went silent (15.0%), over the 5% limit"},
		},
		{
			name:    "0% halts on any failure",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent = 0 }),
			tallies: []fota.WaveTally{tally(1, 1000, 999, 1, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "1 of 1000 devices with an outcome in wave 1 failed or went silent (0.1%), over the 0% limit"},
		},
		{
			name:    "silent devices count as failures",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 20, 18, 0, 2)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "2 of 20 devices with an outcome in wave 1 failed or went silent (10.0%), over the 5% limit"},
		},
		{
			name:    "silent devices count against the count",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures = -1, 1 }),
			tallies: []fota.WaveTally{tally(1, 20, 5, 1, 1)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "2 devices in wave 1 failed or went silent, over the limit of 1"},
		},
		{
			name:    "hopeless before the minimum of outcomes",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 50 }),
			tallies: []fota.WaveTally{tally(1, 100, 0, 6, 0)},
			now:     opened, // during the soak too
			want:    update.Verdict{update.GateHalt, "6 of 100 devices in wave 1 failed or went silent: even if all the others confirm, 6.0% stays over the 5% limit"},
		},
		{
			name:    "not yet hopeless",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 50 }),
			tallies: []fota.WaveTally{tally(1, 100, 0, 5, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHold, "waiting for outcomes in wave 1: 5 of 50 needed"},
		},
		{
			name:    "superseded and removed members cannot confirm",
			rollout: running(func(r *fota.Rollout) { r.MinOutcomes = 50 }),
			tallies: []fota.WaveTally{{Wave: 1, Members: 100, Pending: 47, Failed: 3, Superseded: 40, Removed: 10}},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "3 of 50 devices in wave 1 failed or went silent: even if all the others confirm, 6.0% stays over the 5% limit"},
		},
		{
			name:    "failures halt during the soak",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 10, 1, 1, 0)},
			now:     opened.Add(time.Minute),
			want:    update.Verdict{update.GateHalt, "1 of 2 devices with an outcome in wave 1 failed or went silent (50.0%), over the 5% limit"},
		},
		{
			name:    "soaking",
			rollout: running(func(r *fota.Rollout) { r.Wave = 2 }),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0), tally(2, 40, 40, 0, 0)},
			now:     opened.Add(time.Hour - time.Second),
			want:    update.Verdict{update.GateHold, "wave 2 soaks until 2026-05-04T11:00:00Z"},
		},
		{
			name:    "soaked to the second",
			rollout: running(nil),
			tallies: []fota.WaveTally{tally(1, 10, 10, 0, 0)},
			now:     opened.Add(time.Hour),
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 10 confirmed, 0 failed or silent"},
		},
		{
			// Resumed after halting on 4 failures: those no longer count.
			name:    "accepted failures after a resume",
			rollout: running(func(r *fota.Rollout) { r.GateBase, r.MinOutcomes = 4, 10 }),
			tallies: []fota.WaveTally{tally(1, 100, 20, 5, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 20 confirmed, 5 failed or silent"}, // 1 of 21
		},
		{
			name:    "new failures after a resume",
			rollout: running(func(r *fota.Rollout) { r.GateBase, r.MinOutcomes = 4, 10 }),
			tallies: []fota.WaveTally{tally(1, 100, 20, 6, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "2 of 22 devices with an outcome in wave 1 failed or went silent (9.1%), over the 5% limit; not counting 4 failures accepted on resume"},
		},
		{
			name:    "one accepted failure",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures, r.GateBase = -1, 0, 1 }),
			tallies: []fota.WaveTally{tally(1, 100, 20, 2, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "1 device in wave 1 failed or went silent, over the limit of 0; not counting 1 failure accepted on resume"},
		},
		{
			name:    "count after a resume",
			rollout: running(func(r *fota.Rollout) { r.MaxFailuresPercent, r.MaxFailures, r.GateBase = -1, 3, 4 }),
			tallies: []fota.WaveTally{tally(1, 100, 20, 8, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateHalt, "4 devices in wave 1 failed or went silent, over the limit of 3; not counting 4 failures accepted on resume"},
		},
		{
			// The accepted failures cannot be outcomes again, so a wave of
			// 10 with 5 accepted needs only the other 5.
			name:    "minimum of outcomes after a resume",
			rollout: running(func(r *fota.Rollout) { r.GateBase, r.MinOutcomes = 5, 10 }),
			tallies: []fota.WaveTally{tally(1, 10, 5, 5, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 1 passed: 5 confirmed, 5 failed or silent"},
		},
		{
			name:    "an empty wave passes once soaked",
			rollout: running(func(r *fota.Rollout) { r.Wave, r.WaveEnds, r.MinOutcomes = 2, []int{5, 5, 10}, 3 }),
			tallies: []fota.WaveTally{tally(1, 5, 5, 0, 0), tally(2, 0, 0, 0, 0), tally(3, 5, 0, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateAdvance, "wave 2 passed: 5 confirmed, 0 failed or silent in waves 1-2"},
		},
		{
			name:    "a rollout of nobody completes",
			rollout: running(func(r *fota.Rollout) { r.WaveEnds, r.MinOutcomes, r.MaxFailures = []int{0}, 5, 0 }),
			tallies: []fota.WaveTally{tally(1, 0, 0, 0, 0)},
			now:     soaked,
			want:    update.Verdict{update.GateComplete, "wave 1 passed: 0 confirmed, 0 failed or silent"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := update.Evaluate(tt.rollout, tt.tallies, tt.now); got != tt.want {
				t.Errorf("Evaluate = %+v\n        want %+v", got, tt.want)
			}
		})
	}
}

func TestGateParseMaxFailures(t *testing.T) {
	for _, tt := range []struct {
		in      string
		percent float64
		count   int
		err     string // part of the message, for an invalid limit
	}{
		{in: "", percent: 5, count: -1},
		{in: "none", percent: -1, count: -1},
		{in: " None ", percent: -1, count: -1},
		{in: "5%", percent: 5, count: -1},
		{in: "2.5%", percent: 2.5, count: -1},
		{in: "0%", percent: 0, count: -1},
		{in: "100%", percent: 100, count: -1},
		{in: "3", percent: -1, count: 3},
		{in: "0", percent: -1, count: 0},
		{in: "5%,3", percent: 5, count: 3},
		{in: " 3 , 5 % ", percent: 5, count: 3},

		{in: "101%", err: `max failures "101%": a percentage is at most 100%`},
		{in: "-1", err: `max failures "-1": "-1" is not a percentage or a count; write a percentage, a count, both, or none (e.g. 5%, 3, 5%,3 or none)`},
		{in: "-1%", err: `"-1%" is not a percentage`},
		{in: "five", err: `"five" is not a percentage or a count`},
		{in: "5%,6%", err: `max failures "5%,6%": two percentages`},
		{in: "3,4", err: `max failures "3,4": two counts`},
		{in: "5%,3,1", err: `at most one percentage and one count`},
		{in: "5%,", err: `"" is not a percentage or a count`},
		{in: "%", err: `"%" is not a percentage`},
	} {
		percent, count, err := update.ParseMaxFailures(tt.in)
		if tt.err != "" {
			if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), tt.err) {
				t.Errorf("ParseMaxFailures(%q) = %v, want EINVALID containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || percent != tt.percent || count != tt.count {
			t.Errorf("ParseMaxFailures(%q) = %v, %d, %v; want %v, %d", tt.in, percent, count, err, tt.percent, tt.count)
		}
	}
}

// A mixed rollout whose canary wave holds only EcoWatt-only devices: their
// outcomes, which anyone could have sent, neither halt it nor count as
// the outcomes a wave needs; the wave passes on its soak alone.
func TestGateIgnoresUnauthenticatedOutcomesInMixedRollout(t *testing.T) {
	opened := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	r := &fota.Rollout{ID: 1, State: fota.RolloutRunning, Wave: 1, WaveOpened: opened, WaveEnds: []int{1, 2}, Soak: time.Hour,
		MaxFailuresPercent: -1, MaxFailures: 0, MinOutcomes: 1}
	canary := fota.WaveTally{Wave: 1, Members: 1, Failed: 1, Legacy: 1, LegacyFailed: 1}
	native := fota.WaveTally{Wave: 2, Members: 1, Pending: 1}
	if v := update.Evaluate(r, []fota.WaveTally{canary, native}, opened.Add(time.Minute)); v.Action != update.GateHold {
		t.Fatalf("a forged canary failure in a mixed rollout: %+v", v)
	}
	if v := update.Evaluate(r, []fota.WaveTally{canary, native}, opened.Add(2*time.Hour)); v.Action != update.GateAdvance {
		t.Fatalf("after the soak: %+v", v)
	}
	// The same canary alone in an EcoWatt-only rollout counts.
	if v := update.Evaluate(r, []fota.WaveTally{canary, {Wave: 2, Members: 1, Pending: 1, Legacy: 1}}, opened.Add(time.Minute)); v.Action != update.GateHalt {
		t.Fatalf("an EcoWatt-only rollout's canary failure: %+v", v)
	}
}
