package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/blobdir"
	"github.com/ecowatt/fota/internal/postgres"
	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/internal/webhook"
	"github.com/ecowatt/fota/keys"
)

const serveUsage = `Usage:
  fota serve --trust keys/signing.pub [--data ./fota-data] [--addr 127.0.0.1:8080]
             [--db postgres://user:pass@host/db [--blobs db | --blobs /shared/fota-blobs]]
             [--tls-cert cert.pem --tls-key key.pem] [--max-sessions N] [--max-conns N] [--max-conns-per-client N] [--log-level info] [--log-format text|json]
             [--memory-limit 112MiB] [--pprof 127.0.0.1:6060] [--secure-cookies] [--client-ip-header X-Real-IP] [--online-within 13h]
             [--retain-events 90d] [--retain-events-max 1000000] [--retain-sessions 90d] [--retain-sessions-max 100000]
             [--mqtt-listen :1883 | --mqtt-broker mqtts://host:8883 --mqtt-user fota-server --mqtt-password-file F [--mqtt-ca ca.pem]] [--push-rate 4000]

Runs the update server: the admin API, the EcoWatt-compatible API (/ota/*),
the native device API (/v1/device/*) and the web dashboard (/, for users
made with 'fota user add'). The first start creates the data folder (SQLite
database and blob folder) and prints an admin token once.
Releases must be signed by a --trust key. SIGINT or SIGTERM stops it
gracefully.

With --db the state lives in PostgreSQL and several replicas serve the same
fleet; migrations run at start under a lock (or use 'fota migrate --db DSN').
Release blobs go in a folder all replicas share (--blobs DIR), or with
--blobs db in PostgreSQL too, cached in each replica's memory (256 MiB).

--max-conns bounds memory when many devices arrive at once: each open
connection costs about 40 KB; devices beyond the limit wait to connect, and
while three quarters of it are in use, every 16th answer on a connection
closes it, so that waiting devices get their turn. At the limit, a
keep-alive connection idle for 10 s or more is closed (the one
idle longest first) to let a waiting device in. --max-conns-per-client caps
the connections one address (IPv6: one /64) holds: beyond it, that
address's longest-idle connection is closed, or if none is idle the new
connection is closed unanswered. Behind a reverse proxy or load balancer
every device has the proxy's address: set it to 0 there (no cap) and cap
clients at the proxy. --memory-limit caps the
server's Go memory softly: without it, the collector lets the heap grow to
twice what is live and keeps freed memory for a while, so peaks (many
devices checking in at once) set the resident size; set it to about three
quarters of the memory the server is given.

History is pruned in the background, a few small batches every 30 seconds:
events older than --retain-events or beyond the newest --retain-events-max,
ended update sessions likewise (never an active one, nor a native rollback
or refusal, which keeps that release from the device), and removed devices
once removed longer ago than --retain-sessions. Ages take d (days), w
(weeks) or Go durations; 0 keeps for ever.

The dashboard's session cookies are Secure when the request came over TLS;
behind a proxy that terminates TLS, pass --secure-cookies. Behind a proxy,
--client-ip-header names the header it puts the client's address in, so
that sign-in limits and logs see clients rather than the proxy (without a
proxy leave it unset: clients could then pick their address). A device seen
within --online-within (two 6-hour check intervals and an hour) counts as
online on its pages.

Devices learn of an update at their next timed check (6 hours on EcoWatt
devices). With push they learn of it in seconds: when a rollout wave opens,
is paused, halted or aborted, or a device is pinned, the server publishes a
notification on the device's MQTT topic and the device checks in at once.
--mqtt-listen runs a broker inside the server (devices log in with their id
and a password derived from their key: nothing to provision; TLS when
--tls-cert is given); with several replicas, use one external broker
(--mqtt-broker; 'fota mqtt acl' writes its password and ACL files). The timer
stays: a device that misses a notification checks on it as before.

Webhooks ('fota webhook add') are sent by every replica from one outbox in
the database: each event at least once, retried for 24 hours.

Examples:
  fota serve --data ./fota-data --trust keys/signing.pub
  fota serve --db postgres://fota@db/fota --blobs /mnt/shared/fota-blobs --addr :8080 --trust keys/signing.pub
  fota serve --db postgres://fota@db/fota --blobs db --addr :8080 --trust keys/signing.pub
  fota serve --addr :8443 --tls-cert cert.pem --tls-key key.pem --trust keys/signing.pub
  fota serve --data ./fota-data --trust keys/signing.pub --mqtt-listen :1883
  fota serve --db postgres://fota@db/fota --blobs db --trust keys/signing.pub --mqtt-broker mqtts://mqtt.example:8883 --mqtt-password-file server.mqtt-password
`

