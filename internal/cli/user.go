package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/postgres"
	"github.com/ecowatt/fota/internal/sqlite"
)

const userUsage = `Usage:
  fota user add --name NAME --role admin|operator|viewer [--password-stdin]
  fota user passwd --name NAME [--password-stdin]
  fota user remove --name NAME
  fota user list
  fota user signout --name NAME

Dashboard users: the people who sign in to the web dashboard of 'fota
serve'. Each has a unique name and a role; each role may do all that the
one before it may:
  viewer    reads every page
  operator  also runs rollouts (create, pause, resume, abort), labels
            devices and pins them
  admin     also manages releases (upload, withdraw) and users

add and passwd ask for the password twice on the terminal, without echo;
with --password-stdin they read it as one line from standard input, for
scripts. A password has at least 10 characters and at most 256 bytes; only
its argon2id hash is stored. passwd, remove and signout end the user's
sessions at once, on every server: sessions are read from the database on
every request. signout alone keeps the password.

They act on the server's database on this machine, with --data DIR (default
./fota-data) or --db DSN for PostgreSQL, while the server runs or not.
Events name "local" as who made each change.

Examples:
  fota user add --name ana --role admin
  printf '%s\n' "$PASSWORD" | fota user add --name ci --role viewer --password-stdin
  fota user passwd --name ana
  fota user signout --name ana
  fota user list --data /var/lib/fota
`

// roleHint says what each role may do.
const roleHint = "viewer reads every page; operator also runs rollouts, labels devices and pins them; admin also manages releases and users"

func runUser(e *env, args []string) error {
	return subcommand(e, "user", args, map[string]func(*env, []string) error{
		"add": runUserAdd, "passwd": runUserPasswd, "remove": runUserRemove, "list": runUserList, "signout": runUserSignout}, userUsage)
}

// userTarget is the database a user command acts on.
type userTarget struct{ data, db *string }

func userFlags(fs interface {
	String(name, value, usage string) *string
}) userTarget {
	return userTarget{
		data: fs.String("data", "", "the server's data folder, whose database to act on (default ./fota-data)"),
		db:   fs.String("db", "", "the server's PostgreSQL DSN, to act on that database instead"),
	}
}

// open opens the server's store on this machine; its changes are recorded
// as made by "local".
func (t userTarget) open(e *env) (fota.Store, context.Context, error) {
	ctx := fota.WithActor(e.ctx, "local")
	if *t.db != "" && *t.data != "" {
		return nil, nil, usagef("give --data or --db, not both")
	}
	if *t.db != "" {
		store, err := postgres.Open(e.ctx, *t.db)
		return store, ctx, err
	}
	data := *t.data
	if data == "" {
		data = "./fota-data"
	}
	if _, err := os.Stat(filepath.Join(data, "fota.db")); err != nil {
		return nil, nil, withHint(fmt.Errorf("no fota database in %s", data),
			"start 'fota serve --data "+data+"' once, pass the server's --data, or --db for PostgreSQL")
	}
	store, err := sqlite.Open(e.ctx, filepath.Join(data, "fota.db"))
	return store, ctx, err
}

// nameFlag checks --name of command.
func nameFlag(command, name string) error {
	if name == "" {
		return &usageError{msg: "--name is required", hint: "fota user list shows the users; fota user " + command + " --name ana"}
	}
	if !fota.ValidTokenName(name) {
		return usagef("--name %q: want 1-64 characters of A-Z a-z 0-9 _ . - (not . or ..)", name)
	}
	return nil
}

// sessionsInForce counts a user's sessions in force, for what a command
// says it ended.
func sessionsInForce(ctx context.Context, store fota.Store, name string) (int, error) {
	wss, err := store.WebSessions(ctx, name, time.Now())
	return len(wss), err
}

// unknownUser adds what to do to a store's not-found error.
func unknownUser(err error) error {
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		// The store's public message, without its code ("not_found: ...").
		return withHint(errors.New(fota.ErrorMessage(err)), "fota user list shows the users; fota user add adds one")
	}
	return err
}

func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}

