package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// testPKI writes a CA certificate and a server certificate and key for
// 127.0.0.1 signed by it, and returns their paths.
func testPKI(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fota test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

func TestPublisherTLS(t *testing.T) {
	caFile, certFile, keyFile := testPKI(t)
	alice := deviceWithKey(t, "alice")
	server := ServerAccount{Username: "fota-server", Password: "server-password-for-the-test"}
	passwd, acl, err := MosquittoFiles([]*fota.Device{alice}, server)
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := freePort(t)
	b := startMosquitto(t, passwd, acl, fmt.Sprintf("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n", tlsPort, certFile, keyFile))
	tlsURL := "mqtts://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	waitFor(t, "the TLS listener", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	ctx := context.Background()

	// The system roots do not hold the test CA.
	_, err = NewPublisher(ctx, PublisherConfig{URL: tlsURL, Username: server.Username, Password: server.Password})
	if err == nil || !strings.Contains(err.Error(), "TLS certificate not trusted") {
		t.Fatalf("err = %v, want the certificate not trusted", err)
	}

	roots, err := LoadCAFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(ctx, PublisherConfig{URL: tlsURL, Username: server.Username, Password: server.Password, RootCAs: roots})
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	t.Cleanup(func() { pub.Close() })
	dev, err := connectDevice(b, alice.ID, protocol.MQTTPassword(alice.PSK, alice.ID))
	if err != nil {
		t.Fatal(err)
	}
	dev.subscribe(t, protocol.NotifyTopic(alice.ID))
	pub.Notify([]string{alice.ID}, protocol.Notification{Reason: protocol.NotifyPinned})
	if m := dev.next(t, "the notification sent over TLS"); m.Topic() != protocol.NotifyTopic(alice.ID) {
		t.Fatalf("got %s", m.Topic())
	}
}

func TestLoadCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.der")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	if _, err := LoadCAFile(notPEM); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("not PEM: err = %v", err)
	}
	if _, err := LoadCAFile(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing: err = %v", err)
	}
}
