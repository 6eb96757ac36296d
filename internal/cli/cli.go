// Package cli implements the fota command line: one file per command. Run
// is the whole program as a value, so tests drive it in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Version is the fota version, set at link time with -ldflags "-X".
var Version = "0.1.0-dev"

// env is what a command sees of the world.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (e *env) warn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "fota: warning: "+format+"\n", args...)
}

// usageError is a mistake in how a command was called: exit code 2.
type usageError struct {
	msg  string
	hint string
}

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// hintError carries a line that tells the user what to do next.
type hintError struct {
	err  error
	hint string
}

func (h *hintError) Error() string { return h.err.Error() }
func (h *hintError) Unwrap() error { return h.err }

func withHint(err error, hint string) error { return &hintError{err: err, hint: hint} }

type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"demo", "run the whole system on this machine: server, devices, an update and a rollback", runDemo},
		{"keys", "make signing and firmware keys, and key files for device builds", runKeys},
		{"release", "build, verify and inspect release bundles", runRelease},
		{"firmware", "make simulated EcoWatt ESP32 firmware images", runFirmware},
		{"delta", "make and apply detools delta patches between firmware images", runDelta},
		{"serve", "run the update server", runServe},
		{"token", "make admin API tokens", runToken},
		{"user", "manage who may sign in to the dashboard, and sign them out", runUser},
		{"migrate", "bring a PostgreSQL database's schema up to date", runMigrate},
		{"device", "register devices, label them, list them, pin them to releases", runDevice},
		{"rollout", "roll a release out in waves, halting by itself on failures", runRollout},
		{"status", "show update sessions in progress and recent events", runStatus},
		{"webhook", "send events to HTTP endpoints as they happen", runWebhook},
		{"mqtt", "make an external mosquitto's accounts and ACL for MQTT push", runMQTT},
		{"load", "run a simulated fleet against a server, for capacity planning", runLoad},
		{"version", "print the fota version", func(e *env, _ []string) error {
			fmt.Fprintln(e.stdout, "fota", Version)
			return nil
		}},
	}
}

const topUsage = `fota: firmware over the air for EcoWatt ESP32 devices

Usage:
  fota <command> [arguments]

Commands:
%s
Examples:
  fota demo
  fota keys init --dir keys
  fota release build --keys keys -o app-1.0.4.fota build/app.bin
  fota release verify --keys keys app-1.0.4.fota
  fota serve --data ./fota-data --trust keys/signing.pub
  fota release publish --server http://127.0.0.1:8080 --token $FOTA_TOKEN app-1.0.4.fota
  fota rollout create --release 1.0.4 --waves 10%%,100%% --soak 1h

Run 'fota <command> --help' for a command's flags.
`

func printTopUsage(w io.Writer) {
	var b strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, topUsage, b.String())
}

// Run runs fota with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printTopUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printTopUsage(stdout)
		return exitOK
	case "--version", "-version":
		args = []string{"version"}
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return report(e, c.run(e, args[1:]))
		}
	}
	return report(e, &usageError{msg: fmt.Sprintf("unknown command %q", args[0]), hint: "run 'fota help' for the list of commands"})
}

// report prints err in the fota: error / fota: hint form and maps it to an exit code.
func report(e *env, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "fota: error: %v\n", err)
	var u *usageError
	var h *hintError
	switch {
	case errors.As(err, &u):
		if u.hint != "" {
			fmt.Fprintf(e.stderr, "fota: hint: %s\n", u.hint)
		}
		return exitUsage
	case errors.As(err, &h):
		fmt.Fprintf(e.stderr, "fota: hint: %s\n", h.hint)
	default:
		if hint := unreachableHint(err); hint != "" {
			fmt.Fprintf(e.stderr, "fota: hint: %s\n", hint)
		}
	}
	return exitFailure
}

// unreachableHint says what to do when nothing answered at the server's
// address, naming the address tried.
func unreachableHint(err error) string {
	var ue *url.Error
	var op *net.OpError
	if !errors.As(err, &ue) || !errors.As(err, &op) || op.Op != "dial" {
		return ""
	}
	server := ue.URL
	if u, perr := url.Parse(ue.URL); perr == nil {
		server = u.Scheme + "://" + u.Host
	}
	return fmt.Sprintf("nothing answers at %s: start 'fota serve' there, or point --server (or FOTA_SERVER) at the server", server)
}

// newFlags makes a quiet flag set: parseFlags prints usage and errors in
// fota's own form.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses flags that may come before, between or after the
// positional arguments, and returns the positional ones. --help prints usage.
func parseFlags(e *env, fs *flag.FlagSet, usage string, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(e.stdout, usage)
				fs.SetOutput(e.stdout)
				fs.PrintDefaults()
				return nil, flag.ErrHelp
			}
			return nil, &usageError{msg: err.Error(), hint: fmt.Sprintf("run 'fota %s --help' for usage", fs.Name())}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseNoArgs is parseFlags for a command that takes flags only: a stray
// word (a misspelt flag's value, a file name) is a mistake, not ignored.
func parseNoArgs(e *env, fs *flag.FlagSet, usage string, args []string) error {
	rest, err := parseFlags(e, fs, usage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return &usageError{msg: fmt.Sprintf("fota %s takes no arguments, got %q", fs.Name(), rest),
			hint: fmt.Sprintf("run 'fota %s --help' for usage", fs.Name())}
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// subcommand dispatches "fota GROUP SUB ..." commands.
func subcommand(e *env, group string, args []string, subs map[string]func(*env, []string) error, usage string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return usagef("fota %s needs a subcommand", group)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, usage)
		return nil
	}
	run, ok := subs[args[0]]
	if !ok {
		return &usageError{msg: fmt.Sprintf("unknown command 'fota %s %s'", group, args[0]), hint: fmt.Sprintf("run 'fota %s --help'", group)}
	}
	return run(e, args[1:])
}