func runUserAdd(e *env, args []string) error {
	fs := newFlags("user add")
	target := userFlags(fs)
	name := fs.String("name", "", "a unique name, as the user signs in with (required)")
	role := fs.String("role", "", "what the user may do: admin, operator or viewer (required)")
	fromStdin := fs.Bool("password-stdin", false, "read the password as one line from standard input, not from the terminal")
	if err := parseNoArgs(e, fs, userUsage, args); err != nil {
		return err
	}
	if err := nameFlag("add", *name); err != nil {
		return err
	}
	switch {
	case *role == "":
		return &usageError{msg: "--role is required: admin, operator or viewer", hint: roleHint}
	case !fota.ValidRole(*role):
		return &usageError{msg: fmt.Sprintf("--role %q: want admin, operator or viewer", *role), hint: roleHint}
	}
	store, ctx, err := target.open(e)
	if err != nil {
		return err
	}
	defer store.Close()
	exists := withHint(fmt.Errorf("user %s exists already", *name),
		"change its password with 'fota user passwd --name "+*name+"'; to change its role, remove it and add it again")
	if _, err := store.User(ctx, *name); err == nil {
		return exists // before asking for a password
	} else if fota.ErrorCode(err) != fota.ENOTFOUND {
		return err
	}
	hash, err := newPassword(e, *name, *fromStdin)
	if err != nil {
		return err
	}
	err = store.CreateUser(ctx, &fota.User{Name: *name, Role: *role, PasswordHash: hash})
	if fota.ErrorCode(err) == fota.ECONFLICT {
		return exists
	}
	if err != nil {
		return fmt.Errorf("add user %s: %w", *name, err)
	}
	fmt.Fprintf(e.stdout, "user %s added, role %s\n", *name, *role)
	return nil
}

func runUserPasswd(e *env, args []string) error {
	fs := newFlags("user passwd")
	target := userFlags(fs)
	name := fs.String("name", "", "the user (required)")
	fromStdin := fs.Bool("password-stdin", false, "read the password as one line from standard input, not from the terminal")
	if err := parseNoArgs(e, fs, userUsage, args); err != nil {
		return err
	}
	if err := nameFlag("passwd", *name); err != nil {
		return err
	}
	store, ctx, err := target.open(e)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.User(ctx, *name); err != nil {
		return unknownUser(err) // before asking for a password
	}
	hash, err := newPassword(e, *name, *fromStdin)
	if err != nil {
		return err
	}
	ended, err := sessionsInForce(ctx, store, *name)
	if err != nil {
		return err
	}
	if err := store.SetUserPassword(ctx, *name, hash); err != nil {
		return unknownUser(fmt.Errorf("change the password of %s: %w", *name, err))
	}
	fmt.Fprintf(e.stdout, "password of user %s changed; %s signed out\n", *name, plural(ended, "session"))
	return nil
}

func runUserRemove(e *env, args []string) error {
	fs := newFlags("user remove")
	target := userFlags(fs)
	name := fs.String("name", "", "the user (required)")
	if err := parseNoArgs(e, fs, userUsage, args); err != nil {
		return err
	}
	if err := nameFlag("remove", *name); err != nil {
		return err
	}
	store, ctx, err := target.open(e)
	if err != nil {
		return err
	}
	defer store.Close()
	ended, err := sessionsInForce(ctx, store, *name)
	if err != nil {
		return err
	}
	if err := store.RemoveUser(ctx, *name); err != nil {
		return unknownUser(fmt.Errorf("remove user %s: %w", *name, err))
	}
	fmt.Fprintf(e.stdout, "user %s removed; %s signed out\n", *name, plural(ended, "session"))
	users, err := store.Users(ctx)
	if err != nil {
		return err
	}
	for _, u := range users {
		if u.Role == fota.RoleAdmin {
			return nil
		}
	}
	e.warn("no admin is left to manage releases and users on the dashboard; add one with 'fota user add --role admin'")
	return nil
}

func runUserList(e *env, args []string) error {
	fs := newFlags("user list")
	target := userFlags(fs)
	if err := parseNoArgs(e, fs, userUsage, args); err != nil {
		return err
	}
	store, ctx, err := target.open(e)
	if err != nil {
		return err
	}
	defer store.Close()
	users, err := store.Users(ctx)
	if err != nil {
		return err
	}
	sessions, err := store.WebSessions(ctx, "", time.Now())
	if err != nil {
		return err
	}
	inForce := map[string]int{}
	for _, s := range sessions {
		inForce[s.UserName]++
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tSESSIONS")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", shown(u.Name), shown(u.Role), u.Created.Local().Format(time.DateTime), inForce[u.Name])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(users) == 0 {
		fmt.Fprintln(e.stderr, "fota: hint: no dashboard users yet; add one with 'fota user add --name NAME --role admin'")
	}
	return nil
}

