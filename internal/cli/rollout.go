package cli

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/protocol"
)

const rolloutUsage = `Usage:
  fota rollout create --release 1.0.5 [--hardware esp32] [--selector 'ring=canary'] [--devices a,b]
                      [--waves 10%,50%,100%] [--soak 1h] [--max-failures 5%] [--min-outcomes 3]
                      [--silent-timeout 1h] [--window 'Mon-Fri 01:00-05:00 Europe/Berlin' ...]
                      [--start 2026-12-03T01:00:00Z] [--supersede]
  fota rollout list   [--json]
  fota rollout show   ID [--json]
  fota rollout pause  ID [--reason TEXT]
  fota rollout resume ID
  fota rollout abort  ID [--reason TEXT]

A release reaches devices only through a rollout (or a pin: fota device
assign). create targets the devices of the release's hardware that match
--selector (labels: k=v, k!=v, k, !k, comma-separated; see fota device
label), or those listed by --devices, or all of them. Devices registered or
labelled later that match join it (rollouts whose last wave reaches
everyone). --waves splits them: percentages or counts, cumulative
(10%,50%,100% or 5,50,all); each device's wave is fixed by a stable hash
of the release and its id. A wave opens when the one before has soaked
(--soak; 0 for none) and passed the health gate:
  - success is a device confirming the new image after its self-test;
    failures are rollbacks, failures, refusals, and devices offered the
    update that report no outcome within --silent-timeout;
  - --max-failures 5% (of the outcomes so far) and/or a count (3, or
    5%,3): crossing it halts the rollout at once: nothing more is offered,
    downloads under way end, devices keep the image they run;
  - --min-outcomes N outcomes are needed before a wave passes.
With --window (several allowed) the release is offered only inside the
windows. A download under way when a window closes may finish; native
devices then keep the verified image and install it only when the next
window opens (the original EcoWatt firmware installs when its download ends).
Devices that already run the release or a newer one are left out.
A device is in one rollout at a time per hardware: create refuses a target
that overlaps a scheduled, running, paused or halted rollout, naming it,
unless --supersede (the older rollout gives those devices up). Pins win
over rollouts.
pause stops new offers (downloads under way finish); resume goes on (after a
halt, the failures that halted it are accepted: the gate counts new ones);
abort ends it for good and ends its downloads.
These take --server and --token (or FOTA_SERVER and FOTA_TOKEN).

Examples:
  fota rollout create --release 1.0.5 --selector ring=canary --waves 1,100%
  fota rollout create --release 1.0.5 --waves 10%,50%,100% --soak 2h --max-failures 5%,3 --min-outcomes 5
  fota rollout show 3 --json
`

func runRollout(e *env, args []string) error {
	return subcommand(e, "rollout", args, map[string]func(*env, []string) error{
		"create": runRolloutCreate, "list": runRolloutList, "show": runRolloutShow,
		"pause": rolloutAction("pause"), "resume": rolloutAction("resume"), "abort": rolloutAction("abort"),
	}, rolloutUsage)
}

