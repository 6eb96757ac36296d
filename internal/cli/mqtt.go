package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/ecowatt/fota/internal/mqtt"
	"github.com/ecowatt/fota/keys"
)

const mqttUsage = `Usage:
  fota mqtt acl --passwd FILE --acl FILE [--server-user NAME] [--server-password-file FILE]
                [--data DIR | --db DSN] [--new-server-password] [--force]

MQTT push: the server wakes devices through a broker when a rollout wave
opens, pauses, halts or aborts, or a device is pinned; the devices then
check in over the authenticated API.

acl makes an external mosquitto 2.x's password file and ACL file from the
registered devices: each device logs in with its id and a password derived
from its key (the device computes it; nothing new to provision) and may only
read its own topic, fota/v1/devices/ID/notify; the server's account may
only publish on those topics; nothing else is granted. Removed devices are
left out. The server's broker password is read from --server-password-file,
or from NAME.password beside --passwd, which the first run makes and later
runs keep (--new-server-password makes another, which every fota server
then needs). Every file is written mode 0600 (chown them to mosquitto's
user once: a file replaced later keeps its owner); an existing file is
replaced only with --force.

Run it again after adding or removing devices, then reload mosquitto
(kill -HUP, or systemctl reload mosquitto): it reads both files at start and
on reload. It reads the devices' keys, so it acts on the server's database
on this machine, with --data DIR (default ./fota-data) or --db DSN.

Examples:
  fota mqtt acl --data /var/lib/fota --passwd /etc/mosquitto/fota.passwd --acl /etc/mosquitto/fota.acl
  fota mqtt acl --data /var/lib/fota --passwd /etc/mosquitto/fota.passwd --acl /etc/mosquitto/fota.acl --force   # after adding devices
  fota mqtt acl --db "$FOTA_DB" --passwd fota.passwd --acl fota.acl \
                --server-password-file /etc/fota/mqtt.password --force
`

func runMQTT(e *env, args []string) error {
	return subcommand(e, "mqtt", args, map[string]func(*env, []string) error{"acl": runMQTTACL}, mqttUsage)
}

// maxPasswordFile bounds what --server-password-file reads.
const maxPasswordFile = 4 << 10

