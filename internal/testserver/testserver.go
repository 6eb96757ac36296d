// Package testserver starts a real fota server (SQLite in a temporary
// folder, real HTTP on loopback) with a release key and firmware key, for
// the tests of the agent, the simulator and anything else that needs one.
package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/blobdir"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// Server is a running test server.
type Server struct {
	TB    testing.TB
	URL   string
	Store *sqlite.Store
	HTTP  *httptest.Server
	// Handler is the server's handler, for benchmarks that leave the
	// network out.
	Handler http.Handler
	// Dir holds the server's data: fota.db (SQLite) and blobs.
	Dir    string
	Admin  *client.Admin
	Signer *keys.SigningKey
	FWKey  keys.FirmwareKey
	Token  string // an admin token
}

// New starts a server trusting a fresh RSA release key; it stops with the test.
func New(tb testing.TB) *Server {
	tb.Helper()
	return NewAlg(tb, keys.AlgRSA)
}

// NewAlg is New with a release key of another algorithm (keys.AlgECDSA, keys.AlgEd25519).
func NewAlg(tb testing.TB, alg string) *Server {
	tb.Helper()
	s := &Server{TB: tb}
	// Not tb.TempDir: its removal fails the test when a file appears in the
	// folder while it is being removed, which SQLite's closing (its -wal
	// and -shm files) has done under load (TestAttackTable, rarely). The
	// folder is removed again until it is gone, and what was in the way is
	// logged.
	dir, err := os.MkdirTemp("", "fota-testserver-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for range 5 {
			if err = os.RemoveAll(dir); err == nil {
				return
			}
		}
		entries, _ := os.ReadDir(dir)
		tb.Logf("test server data %s not removed (%v); left: %v", dir, err, entries)
	})
	s.Dir = dir
	if s.Store, err = sqlite.Open(context.Background(), filepath.Join(dir, "fota.db")); err != nil {
		tb.Fatal(err)
	}
	blobs, err := blobdir.New(filepath.Join(dir, "blobs"))
	if err != nil {
		tb.Fatal(err)
	}
	if s.Signer, err = keys.Generate(alg, rand.Reader); err != nil {
		tb.Fatal(err)
	}
	s.FWKey, _ = keys.NewFirmwareKey(rand.Reader)
	srv, err := server.New(server.Config{Store: s.Store, Blobs: blobs, Trusted: []*keys.PublicKey{s.Signer.Public()}})
	if err != nil {
		tb.Fatal(err)
	}
	s.HTTP = httptest.NewServer(srv)
	s.Handler = srv
	s.URL = s.HTTP.URL
	// Live dashboard streams end first: the HTTP server waits for every
	// request in flight.
	tb.Cleanup(func() { srv.StopStreams(); s.HTTP.Close(); srv.Close(); blobs.Close(); s.Store.Close() })
	token, hash, err := server.NewToken()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Store.CreateToken(context.Background(), &fota.Token{Name: "test", Hash: hash}); err != nil {
		tb.Fatal(err)
	}
	s.Admin, _ = client.NewAdmin(s.URL, token)
	s.Token = token
	return s
}

// Bundle builds a signed bundle of img, encrypted with the server's
// firmware key and signed with its release key.
func (s *Server) Bundle(version string, img []byte, chunkSize int, counter uint32) []byte {
	s.TB.Helper()
	var out bytes.Buffer
	if _, err := bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
		SecurityCounter: counter, ChunkSize: chunkSize, Signer: s.Signer, FirmwareKey: s.FWKey, TempDir: s.TB.TempDir()}); err != nil {
		s.TB.Fatal(err)
	}
	return out.Bytes()
}

// DeltaBase is a base image a test bundle carries a delta from.
type DeltaBase struct {
	Version string
	Image   []byte
	// Patch replaces the patch made from Image (attack tests); nil: the
	// real one.
	Patch []byte
	// Compression of the patch; heatshrink when "".
	Compression string
}

// BundleWithDeltas is Bundle with a delta record from each base.
// chunkSize 0 is the default.
func (s *Server) BundleWithDeltas(version string, img []byte, chunkSize int, counter uint32, bases ...DeltaBase) []byte {
	s.TB.Helper()
	var out bytes.Buffer
	m, err := bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
		SecurityCounter: counter, ChunkSize: chunkSize, Signer: s.Signer, FirmwareKey: s.FWKey, TempDir: s.TB.TempDir()})
	if err != nil {
		s.TB.Fatal(err)
	}
	for _, b := range bases {
		if b.Compression == "" {
			b.Compression = "heatshrink"
		}
		patch := b.Patch
		if patch == nil {
			if patch, err = delta.Create(b.Image, img, delta.CreateOptions{Compression: b.Compression}); err != nil {
				s.TB.Fatal(err)
			}
		}
		if _, err := bundle.WriteDelta(&out, m, patch, bundle.DeltaOptions{BaseVersion: b.Version, BaseSize: int64(len(b.Image)),
			BaseSHA256: sha256.Sum256(b.Image), Compression: b.Compression}, s.Signer, s.FWKey); err != nil {
			s.TB.Fatal(err)
		}
	}
	return out.Bytes()
}