func runRolloutCreate(e *env, args []string) error {
	fs := newFlags("rollout create")
	server, token := serverFlags(fs)
	release := fs.String("release", "", "release version to roll out")
	hardware := fs.String("hardware", "", "hardware (needed when the version is published for several)")
	selector := fs.String("selector", "", "label selector, e.g. ring=canary,site!=lab")
	devices := fs.String("devices", "", "comma-separated device ids (instead of --selector)")
	waves := fs.String("waves", "", "waves: 10%,50%,100% or 5,50,all (default one wave: 100%)")
	soak := fs.String("soak", "", "how long each wave runs before the next may open (default 1h; 0 for none)")
	maxFailures := fs.String("max-failures", "", "halt beyond this share and/or count of failures: 5%, 3 or 5%,3 (default 5%; none for no limit)")
	minOutcomes := fs.String("min-outcomes", "", "outcomes needed before a wave passes (default 1)")
	silent := fs.String("silent-timeout", "", "a device offered the update with no outcome after this counts as failed (default 1h)")
	var windows stringList
	fs.Var(&windows, "window", "maintenance window, e.g. 'Mon-Fri 01:00-05:00 Europe/Berlin' (repeat for several)")
	start := fs.String("start", "", "start at this time (RFC 3339) instead of now")
	supersede := fs.Bool("supersede", false, "take devices from the rollouts that hold them")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, rolloutUsage, args); err != nil {
		return err
	}
	if *release == "" {
		return &usageError{msg: "--release is required", hint: "fota rollout create --release 1.0.5 --selector ring=canary"}
	}
	req := protocol.CreateRollout{Release: *release, Hardware: *hardware, Selector: *selector, Waves: *waves, Soak: *soak,
		MaxFailures: *maxFailures, SilentTimeout: *silent, Windows: windows, Supersede: *supersede}
	if *devices != "" {
		for _, id := range strings.Split(*devices, ",") {
			if id = strings.TrimSpace(id); id != "" {
				req.Devices = append(req.Devices, id)
			}
		}
	}
	if *minOutcomes != "" {
		n, err := strconv.Atoi(*minOutcomes)
		if err != nil || n < 0 {
			return usagef("--min-outcomes %q: want a count, 0 or more", *minOutcomes)
		}
		req.MinOutcomes = &n
	}
	if *start != "" {
		t, err := time.Parse(time.RFC3339, *start)
		if err != nil {
			return usagef("--start %q: want a time like 2026-12-03T01:00:00Z", *start)
		}
		req.Start = t
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	r, err := a.CreateRollout(e.ctx, req)
	if err != nil {
		return fmt.Errorf("create rollout of %s: %w", *release, err)
	}
	if *asJSON {
		return printJSON(e, r)
	}
	fmt.Fprintf(e.stdout, "rollout %d: %s for %s to %d devices in %d wave(s) of %s devices, %s\n", r.ID, r.Release, r.Hardware, r.Counts.Targeted,
		r.Waves, waveSizes(r), r.State)
	if r.UpToDate > 0 {
		fmt.Fprintf(e.stdout, "%d device(s) the target names already run %s or newer: left out\n", r.UpToDate, r.Release)
	}
	if *supersede {
		fmt.Fprintln(e.stdout, "rollouts that held some of these devices gave them up (fota rollout list shows which)")
	}
	if r.Counts.Targeted == 0 {
		e.warn("no device is in rollout %d now: devices registered or labelled later that match join it%s", r.ID, labelKeysHint(e, a, *selector))
	}
	return nil
}

// waveSizes writes the devices per wave: "2, 18, 180".
func waveSizes(r *protocol.Rollout) string {
	var sizes []string
	for _, w := range r.WaveCounts {
		sizes = append(sizes, strconv.Itoa(w.Counts.Targeted))
	}
	return strings.Join(sizes, ", ")
}

func runRolloutList(e *env, args []string) error {
	fs := newFlags("rollout list")
	server, token := serverFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, rolloutUsage, args); err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	rs, err := a.Rollouts(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, rs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRELEASE\tHARDWARE\tSTATE\tWAVE\tTARGETED\tOFFERED\tCONFIRMED\tFAILED\tSILENT\tSUPERSEDED\tTARGET\tREASON")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.ID, shown(r.Release), shown(r.Hardware), r.State, r.Wave, r.Waves,
			r.Counts.Targeted, r.Counts.Offered, r.Counts.Confirmed, r.Counts.Failed, r.Counts.Silent, r.Counts.Superseded, target(&r), shown(r.Reason))
	}
	return tw.Flush()
}

func target(r *protocol.Rollout) string {
	switch {
	case len(r.DeviceIDs) > 0:
		return fmt.Sprintf("%d listed", len(r.DeviceIDs))
	case r.Selector != "":
		return shown(r.Selector)
	}
	return "all"
}

