package cli

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/mqtt"
	"github.com/ecowatt/fota/internal/update"
)

// pushFlags are fota serve's MQTT push options.
type pushFlags struct {
	listen, broker, user, passwordFile, ca *string
	rate                                   *int
}

func addPushFlags(fs *flag.FlagSet) *pushFlags {
	return &pushFlags{
		listen:       fs.String("mqtt-listen", "", "run an MQTT broker in the server on this address (e.g. :1883; TLS with --tls-cert) and push notifications to devices through it"),
		broker:       fs.String("mqtt-broker", "", "push notifications through this external MQTT broker (mqtt://host:1883 or mqtts://host:8883), for several replicas"),
		user:         fs.String("mqtt-user", "fota-server", "with --mqtt-broker: the server's MQTT user name"),
		passwordFile: fs.String("mqtt-password-file", "", "with --mqtt-broker: a file holding the server's MQTT password"),
		ca:           fs.String("mqtt-ca", "", "with --mqtt-broker mqtts://: CA certificates (PEM) to trust instead of the system's"),
		rate: fs.Int("push-rate", update.DefaultNotifyRate, "devices woken together are asked to check in over a spread of at most this many a second "+
			"(per server; lower it if check-ins queue when a wave opens)"),
	}
}

// check refuses contradictory push options before anything starts.
func (p *pushFlags) check() error {
	if *p.listen != "" && *p.broker != "" {
		return usagef("--mqtt-listen runs a broker in the server and --mqtt-broker uses another: give one")
	}
	if *p.rate < 1 {
		return usagef("--push-rate %d: want at least 1 device a second", *p.rate)
	}
	if *p.broker == "" && (*p.passwordFile != "" || *p.ca != "") {
		return usagef("--mqtt-password-file and --mqtt-ca go with --mqtt-broker")
	}
	if *p.broker != "" {
		u, err := url.Parse(*p.broker)
		if err != nil || u.Host == "" || !slices.Contains([]string{"mqtt", "mqtts", "tcp", "ssl", "tls"}, u.Scheme) {
			return &usageError{msg: fmt.Sprintf("--mqtt-broker %q is not a broker URL", *p.broker), hint: "--mqtt-broker mqtts://mqtt.example:8883 (or mqtt://host:1883)"}
		}
		if u.User != nil {
			return usagef("--mqtt-broker: give the user and password with --mqtt-user and --mqtt-password-file, not in the URL")
		}
		if *p.passwordFile == "" {
			return &usageError{msg: "--mqtt-broker needs --mqtt-password-file: the broker's password for " + *p.user,
				hint: "fota mqtt acl writes one (fota-server.password) for mosquitto"}
		}
		if *p.ca != "" && (u.Scheme == "mqtt" || u.Scheme == "tcp") {
			return usagef("--mqtt-ca is for a TLS broker: use mqtts://")
		}
	}
	return nil
}

// push is a running notifier and how to stop it.
type push struct {
	notifier fota.Notifier
	where    string // for the start message
	close    func()
}

// start starts push as the flags say; nil when push is off. tlsConfig is
// the server's own (from --tls-cert), which the embedded broker serves too.
func (p *pushFlags) start(ctx context.Context, store fota.Store, tlsConfig *tls.Config, logger *slog.Logger) (*push, error) {
	switch {
	case *p.listen != "":
		b, err := mqtt.NewBroker(mqtt.BrokerConfig{Listen: *p.listen, TLS: tlsConfig, Device: store.Device, Logger: logger})
		if err != nil {
			return nil, withHint(fmt.Errorf("start the MQTT broker on %s: %w", *p.listen, err), "choose another --mqtt-listen, or stop what uses that port")
		}
		scheme := "mqtt"
		if tlsConfig != nil {
			scheme = "mqtts"
		}
		return &push{notifier: b, where: fmt.Sprintf("MQTT broker on %s://%s", scheme, b.Addr()), close: func() { b.Close() }}, nil
	case *p.broker != "":
		cfg := mqtt.PublisherConfig{URL: *p.broker, Username: *p.user, Logger: logger}
		if *p.passwordFile != "" {
			b, err := os.ReadFile(*p.passwordFile)
			if err != nil {
				return nil, fmt.Errorf("read --mqtt-password-file: %w", err)
			}
			cfg.Password = strings.TrimSpace(string(b))
		}
		if *p.ca != "" {
			pool, err := mqtt.LoadCAFile(*p.ca)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = pool
		}
		pub, err := mqtt.NewPublisher(ctx, cfg)
		if err != nil {
			return nil, withHint(fmt.Errorf("connect to MQTT broker %s: %w", *p.broker, err),
				"check the address, --mqtt-user and --mqtt-password-file ('fota mqtt acl' writes mosquitto's files)")
		}
		return &push{notifier: pub, where: "MQTT broker " + *p.broker, close: func() { pub.Close() }}, nil
	}
	return nil, nil
}