// minMemoryLimit is the least --memory-limit fota serve accepts: an idle
// server uses about 20 MiB, and a limit near that would keep the collector
// running all the time.
const minMemoryLimit = 64 << 20

func runServe(e *env, args []string) error {
	fs := newFlags("serve")
	data := fs.String("data", "./fota-data", "data folder: the SQLite database and release blobs")
	db := fs.String("db", "", "PostgreSQL DSN (postgres://user:pass@host/db) instead of SQLite in --data, for several replicas")
	blobDir := fs.String("blobs", "", "release blob folder, shared by all replicas (default: DATA/blobs); 'db' keeps them in PostgreSQL (needs --db)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	var trust stringList
	fs.Var(&trust, "trust", "public key that releases must be signed by (repeatable)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM); serve HTTPS")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	maxSessions := fs.Int("max-sessions", 20000, "most update sessions open at once (0: no limit); EcoWatt-API sessions may take three quarters")
	maxConns := fs.Int("max-conns", 1536, "most connections open at once; more devices wait to connect")
	maxConnsPerClient := fs.Int("max-conns-per-client", server.DefaultMaxConnsPerClient, "most connections open at once from one client address, IPv6 /64 (0: no cap; use 0 behind a reverse proxy)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (debug logs every chunk request)")
	logFormat := fs.String("log-format", "text", "text or json")
	pprofAddr := fs.String("pprof", "", "serve Go profiling (net/http/pprof) on this address, e.g. 127.0.0.1:6060; keep it private")
	memoryLimit := fs.String("memory-limit", "", "soft limit on the server's Go memory, e.g. 112MiB: nearer it, memory is collected and returned sooner (default: GOMEMLIMIT, else none)")
	secureCookies := fs.Bool("secure-cookies", false, "mark dashboard cookies Secure on plain HTTP too (behind a proxy that terminates TLS)")
	clientIPHeader := fs.String("client-ip-header", "", "behind a proxy: the header holding the client's address (X-Real-IP, X-Forwarded-For: its last value)")
	onlineWithin := fs.Duration("online-within", 13*time.Hour, "the dashboard counts a device online if seen within this")
	pushOpts := addPushFlags(fs)
	retainFlags := addRetentionFlags(fs)
	rest, err := parseFlags(e, fs, serveUsage, args)
	if err != nil {
		return err
	}
	retention, err := retainFlags.retention()
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota serve takes no arguments, got %q", rest)
	}
	if len(trust) == 0 {
		return &usageError{msg: "no --trust key", hint: "fota serve --trust keys/signing.pub (made by 'fota keys init')"}
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if err := pushOpts.check(); err != nil {
		return err
	}
	if *onlineWithin <= 0 {
		return usagef("--online-within %s: want a duration like 13h", *onlineWithin)
	}
	if *maxConns < 1 {
		return usagef("--max-conns %d: want at least 1", *maxConns)
	}
	if *maxConnsPerClient < 0 {
		return usagef("--max-conns-per-client %d: want 0 (no cap) or more", *maxConnsPerClient)
	}
	if *maxSessions < 0 || *maxSessions == 1 {
		// EcoWatt-API sessions may take at most the places but one, so that
		// forged check-ins never keep native devices from updating.
		return usagef("--max-sessions %d: want 0 (no limit) or at least 2", *maxSessions)
	}
	var limit int64
	if *memoryLimit != "" {
		limit, err = parseSizeUpTo(*memoryLimit, 1<<50)
		if err != nil {
			return usagef("--memory-limit: %v; want a size such as 112MiB or 2GiB", err)
		}
		if limit < minMemoryLimit {
			return usagef("--memory-limit %s is below %d MiB, less than the server needs to run; give it at least that", *memoryLimit, minMemoryLimit>>20)
		}
		// A soft limit: past it the collector runs more often (at most
		// half the CPU) rather than failing, and idle memory goes back to
		// the system at once instead of being kept for the next peak.
		debug.SetMemoryLimit(limit)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level})
	default:
		return usagef("--log-format %q: want text or json", *logFormat)
	}
	logger := slog.New(handler)
	if limit > 0 {
		logger.Info("memory limit set", "bytes", limit)
	}
	var trusted []*keys.PublicKey
	for _, p := range trust {
		k, err := keys.LoadPublicKey(p)
		if err != nil {
			return err
		}
		trusted = append(trusted, k)
	}

	sessionTTL := server.DefaultSessionCacheTTL
	if *db == "" {
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return fmt.Errorf("create data folder: %w", err)
		}
		unlock, err := lockDataDir(*data)
		if err != nil {
			return err
		}
		defer unlock()
		if dataLockHeld {
			// The only writer of its SQLite database: a session changes only
			// through this process, which forgets the snapshot when it does.
			sessionTTL = time.Minute
		}
	}
	store, blobs, err := openStore(e.ctx, *data, *db, *blobDir)
	if err != nil {
		return err
	}
	defer store.Close()
	defer blobs.Close()
	if n, err := fota.SweepBlobs(e.ctx, store, blobs); err != nil {
		return err
	} else if n > 0 {
		logger.Info("removed blobs no release refers to", "count", n)
	}
	var tlsConfig *tls.Config
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// Push starts before the server so that no rollout transition goes
	// unannounced; it stops after the server (srv.Close waits for the
	// notifications under way).
	pushing, err := pushOpts.start(e.ctx, store, tlsConfig, logger)
	if err != nil {
		return err
	}
	var notifier fota.Notifier
	if pushing != nil {
		defer pushing.close()
		notifier = pushing.notifier
	}
	// Every replica runs a webhook dispatcher; they share the outbox in the
	// store. Session changes wake it; the rest it finds within a second.
	hooks := webhook.New(webhook.Config{Store: store, Logger: logger})
	srv, err := server.New(server.Config{Store: store, Blobs: blobs, Trusted: trusted, Logger: logger, MaxSessions: *maxSessions,
		SessionCacheTTL: sessionTTL, Retention: retention, SessionChanged: hooks.Notify, SecureCookies: *secureCookies, OnlineWithin: *onlineWithin,
		ClientIPHeader: *clientIPHeader, Notifier: notifier, NotifyRate: *pushOpts.rate})
	if err != nil {
		return err
	}
	hooksCtx, stopHooks := context.WithCancel(e.ctx)
	hooksDone := make(chan struct{})
	go func() { defer close(hooksDone); hooks.Run(hooksCtx) }()
	defer func() { stopHooks(); <-hooksDone }() // before the store closes
	hs := &http.Server{
		Handler: srv,
		// Slow clients cannot hold a connection open forever; uploads and
		// payload downloads extend their own deadlines. The header time
		// includes an ESP32's TLS handshake (1-3 s of RSA on the device,
		// plus round trips on a slow link). Idle keep-alive connections are
		// kept 30 s, long enough for the pauses inside an update; a device
		// on a check-in timer reconnects anyway, and at --max-conns idle
		// connections are closed sooner (LimitConns).
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelWarn),
	}
	hs.RegisterOnShutdown(srv.StopStreams) // live dashboards would hold the shutdown to its deadline
	tcp, err := net.Listen("tcp", *addr)
	if err != nil {
		return withHint(fmt.Errorf("listen on %s: %w", *addr, err), "choose another --addr, or stop what uses that port")
	}
	limited := server.LimitConns(tcp, *maxConns, *maxConnsPerClient)
	hs.Handler, hs.ConnContext, hs.ConnState = limited.Handler(srv), limited.ConnContext, limited.ConnState
	srv.WatchConns(limited)
	var ln net.Listener = limited
	scheme := "http"
	if tlsConfig != nil {
		hs.TLSConfig = tlsConfig
		ln = tls.NewListener(ln, hs.TLSConfig)
		scheme = "https"
	}
	// The first admin token is made only now that the server can start:
	// a start that fails (port taken, bad certificate) must not show a
	// token that no later start shows again.
	if n, err := store.CountTokens(e.ctx); err != nil {
		ln.Close()
		return err
	} else if n == 0 {
		token, err := createToken(e.ctx, store, "admin")
		if err != nil {
			ln.Close()
			return err
		}
		fmt.Fprintf(e.stdout, "admin token (shown once; keep it secret): %s\n", token)
	}
	where := "data " + *data
	if *db != "" {
		where = "PostgreSQL"
	}
	if pushing != nil {
		// Before "listening on": tests and scripts wait for that line.
		fmt.Fprintf(e.stdout, "fota serve: push notifications through the %s\n", pushing.where)
	}
	fmt.Fprintf(e.stdout, "fota serve: listening on %s://%s (%s, %d trusted key(s))\n", scheme, ln.Addr(), where, len(trusted))
	if users, err := store.Users(e.ctx); err == nil && len(users) == 0 {
		fmt.Fprintf(e.stdout, "fota serve: dashboard at %s://%s/ has no users yet: fota user add --name NAME --role admin\n", scheme, ln.Addr())
	} else {
		fmt.Fprintf(e.stdout, "fota serve: dashboard at %s://%s/\n", scheme, ln.Addr())
	}

	if *pprofAddr != "" {
		pl, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("pprof listener: %w", err)
		}
		defer pl.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go http.Serve(pl, mux)
		fmt.Fprintf(e.stdout, "fota serve: profiling on http://%s/debug/pprof/\n", pl.Addr())
	}
	go purgeNonces(e.ctx, store, logger)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-e.ctx.Done():
	}
	logger.Info("shutting down: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	srv.Close()
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintln(e.stdout, "fota serve: stopped")
	return nil
}