// SampleLineage builds a simulated image of one product line: versions
// of a lineage share most of their bytes, so deltas between them are small.
func (s *Server) SampleLineage(version string, b firmware.Behaviour, size int, counter uint32, lineage string) []byte {
	s.TB.Helper()
	img, err := firmware.Sample(firmware.SampleOptions{Version: version, Behaviour: b, Size: size, SecureVersion: counter, Lineage: lineage})
	if err != nil {
		s.TB.Fatal(err)
	}
	return img
}

// Sample builds a simulated image.
func (s *Server) Sample(version string, b firmware.Behaviour, size int, counter uint32) []byte {
	s.TB.Helper()
	img, err := firmware.Sample(firmware.SampleOptions{Version: version, Behaviour: b, Size: size, SecureVersion: counter})
	if err != nil {
		s.TB.Fatal(err)
	}
	return img
}

// Publish uploads a bundle and rolls it out to every device at once
// (publish --rollout all), as most tests want.
func (s *Server) Publish(b []byte) {
	s.TB.Helper()
	if _, err := s.Admin.PublishRollout(context.Background(), bytes.NewReader(b), "all"); err != nil {
		s.TB.Fatal(err)
	}
}

// PublishOnly uploads a bundle and offers it to nobody: a rollout or a
// pin made later decides.
func (s *Server) PublishOnly(b []byte) {
	s.TB.Helper()
	if _, err := s.Admin.Publish(context.Background(), bytes.NewReader(b)); err != nil {
		s.TB.Fatal(err)
	}
}

// PublishSample builds and publishes a simulated image.
func (s *Server) PublishSample(version string, b firmware.Behaviour, size int) {
	s.TB.Helper()
	s.Publish(s.Bundle(version, s.Sample(version, b, size, 0), 0, 0))
}

// AddDevice registers an esp32 device running version that may use both
// device APIs (tests switch between them), and returns its key.
func (s *Server) AddDevice(id, version string) protocol.PSK {
	s.TB.Helper()
	return s.AddDeviceAPI(id, version, fota.APIBoth)
}

// AddDeviceAPI registers an esp32 device running version with an API
// policy (native, ecowatt or both), and returns its key.
func (s *Server) AddDeviceAPI(id, version, api string) protocol.PSK {
	s.TB.Helper()
	d, err := s.Admin.AddDevice(context.Background(), protocol.AddDevice{ID: id, Hardware: "esp32", Version: version, API: api})
	if err != nil {
		s.TB.Fatal(err)
	}
	psk, err := protocol.ParsePSK(d.PSK)
	if err != nil {
		s.TB.Fatal(err)
	}
	return psk
}

// Events lists a device's event kinds with versions, oldest first,
// leaving out progress events.
func (s *Server) Events(id string) []string {
	s.TB.Helper()
	evs, err := s.Admin.Events(context.Background(), id, 1000)
	if err != nil {
		s.TB.Fatal(err)
	}
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind != fota.EventProgress {
			out = append(out, evs[i].Kind+" "+evs[i].Version)
		}
	}
	return out
}

// Sessions lists a device's sessions, oldest first.
func (s *Server) Sessions(id string) []*fota.Session {
	s.TB.Helper()
	evs, err := s.Store.Events(context.Background(), fota.EventFilter{DeviceID: id, Kind: fota.EventSessionOpened, Limit: 100})
	if err != nil {
		s.TB.Fatal(err)
	}
	var out []*fota.Session
	for i := len(evs) - 1; i >= 0; i-- {
		sess, err := s.Store.Session(context.Background(), evs[i].SessionID)
		if err != nil {
			s.TB.Fatal(err)
		}
		out = append(out, sess)
	}
	return out
}

// Traffic is what every recorded session put on the wire.
func (s *Server) Traffic() fota.Traffic {
	s.TB.Helper()
	tr, err := s.Store.Traffic(context.Background(), fota.TrafficFilter{})
	if err != nil {
		s.TB.Fatal(err)
	}
	return tr
}
