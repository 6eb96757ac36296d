package update

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/ecowatt/fota"
)

// maxWaves bounds a rollout's waves: each is a gate an operator watches.
const maxWaves = 20

// maxPercentDecimals bounds a wave percentage's precision, which keeps
// WaveEnds exact (see there).
const maxPercentDecimals = 3

// wavesHelp ends every wave spec error: operators read it.
const wavesHelp = "write percentages, device counts or all, separated by commas (e.g. 10%,50%,100% or 5,50,all)"

// WaveSpec is one wave of a rollout: how far it reaches, counted from the
// start of the rollout. Exactly one of Percent, Count and All is set.
type WaveSpec struct {
	Percent float64 // of the devices targeted, in (0, 100]
	Count   int     // devices, at least 1
	All     bool    // every device targeted
}

// ParseWaves parses a wave spec: comma-separated percentages ("10%",
// "0.5%"; at most 3 decimals), device counts ("50") and, last only, "all".
// Waves are cumulative, so a percentage may not be below an earlier
// percentage, nor a count below an earlier count (a count and a
// percentage are not compared: which reaches further depends on the
// fleet). "" is one wave of 100%. Errors are EINVALID.
func ParseWaves(s string) ([]WaveSpec, error) {
	if strings.TrimSpace(s) == "" {
		return []WaveSpec{{Percent: 100}}, nil
	}
	terms := strings.Split(s, ",")
	if len(terms) > maxWaves {
		return nil, fota.Errorf(fota.EINVALID, "waves %q: %d waves; a rollout has at most %d", s, len(terms), maxWaves)
	}
	specs := make([]WaveSpec, 0, len(terms))
	lastPercent, lastCount := 0.0, 0
	for i, raw := range terms {
		term := strings.TrimSpace(raw)
		spec, err := parseWave(term)
		if err != nil {
			return nil, fota.Errorf(fota.EINVALID, "waves %q: %s", s, fota.ErrorMessage(err))
		}
		switch {
		case spec.All && i < len(terms)-1:
			return nil, fota.Errorf(fota.EINVALID, "waves %q: all reaches every device, so it can only be the last wave (e.g. 5,50,all)", s)
		case spec.Percent > 0 && spec.Percent < lastPercent:
			return nil, fota.Errorf(fota.EINVALID, "waves %q: wave %d (%s) is below an earlier wave (%s%%); waves are cumulative, each reaching at least as far as the one before (e.g. 10%%,50%%,100%%)",
				s, i+1, term, strconv.FormatFloat(lastPercent, 'f', -1, 64))
		case spec.Count > 0 && spec.Count < lastCount:
			return nil, fota.Errorf(fota.EINVALID, "waves %q: wave %d (%s) is below an earlier wave (%d); waves are cumulative, each reaching at least as far as the one before (e.g. 5,50,all)",
				s, i+1, term, lastCount)
		}
		lastPercent, lastCount = max(lastPercent, spec.Percent), max(lastCount, spec.Count)
		specs = append(specs, spec)
	}
	return specs, nil
}

// parseWave parses one term of a wave spec.
func parseWave(term string) (WaveSpec, error) {
	if term == "" {
		return WaveSpec{}, fota.Errorf(fota.EINVALID, "a wave is empty; %s", wavesHelp)
	}
	if strings.EqualFold(term, "all") {
		return WaveSpec{All: true}, nil
	}
	// Digits and a dot only: strconv would also take "1e2", "+5" and "NaN",
	// which no operator means.
	if num, ok := strings.CutSuffix(term, "%"); ok {
		num = strings.TrimSpace(num)
		p, err := strconv.ParseFloat(num, 64)
		if err != nil || strings.Trim(num, "0123456789.") != "" {
			return WaveSpec{}, fota.Errorf(fota.EINVALID, "%q is not a percentage; %s", term, wavesHelp)
		}
		if _, decimals, _ := strings.Cut(num, "."); len(decimals) > maxPercentDecimals {
			return WaveSpec{}, fota.Errorf(fota.EINVALID, "wave %q: a percentage has at most %d decimals (e.g. 0.125%%); for fewer devices give a count", term, maxPercentDecimals)
		}
		if p <= 0 || p > 100 {
			return WaveSpec{}, fota.Errorf(fota.EINVALID, "wave %q: a percentage must be above 0%% and at most 100%%", term)
		}
		return WaveSpec{Percent: p}, nil
	}
	n, err := strconv.Atoi(term)
	if err != nil || strings.Trim(term, "0123456789") != "" {
		return WaveSpec{}, fota.Errorf(fota.EINVALID, "%q is not a wave; %s", term, wavesHelp)
	}
	if n < 1 {
		return WaveSpec{}, fota.Errorf(fota.EINVALID, "wave %q: a wave reaches at least 1 device", term)
	}
	return WaveSpec{Count: n}, nil
}

