package update

// An internal test: JoinWave's boundaries are checked on chosen hashes,
// which only the unexported joinWaveForHash takes.

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
)

func TestParseWaves(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []WaveSpec
		err  string // part of the message, for an invalid spec
	}{
		{in: "", want: []WaveSpec{{Percent: 100}}},
		{in: "100%", want: []WaveSpec{{Percent: 100}}},
		{in: "10%,50%,100%", want: []WaveSpec{{Percent: 10}, {Percent: 50}, {Percent: 100}}},
		{in: "5,50,all", want: []WaveSpec{{Count: 5}, {Count: 50}, {All: true}}},
		{in: " 1% , 10 , ALL ", want: []WaveSpec{{Percent: 1}, {Count: 10}, {All: true}}},
		{in: "0.5%,2.5 %", want: []WaveSpec{{Percent: 0.5}, {Percent: 2.5}}},
		{in: "all", want: []WaveSpec{{All: true}}},
		{in: "10%,10%", want: []WaveSpec{{Percent: 10}, {Percent: 10}}}, // not decreasing
		{in: "50%,5,60%", want: []WaveSpec{{Percent: 50}, {Count: 5}, {Percent: 60}}},
		{in: "20,50%,30", want: []WaveSpec{{Count: 20}, {Percent: 50}, {Count: 30}}}, // counts and percentages are not compared
		{in: strings.Repeat("1,", 19) + "all", want: append(slices.Repeat([]WaveSpec{{Count: 1}}, 19), WaveSpec{All: true})},

		{in: "50%,10%", err: `waves "50%,10%": wave 2 (10%) is below an earlier wave (50%); waves are cumulative`},
		{in: "50,10", err: `waves "50,10": wave 2 (10) is below an earlier wave (50)`},
		{in: "50%,5,10%", err: `wave 3 (10%) is below an earlier wave (50%)`}, // against any earlier percentage
		{in: "all,100%", err: `waves "all,100%": all reaches every device, so it can only be the last wave (e.g. 5,50,all)`},
		{in: "0%", err: `waves "0%": wave "0%": a percentage must be above 0% and at most 100%`},
		{in: "101%", err: `a percentage must be above 0% and at most 100%`},
		{in: "0", err: `waves "0": wave "0": a wave reaches at least 1 device`},
		{in: "-5", err: `waves "-5": "-5" is not a wave; write percentages, device counts or all, separated by commas (e.g. 10%,50%,100% or 5,50,all)`},
		{in: "+5", err: `"+5" is not a wave`},
		{in: "1e1%", err: `waves "1e1%": "1e1%" is not a percentage`},
		{in: "NaN%", err: `"NaN%" is not a percentage`},
		{in: "%", err: `"%" is not a percentage`},
		{in: "0.0001%", err: `wave "0.0001%": a percentage has at most 3 decimals (e.g. 0.125%); for fewer devices give a count`},
		{in: "10%,,50%", err: `waves "10%,,50%": a wave is empty`},
		{in: "10%,", err: `a wave is empty`},
		{in: "half", err: `"half" is not a wave`},
		{in: strings.Repeat("1,", 20) + "all", err: "21 waves; a rollout has at most 20"},
	} {
		got, err := ParseWaves(tt.in)
		if tt.err != "" {
			if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), tt.err) {
				t.Errorf("ParseWaves(%q) = %v, want EINVALID containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseWaves(%q): %v", tt.in, err)
		} else if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseWaves(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestWaveEnds(t *testing.T) {
	for _, tt := range []struct {
		waves string
		n     int
		want  []int
	}{
		{"10%,50%,100%", 100, []int{10, 50, 100}},
		{"10%,50%,100%", 101, []int{11, 51, 101}}, // rounded up
		{"10%,50%,100%", 3, []int{1, 2, 3}},
		{"10%,50%,100%", 1, []int{1, 1, 1}}, // at least one device
		{"10%,50%,100%", 0, []int{0, 0, 0}},
		{"8.8%", 375, []int{33}},   // 33 exactly, though 375*8.8/100 is 33.00000000000001 in floats
		{"64.4%", 250, []int{161}}, // likewise
		{"0.1%", 999, []int{1}},
		{"0.001%", 100001, []int{2}}, // 1.00001: a true fraction rounds up
		{"99.999%", 100000, []int{99999}},
		{"5,50,all", 100, []int{5, 50, 100}},
		{"5,50,all", 20, []int{5, 20, 20}},
		{"5,50", 100, []int{5, 50}}, // the other 50 are not targeted
		{"5,50,all", 0, []int{0, 0, 0}},
		{"1%,10,all", 1000, []int{10, 10, 1000}},
		{"50%,5,all", 100, []int{50, 50, 100}}, // never shrinks
		{"all", 7, []int{7}},
	} {
		specs, err := ParseWaves(tt.waves)
		if err != nil {
			t.Fatalf("ParseWaves(%q): %v", tt.waves, err)
		}
		if got := WaveEnds(specs, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("WaveEnds(%q, %d) = %v, want %v", tt.waves, tt.n, got, tt.want)
		}
	}
}

// The hash is fixed (stored memberships and joins on every replica depend
// on it): this value is `printf rollout/7/d01 | sha256sum`, first 16 digits.
func TestWaveHashIsFixed(t *testing.T) {
	if got, want := waveHash(7, "d01"), uint64(0x99f57477dbac5fbe); got != want {
		t.Errorf("waveHash(7, d01) = %#x, want %#x", got, want)
	}
}

func deviceIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%05d", i)
	}
	return ids
}