func runMQTTACL(e *env, args []string) error {
	fs := newFlags("mqtt acl")
	target := userFlags(fs)
	passwdPath := fs.String("passwd", "", "write mosquitto's password file here (required)")
	aclPath := fs.String("acl", "", "write mosquitto's ACL file here (required)")
	serverUser := fs.String("server-user", "fota-server", "the broker user name the fota servers publish as")
	serverPWFile := fs.String("server-password-file", "", "read the server account's broker password from this file (default: NAME.password beside --passwd, made the first time)")
	newServerPW := fs.Bool("new-server-password", false, "make a new server broker password even if NAME.password exists (every fota server then needs the new one)")
	force := fs.Bool("force", false, "replace existing files")
	if err := parseNoArgs(e, fs, mqttUsage, args); err != nil {
		return err
	}
	if *passwdPath == "" || *aclPath == "" {
		return &usageError{msg: "--passwd and --acl are required: where to write mosquitto's password and ACL files",
			hint: "fota mqtt acl --passwd /etc/mosquitto/fota.passwd --acl /etc/mosquitto/fota.acl"}
	}
	if filepath.Clean(*passwdPath) == filepath.Clean(*aclPath) {
		return usagef("--passwd and --acl name the same file")
	}

	account := mqtt.ServerAccount{Username: *serverUser}
	madePath := "" // where a new server password goes, if one is made
	outputs := []string{*passwdPath, *aclPath}
	if *serverPWFile != "" {
		pw, err := readPasswordFile(e, *serverPWFile)
		if err != nil {
			return err
		}
		account.Password = pw
	} else {
		// The servers' password is kept from run to run: running this
		// again after adding devices must not lock the servers out.
		kept := filepath.Join(filepath.Dir(*passwdPath), *serverUser+".password")
		if _, err := os.Lstat(kept); err == nil && !*newServerPW {
			pw, err := readPasswordFile(e, kept)
			if err != nil {
				return err
			}
			account.Password = pw
			fmt.Fprintf(e.stdout, "kept the fota servers' broker password in %s (--new-server-password makes another)\n", kept)
		} else {
			madePath = kept
			outputs = append(outputs, madePath)
		}
	}
	// Refuse before any work, so a refusal changes nothing.
	if !*force {
		for _, p := range outputs {
			if _, err := os.Lstat(p); err == nil {
				hint := "use --force to replace it, or choose another name"
				if p == madePath {
					hint = "--new-server-password with --force makes a new one, which every fota server then needs"
				}
				return withHint(fmt.Errorf("%s already exists", p), hint)
			}
		}
	}
	// Files replaced keep their owner: mosquitto, which runs as its own
	// user, must still read them after a reload.
	owners := map[string]os.FileInfo{}
	for _, p := range outputs {
		if fi, err := os.Lstat(p); err == nil {
			owners[p] = fi
		}
	}
	if madePath != "" {
		var b [32]byte
		if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
			return fmt.Errorf("make the server's broker password: %w", err)
		}
		account.Password = base64.RawURLEncoding.EncodeToString(b[:])
	}

	store, _, err := target.open(e)
	if err != nil {
		return err
	}
	devices, err := store.Devices(e.ctx)
	store.Close()
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	passwd, acl, err := mqtt.MosquittoFiles(devices, account)
	if err != nil {
		return err
	}

	// The password first: the password file holds its hash.
	if madePath != "" {
		if err := keys.WriteFile(madePath, []byte(account.Password), keys.PrivateMode, *force); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s (the fota servers' broker password, user %s)\n", madePath, *serverUser)
	}
	if err := keys.WriteFile(*passwdPath, passwd, keys.PrivateMode, *force); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s (%s and %s)\n", *passwdPath, plural(len(devices), "device"), *serverUser)
	if err := keys.WriteFile(*aclPath, acl, keys.PrivateMode, *force); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", *aclPath)
	for p, fi := range owners {
		if err := keepOwner(p, fi); err != nil {
			return fmt.Errorf("give %s back its owner: %w", p, err)
		}
	}

	absPasswd, _ := filepath.Abs(*passwdPath)
	absACL, _ := filepath.Abs(*aclPath)
	fmt.Fprintf(e.stdout, "\nin mosquitto.conf (use_username_as_clientid: a device cannot log in under another's client id and push it off):\n  allow_anonymous false\n  use_username_as_clientid true\n  password_file %s\n  acl_file %s\n", absPasswd, absACL)
	fmt.Fprintf(e.stdout, "mosquitto reads them as the user it runs as (\"mosquitto\" when started as root): chown them to it\n")
	fmt.Fprintf(e.stdout, "then reload mosquitto (kill -HUP, or systemctl reload mosquitto); run this again after adding or removing devices\n")
	return nil
}

// readPasswordFile reads a one-line password: refused, as a webhook
// secret is, from a file anyone may read.
func readPasswordFile(e *env, path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read the server's broker password: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("read the server's broker password: %s is not a file", path)
	}
	// File modes say nothing on Windows.
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o004 != 0 {
		return "", withHint(fmt.Errorf("the server's broker password: anyone on this machine can read %s (mode %04o)", path, st.Mode().Perm()),
			"chmod 600 "+path+", and make a new password if others may have read it")
	}
	if w := keys.PermissionWarning(path); w != "" {
		e.warn("%s", w)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read the server's broker password: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("read the server's broker password: %w", err)
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("%s is longer than %d bytes: want a password on one line", path, maxPasswordFile)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return "", errors.New(path + " is empty: want the server's broker password on one line")
	}
	if bytes.ContainsAny(b, "\r\n") {
		return "", fmt.Errorf("%s holds more than one line: want the server's broker password alone", path)
	}
	return string(b), nil
}
