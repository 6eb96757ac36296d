package mqtt

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// ServerAccount is the broker account the fota servers publish as.
type ServerAccount struct {
	Username string
	Password string // hashed into the password file; never logged
}

// The $7$ hash of mosquitto 2.x (mosquitto_passwd's default; see
// src/password_mosq.c and apps/mosquitto_passwd/mosquitto_passwd.c):
//
//	user:$7$ITERATIONS$base64(salt)$base64(PBKDF2-HMAC-SHA512(password, salt, ITERATIONS, 64))
//
// with a 12-byte random salt and standard, padded base64.
const (
	mosquittoIterations = 101 // mosquitto_passwd's PW_DEFAULT_ITERATIONS
	mosquittoSaltSize   = 12  // mosquitto reads no other salt length
	mosquittoHashSize   = 64
)

// mosquittoHash is a password's $7$ form with salt.
func mosquittoHash(password string, salt []byte, iterations int) (string, error) {
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, mosquittoHashSize)
	if err != nil {
		return "", fmt.Errorf("hash mqtt password: %w", err)
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("$7$%d$%s$%s", iterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// MosquittoFiles makes a mosquitto 2.x password file and ACL file for the
// registered devices (removed ones are left out: their accounts must stop
// working) and the server's account.
//
// Each device may log in as its id with protocol.MQTTPassword and read its
// own notify topic; the server may write every device's notify topic;
// nothing else is granted, so a device can neither publish nor listen to
// another device. Mosquitto 2.0 (2.0.11 at least) does not check
// subscriptions against the ACL: a device's SUBSCRIBE to another device's
// topic is granted, but the ACL's read check then withholds every message
// on it (TestExternalBroker proves it).
//
// The files hold a line per device in id order, so that two runs differ
// only in the salts.
func MosquittoFiles(devices []*fota.Device, server ServerAccount) (passwd, acl []byte, err error) {
	return mosquittoFiles(devices, server, rand.Reader)
}

func mosquittoFiles(devices []*fota.Device, server ServerAccount, random io.Reader) (passwd, acl []byte, err error) {
	if err := checkUsername(server.Username); err != nil {
		return nil, nil, fmt.Errorf("server account: %w", err)
	}
	if server.Password == "" {
		return nil, nil, fmt.Errorf("server account %q has no password", server.Username)
	}
	live := make([]*fota.Device, 0, len(devices))
	for _, d := range devices {
		if d.Removed.IsZero() {
			live = append(live, d)
		}
	}
	slices.SortFunc(live, func(a, b *fota.Device) int { return strings.Compare(a.ID, b.ID) })

	var pw, ac bytes.Buffer
	ac.WriteString("# mosquitto ACL made by 'fota mqtt acl': regenerate it when devices are added or removed.\n" +
		"# Each device reads its own notify topic; the fota server writes them; nothing else is granted.\n\n")
	line := func(user, password string) error {
		salt := make([]byte, mosquittoSaltSize)
		if _, err := io.ReadFull(random, salt); err != nil {
			return fmt.Errorf("make salt: %w", err)
		}
		h, err := mosquittoHash(password, salt, mosquittoIterations)
		if err != nil {
			return err
		}
		fmt.Fprintf(&pw, "%s:%s\n", user, h)
		return nil
	}
	if err := line(server.Username, server.Password); err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(&ac, "user %s\ntopic write %s+%s\n", server.Username, protocol.NotifyTopicPrefix, protocol.NotifyTopicSuffix)
	for i, d := range live {
		if err := checkUsername(d.ID); err != nil {
			return nil, nil, fmt.Errorf("device: %w", err)
		}
		if d.ID == server.Username {
			return nil, nil, fmt.Errorf("server account %q has the name of a device: choose another", server.Username)
		}
		if i > 0 && live[i-1].ID == d.ID {
			return nil, nil, fmt.Errorf("device %q is listed twice", d.ID)
		}
		if err := line(d.ID, protocol.MQTTPassword(d.PSK, d.ID)); err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(&ac, "\nuser %s\ntopic read %s\n", d.ID, protocol.NotifyTopic(d.ID))
	}
	return pw.Bytes(), ac.Bytes(), nil
}

// checkUsername refuses a name that would break either file or widen the
// ACL: ':' ends the name in the password file, white space and line ends
// split ACL lines, and '+', '#' or '/' in a device id would make its topic
// a wildcard or another device's topic.
func checkUsername(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("user name %q: want 1-64 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'
		if !ok {
			return fmt.Errorf("user name %q: want only A-Z a-z 0-9 _ . -", name)
		}
	}
	return nil
}