func TestAssignWaves(t *testing.T) {
	ids := []string{"d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10"}
	want := map[string]int{"d10": 1, "d03": 2, "d06": 2, "d08": 2, "d01": 3, "d02": 3, "d04": 3, "d05": 3, "d07": 3, "d09": 3}
	if got := AssignWaves(7, ids, []int{1, 4, 10}); !reflect.DeepEqual(got, want) {
		t.Errorf("AssignWaves(7, d01-d10, [1 4 10]) = %v, want %v", got, want)
	}

	// The order devices are listed in, and repeats, change nothing.
	shuffled := slices.Clone(ids)
	slices.Reverse(shuffled)
	shuffled = append(shuffled, "d03", "d10")
	if got := AssignWaves(7, shuffled, []int{1, 4, 10}); !reflect.DeepEqual(got, want) {
		t.Errorf("AssignWaves with the devices reversed and repeated = %v, want %v", got, want)
	}

	// Another rollout draws other canaries.
	if got := AssignWaves(8, ids, []int{1, 4, 10}); reflect.DeepEqual(got, want) {
		t.Errorf("rollouts 7 and 8 placed every device alike: %v", got)
	}

	for _, tt := range []struct {
		waves    string
		n        int
		perWave  []int
		nonMembs int
	}{
		{"10%,50%,100%", 1000, []int{100, 400, 500}, 0},
		{"5,50", 100, []int{5, 45}, 50},
		{"50%,5,all", 10, []int{5, 0, 5}, 0}, // an empty wave
		{"10%,50%,100%", 0, []int{0, 0, 0}, 0},
	} {
		specs, err := ParseWaves(tt.waves)
		if err != nil {
			t.Fatal(err)
		}
		got := AssignWaves(42, deviceIDs(tt.n), WaveEnds(specs, tt.n))
		perWave := make([]int, len(specs))
		for _, w := range got {
			perWave[w-1]++
		}
		if !slices.Equal(perWave, tt.perWave) || tt.n-len(got) != tt.nonMembs {
			t.Errorf("%s of %d devices: %v per wave and %d left out, want %v and %d",
				tt.waves, tt.n, perWave, tt.n-len(got), tt.perWave, tt.nonMembs)
		}
	}
}

func TestJoinWave(t *testing.T) {
	const quarter = uint64(1) << 62 // f = 1/4
	for _, tt := range []struct {
		hash     uint64
		ends     []int
		targeted int
		want     int
	}{
		{0, []int{1, 2, 4}, 4, 1},           // the smallest f joins the first wave
		{quarter - 1, []int{1, 2, 4}, 4, 1}, // f*4 just under 1
		{quarter, []int{1, 2, 4}, 4, 2},     // f*4 = 1: not under wave 1's end
		{2*quarter - 1, []int{1, 2, 4}, 4, 2},
		{2 * quarter, []int{1, 2, 4}, 4, 3},
		{math.MaxUint64, []int{1, 2, 4}, 4, 3}, // f is never 1: the last wave takes it
		{math.MaxUint64, []int{1, 2, 3}, 4, 0}, // past a rollout that reaches 3 of 4
		{3*quarter - 1, []int{1, 2, 3}, 4, 3},
		{0, []int{0, 0, 5}, 10, 3}, // empty waves are skipped
		{0, []int{3}, 1000, 1},
		{math.MaxUint64, []int{0, 0}, 0, 2}, // nobody targeted: the last wave
		{0, nil, 5, 0},
	} {
		if got := joinWaveForHash(tt.hash, tt.ends, tt.targeted); got != tt.want {
			t.Errorf("joinWaveForHash(%#x, %v, %d) = %d, want %d", tt.hash, tt.ends, tt.targeted, got, tt.want)
		}
	}

	// Devices joining later land in the waves in about the proportions of
	// those placed at creation.
	ends := []int{100, 500, 800} // 10%, 50%, 80% of 1000: a fifth stay out
	perWave := make([]int, len(ends)+1)
	for _, id := range deviceIDs(10000) {
		perWave[JoinWave(3, id, ends, 1000)]++
	}
	for wave, want := range []int{2000, 1000, 4000, 3000} {
		if got := perWave[wave]; got < want*9/10 || got > want*11/10 {
			t.Errorf("of 10000 joining devices %d went to wave %d (0: none), want about %d", got, wave, want)
		}
	}
}

// FuzzParseWaves checks that every spec the parser accepts has waves of
// exactly one kind, "all" only last, and ends that never decrease nor
// pass the devices targeted.
func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"", "10%,50%,100%", "5,50,all", "1%,10,all", "0.5%,2.5 %", "50%,10%", "all,5", "1e1%", "10%,,50%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := ParseWaves(s)
		if err != nil {
			if fota.ErrorCode(err) != fota.EINVALID {
				t.Fatalf("ParseWaves(%q): %v, want EINVALID", s, err)
			}
			return
		}
		if len(specs) == 0 || len(specs) > maxWaves {
			t.Fatalf("ParseWaves(%q) gave %d waves", s, len(specs))
		}
		for i, sp := range specs {
			kinds := 0
			for _, set := range []bool{sp.Percent > 0, sp.Count > 0, sp.All} {
				if set {
					kinds++
				}
			}
			if kinds != 1 || sp.Percent > 100 || sp.All && i < len(specs)-1 {
				t.Fatalf("ParseWaves(%q): wave %d is %+v", s, i+1, sp)
			}
		}
		for _, n := range []int{0, 1, 7, 1000} {
			ends := WaveEnds(specs, n)
			for i, end := range ends {
				if end > n || n > 0 && end < 1 || i > 0 && end < ends[i-1] {
					t.Fatalf("WaveEnds(ParseWaves(%q), %d) = %v", s, n, ends)
				}
			}
		}
	})
}