// blobStore is where a server keeps release ciphertexts.
type blobStore interface {
	fota.SweepableBlobs
	Close() error
}

// blobsInDB is the --blobs value that keeps ciphertexts in PostgreSQL.
const blobsInDB = "db"

// openStore opens the store: PostgreSQL when dsn is set, else SQLite in
// dir; and the blobs: in PostgreSQL for --blobs db, else the folder
// blobDir or dir/blobs.
func openStore(ctx context.Context, dir, dsn, blobDir string) (fota.Store, blobStore, error) {
	if dsn == "" && blobDir == blobsInDB {
		return nil, nil, &usageError{msg: "--blobs db keeps release blobs in PostgreSQL, so it needs --db", hint: "--db postgres://fota:secret@db.example:5432/fota --blobs db"}
	}
	if dsn == "" {
		store, blobs, err := openData(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		if blobDir == "" {
			return store, blobs, nil
		}
		blobs.Close()
		if blobs, err = blobdir.New(blobDir); err != nil {
			store.Close()
			return nil, nil, err
		}
		return store, blobs, nil
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return nil, nil, &usageError{msg: "--db wants a PostgreSQL URL", hint: "--db postgres://fota:secret@db.example:5432/fota"}
	}
	if blobDir == "" {
		blobDir = filepath.Join(dir, "blobs")
	}
	store, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	if blobDir == blobsInDB {
		return store, store.Blobs(postgres.DefaultPieceCache), nil
	}
	blobs, err := blobdir.New(blobDir)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, blobs, nil
}

// openData opens the SQLite database and blob folder in dir, creating them.
func openData(ctx context.Context, dir string) (*sqlite.Store, *blobdir.Dir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data folder: %w", err)
	}
	store, err := sqlite.Open(ctx, filepath.Join(dir, "fota.db"))
	if err != nil {
		return nil, nil, err
	}
	blobs, err := blobdir.New(filepath.Join(dir, "blobs"))
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, blobs, nil
}

func purgeNonces(ctx context.Context, store fota.Store, logger *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := store.PurgeNonces(ctx, now); err != nil && ctx.Err() == nil {
				logger.Warn("purge nonces", "error", err)
			}
		}
	}
}

const migrateUsage = `Usage:
  fota migrate --db postgres://user:pass@host/db

Brings a PostgreSQL database's schema up to date, under the same lock the
replicas take at start, and prints the version. fota serve also migrates at
start, so this is for doing it ahead of a rollout.
`

func runMigrate(e *env, args []string) error {
	fs := newFlags("migrate")
	db := fs.String("db", "", "PostgreSQL DSN")
	if err := parseNoArgs(e, fs, migrateUsage, args); err != nil {
		return err
	}
	if *db == "" {
		return &usageError{msg: "--db is required", hint: "fota migrate --db postgres://fota@db/fota"}
	}
	store, err := postgres.Open(e.ctx, *db)
	if err != nil {
		return err
	}
	store.Close()
	fmt.Fprintf(e.stdout, "schema at version %d\n", postgres.SchemaVersion())
	return nil
}