// rolloutArgs reads "ID [flags]".
func rolloutArgs(e *env, name string, args []string, flags func(fsAdder)) (int64, *string, *string, error) {
	fs := newFlags("rollout " + name)
	server, token := serverFlags(fs)
	if flags != nil {
		flags(fs)
	}
	rest, err := parseFlags(e, fs, rolloutUsage, args)
	if err != nil {
		return 0, nil, nil, err
	}
	if len(rest) != 1 {
		return 0, nil, nil, &usageError{msg: fmt.Sprintf("fota rollout %s needs one rollout id", name), hint: "fota rollout list shows them"}
	}
	id, err := strconv.ParseInt(rest[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, nil, nil, usagef("rollout id %q: want a number (fota rollout list shows them)", rest[0])
	}
	return id, server, token, nil
}

type fsAdder interface {
	String(name, value, usage string) *string
	Bool(name string, value bool, usage string) *bool
}

func runRolloutShow(e *env, args []string) error {
	var asJSON *bool
	id, server, token, err := rolloutArgs(e, "show", args, func(fs fsAdder) { asJSON = fs.Bool("json", false, "print JSON") })
	if err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	r, err := a.Rollout(e.ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, r)
	}
	fmt.Fprintf(e.stdout, "rollout %d: %s for %s, %s, wave %d of %d (%s)\n", r.ID, shown(r.Release), shown(r.Hardware), r.State, r.Wave, r.Waves, r.WaveSpec)
	if r.Reason != "" {
		fmt.Fprintf(e.stdout, "reason: %s\n", shown(r.Reason))
	}
	fmt.Fprintf(e.stdout, "target: %s; soak %s; max failures %s; min outcomes %d; silent after %s\n", target(r), r.Soak, r.MaxFailures,
		r.MinOutcomes, r.SilentTimeout)
	for _, w := range r.Windows {
		fmt.Fprintf(e.stdout, "window: %s\n", shown(w))
	}
	fmt.Fprintf(e.stdout, "gate: %s", r.Gate)
	if r.GateReason != "" {
		fmt.Fprintf(e.stdout, " (%s)", shown(r.GateReason))
	}
	fmt.Fprintln(e.stdout)
	if r.Traffic != nil {
		fmt.Fprintf(e.stdout, "on the wire: %s\n", trafficLine(*r.Traffic))
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tOPEN\tTARGETED\tPENDING\tOFFERED\tDOWNLOADING\tCONFIRMED\tFAILED\tACCEPTED\tSILENT\tSUPERSEDED")
	for _, w := range r.WaveCounts {
		c := w.Counts
		fmt.Fprintf(tw, "%d\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", w.Wave, w.Open, c.Targeted, c.Pending, c.Offered, c.Downloading, c.Confirmed,
			c.Failed, c.Accepted, c.Silent, c.Superseded)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tWAVE\tSTATE\tREASON")
	for _, d := range r.Devices {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", shown(d.ID), d.Wave, d.State, shown(d.Reason))
	}
	return tw.Flush()
}

func rolloutAction(action string) func(*env, []string) error {
	return func(e *env, args []string) error {
		var reason *string
		id, server, token, err := rolloutArgs(e, action, args, func(fs fsAdder) {
			if action != "resume" {
				reason = fs.String("reason", "", "why, for the history")
			}
		})
		if err != nil {
			return err
		}
		a, err := adminClient(*server, *token)
		if err != nil {
			return err
		}
		why := ""
		if reason != nil {
			why = *reason
		}
		r, err := a.RolloutAction(e.ctx, id, action, why)
		if err != nil {
			return fmt.Errorf("%s rollout %d: %w", action, id, err)
		}
		fmt.Fprintf(e.stdout, "rollout %d: %s, wave %d of %d\n", r.ID, r.State, r.Wave, r.Waves)
		return nil
	}
}

// labelKeysHint names the label keys the devices have, when a selector
// matched nothing: the likeliest mistake is a misspelt key.
func labelKeysHint(e *env, a *client.Admin, selector string) string {
	if selector == "" {
		return ""
	}
	ds, err := a.Devices(e.ctx)
	if err != nil {
		return ""
	}
	keys := map[string]bool{}
	for _, d := range ds {
		for k := range d.Labels {
			keys[k] = true
		}
	}
	if len(keys) == 0 {
		return "; no device has labels yet (fota device label)"
	}
	return fmt.Sprintf("; label keys in use: %s", strings.Join(slices.Sorted(maps.Keys(keys)), ", "))
}
