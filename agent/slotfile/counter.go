package slotfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/ecowatt/fota/agent"
)

// The security counter is kept apart from the boot state, as an ESP32
// keeps its anti-rollback secure_version in eFuses rather than in otadata:
// a device whose boot state is lost and reformatted from its factory image
// must not start accepting images it had already locked out.
//
// The record is two copies, each replaced atomically (replaceFile, so a
// torn write only ever hits a temporary file) and each sealed with its
// SHA-256. A raise writes copy 0 and then copy 1, never the other way, so
// copy 0 is never below copy 1 on disk. Reading takes the highest intact
// copy:
//
//   - both intact: they are equal, or a cut fell between the two writes
//     and copy 0 holds the new value;
//   - copy 1 damaged: copy 0 is at least as high, nothing is lost;
//   - copy 0 damaged: copy 1 holds the value, unless a cut fell between
//     the two writes and copy 0 was damaged afterwards (two faults). The
//     raise follows the confirm in the boot state, so the boot step raises
//     the counter again from the valid image it boots (see Boot);
//   - both damaged: the value is unknowable and nothing below any guess
//     may pass, so the counter is ErrCounterUnreadable and the agent
//     refuses updates. Rewriting it from the boot state would lower it.
//
// Both copies missing is a device that never stored a counter: 0.
type counterRecord struct {
	Value uint32 `json:"security_counter"`
}

func counterFile(i int) string { return fmt.Sprintf("security_counter.%d", i) }

// counterState is what reading the record found.
type counterState struct {
	value   uint32
	err     error // agent.ErrCounterUnreadable, or a read failure
	healthy bool  // both copies intact and equal (or both absent)
}

func readCounter(disk Disk) counterState {
	var (
		values   [2]uint32
		intact   [2]bool
		present  int
		problems []string
	)
	for i := range 2 {
		name := counterFile(i)
		data, err := disk.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		present++
		if err != nil {
			return counterState{err: fmt.Errorf("read %s: %w", name, err)}
		}
		body, err := unseal(data)
		var rec counterRecord
		if err == nil {
			err = json.Unmarshal(body, &rec)
		}
		if err != nil {
			problems = append(problems, name+": "+err.Error())
			continue
		}
		values[i], intact[i] = rec.Value, true
	}
	switch {
	case present == 0:
		return counterState{healthy: true}
	case !intact[0] && !intact[1]:
		return counterState{err: fmt.Errorf("%w: %s", agent.ErrCounterUnreadable, strings.Join(problems, "; "))}
	}
	return counterState{
		value:   max(values[0], values[1]),
		healthy: intact[0] && intact[1] && values[0] == values[1],
	}
}

// writeCounter stores v in both copies, copy 0 first.
func writeCounter(disk Disk, v uint32) error {
	body, _ := json.Marshal(counterRecord{Value: v})
	for i := range 2 {
		if err := replaceFile(disk, counterFile(i), seal(body)); err != nil {
			return fmt.Errorf("store security counter %d in %s: %w", v, counterFile(i), err)
		}
	}
	return nil
}

// raiseCounter makes the stored counter at least v. It never lowers it and
// never writes over a counter it cannot read. A record that is readable
// but not healthy (a cut between the copies, a damaged copy) is rewritten
// whole, so that the next fault finds two good copies.
func raiseCounter(disk Disk, cur counterState, v uint32) (counterState, error) {
	if cur.err != nil {
		return cur, cur.err
	}
	if v <= cur.value && cur.healthy {
		return cur, nil
	}
	next := max(cur.value, v)
	if err := writeCounter(disk, next); err != nil {
		return cur, err
	}
	return counterState{value: next, healthy: true}, nil
}