// WaveEnds returns, for n targeted devices, how many devices each wave
// reaches counting from the start (cumulative): a percentage p reaches
// ceil(n*p/100) but at least 1 device, a count c reaches min(c, n), all
// reaches n. An end is never below the one before, so a count after a
// larger percentage adds nobody rather than shrinking the rollout.
func WaveEnds(specs []WaveSpec, n int) []int {
	ends := make([]int, len(specs))
	prev := 0
	for i, s := range specs {
		var end int
		switch {
		case s.All:
			end = n
		case s.Count > 0:
			end = min(s.Count, n)
		case n > 0:
			// With at most maxPercentDecimals decimals, n*p/100 is either
			// whole or at least 1/100000 above a whole number; float error
			// is far smaller, so the epsilon takes it away (8.8% of 375 is
			// 33, not 34) without rounding down a true fraction.
			end = max(1, int(math.Ceil(float64(n)*s.Percent/100-1e-9)))
			end = min(end, n)
		}
		end = max(end, prev)
		ends[i], prev = end, end
	}
	return ends
}

// AssignWaves places the devices of a new rollout in waves: it orders them
// by a hash of the rollout id and device id (ties by id), and the device at
// rank r (0-based) goes to the first wave whose end is above r. Devices
// ranked at or past the last end are left out: they are not members.
//
// A device's wave depends only on the rollout, its id and the set of
// devices, never on the order they were listed in or on the time, so
// computing it again (a retried create, another replica) gives the same
// waves; and each rollout draws its canaries afresh.
func AssignWaves(rolloutID int64, deviceIDs []string, ends []int) map[string]int {
	type ranked struct {
		id   string
		hash uint64
	}
	seen := make(map[string]bool, len(deviceIDs))
	devices := make([]ranked, 0, len(deviceIDs))
	for _, id := range deviceIDs {
		if !seen[id] {
			seen[id] = true
			devices = append(devices, ranked{id, waveHash(rolloutID, id)})
		}
	}
	slices.SortFunc(devices, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), strings.Compare(a.id, b.id))
	})
	waves := make(map[string]int, len(devices))
	wave := 0
	for rank, d := range devices {
		for wave < len(ends) && rank >= ends[wave] {
			wave++
		}
		if wave == len(ends) {
			break
		}
		waves[d.id] = wave + 1
	}
	return waves
}

// JoinWave places a device that joins a rollout after its creation (it was
// registered or labelled since) in the same proportions as the devices at
// creation, targeted of them: with f = its hash as a fraction of 2^64, the
// first wave whose end is above f*targeted, so a device with a small f
// joins wave 1. It returns 0 if the device falls past the last wave (the
// rollout reaches only part of the fleet) and so is not a member. If the
// rollout targeted no devices, a joining device goes to the last wave.
func JoinWave(rolloutID int64, deviceID string, ends []int, targeted int) int {
	return joinWaveForHash(waveHash(rolloutID, deviceID), ends, targeted)
}

func joinWaveForHash(h uint64, ends []int, targeted int) int {
	if len(ends) == 0 {
		return 0
	}
	if targeted <= 0 {
		// No proportion to keep: join once every wave is open, if the
		// last wave reached everyone (it did, as there was nobody).
		if ends[len(ends)-1] == 0 {
			return len(ends)
		}
		return 0
	}
	// f*targeted < end, exactly: hi is floor(h*targeted / 2^64), and for a
	// whole end, hi + (a fraction below 1) < end holds exactly when
	// hi < end. A float f would round the largest hashes up to 1.
	hi, _ := bits.Mul64(h, uint64(targeted))
	for i, end := range ends {
		if end > 0 && hi < uint64(end) {
			return i + 1
		}
	}
	return 0
}

// waveHash is a device's place in a rollout's order. Changing it would move
// devices that join existing rollouts, so it is fixed: the first 8 bytes,
// big-endian, of SHA-256 over "rollout/<id>/<device id>".
func waveHash(rolloutID int64, deviceID string) uint64 {
	sum := sha256.Sum256(fmt.Appendf(nil, "rollout/%d/%s", rolloutID, deviceID))
	return binary.BigEndian.Uint64(sum[:8])
}