func runUserSignout(e *env, args []string) error {
	fs := newFlags("user signout")
	target := userFlags(fs)
	name := fs.String("name", "", "the user (required)")
	if err := parseNoArgs(e, fs, userUsage, args); err != nil {
		return err
	}
	if err := nameFlag("signout", *name); err != nil {
		return err
	}
	store, ctx, err := target.open(e)
	if err != nil {
		return err
	}
	defer store.Close()
	n, err := store.RevokeUserSessions(ctx, *name)
	if err != nil {
		return unknownUser(fmt.Errorf("sign out user %s: %w", *name, err))
	}
	fmt.Fprintf(e.stdout, "user %s: %s signed out\n", *name, plural(n, "session"))
	return nil
}

// newPassword reads a new password for user, from the terminal (asked
// twice, without echo) or as one line of stdin, checks it and returns its
// hash. No error it returns holds the password.
func newPassword(e *env, user string, fromStdin bool) (string, error) {
	var pw []byte
	if fromStdin {
		var err error
		if pw, err = readPasswordLine(e.stdin); err != nil {
			return "", err
		}
	} else {
		tty, ok := asTerminal(e.stdin)
		if !ok {
			return "", &usageError{msg: "standard input is not a terminal, so the password cannot be asked for",
				hint: `give it as one line with --password-stdin: printf '%s\n' "$PASSWORD" | fota user ... --password-stdin`}
		}
		fmt.Fprintf(e.stderr, "New password for %s (at least %d characters): ", user, password.MinLength)
		first, err := readTerminal(e, tty)
		if err != nil {
			return "", err
		}
		if err := password.CheckStrength(string(first)); err != nil {
			return "", withHint(err, "nothing changed; run the command again with a longer password")
		}
		fmt.Fprint(e.stderr, "The same again: ")
		again, err := readTerminal(e, tty)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(first, again) {
			return "", withHint(errors.New("the two passwords differ"), "nothing changed; run the command again")
		}
		pw = first
	}
	if err := password.CheckStrength(string(pw)); err != nil {
		return "", withHint(err, "nothing changed")
	}
	return password.Hash(string(pw))
}

// readTerminal reads one password from the terminal; an interrupt (the
// context ends) gives up, leaving the terminal as it was.
func readTerminal(e *env, tty terminal) ([]byte, error) {
	pw, err := tty.ReadPassword(e.ctx)
	fmt.Fprintln(e.stderr)
	if e.ctx.Err() != nil {
		return nil, errors.New("interrupted; nothing changed")
	}
	if err != nil {
		return nil, fmt.Errorf("read the password from the terminal: %w", err)
	}
	return pw, nil
}

// readPasswordLine reads a password as the first line of r: its line
// break (\n or \r\n) is not part of it. It reads no more than a line as
// long as the longest password allows.
func readPasswordLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, password.MaxLength+2))
	line, err := br.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the password from standard input: %w", err)
	}
	if errors.Is(err, io.EOF) && len(line) > password.MaxLength {
		return nil, fmt.Errorf("the password on standard input is longer than %d bytes", password.MaxLength)
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) == 0 {
		return nil, &usageError{msg: "--password-stdin: no password on standard input",
			hint: `give it as one line: printf '%s\n' "$PASSWORD" | fota user ... --password-stdin`}
	}
	return line, nil
}

// terminal is a standard input that can read a password without echo: the
// process's terminal, or a test's stand-in.
type terminal interface {
	ReadPassword(ctx context.Context) ([]byte, error)
}

// asTerminal is stdin as a terminal, if it is one.
func asTerminal(stdin io.Reader) (terminal, bool) {
	if t, ok := stdin.(terminal); ok {
		return t, true
	}
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return tty(int(f.Fd())), true
	}
	return nil, false
}

// tty is a terminal's file descriptor.
type tty int

// ReadPassword reads a line without echo. The read cannot be interrupted,
// and fota's signal handler keeps Ctrl-C from ending the process: when
// ctx ends it restores the terminal (echo back on) and returns at once.
func (t tty) ReadPassword(ctx context.Context) ([]byte, error) {
	state, err := term.GetState(int(t))
	if err != nil {
		return nil, err
	}
	type read struct {
		pw  []byte
		err error
	}
	done := make(chan read, 1)
	go func() {
		pw, err := term.ReadPassword(int(t))
		done <- read{pw, err}
	}()
	select {
	case r := <-done:
		return r.pw, r.err
	case <-ctx.Done():
		term.Restore(int(t), state)
		return nil, ctx.Err()
	}
}
