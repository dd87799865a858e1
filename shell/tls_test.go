package shell_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// testCA issues certificates for loopback servers and clients.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: t.TempDir(), cert: cert, key: key}
	ca.file = ca.write(t, "ca.crt", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue returns certificate and key files for name, valid for 127.0.0.1 as
// a server and as a client. An empty name gives an empty CN, which etcd's
// proxy requires of its client certificate towards etcd.
func (ca *testCA) issue(t *testing.T, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := "cert" + big.NewInt(serial).String()
	return ca.write(t, base+".crt", "CERTIFICATE", der), ca.write(t, base+".key", "EC PRIVATE KEY", kder)
}

// startTLSMember starts etcd serving clients only over TLS with client
// certificate authentication.
func startTLSMember(t *testing.T, ca *testCA) *embedetcd.Member {
	t.Helper()
	srvCert, srvKey := ca.issue(t, "etcd", 2)
	ca1, _ := embedetcd.FreeAddr()
	pa, _ := embedetcd.FreeAddr()
	m, err := embedetcd.StartMember("tls", t.TempDir(), "https://"+ca1, "http://"+pa, embedetcd.Options{
		NoFsync: true,
		Configure: func(c *embed.Config) {
			c.ClientTLSInfo = transport.TLSInfo{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.file, ClientCertAuth: true}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func tlsClient(t *testing.T, endpoint string, info transport.TLSInfo) *clientv3.Client {
	t.Helper()
	tc, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func putGet(t *testing.T, c *clientv3.Client, key string) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := c.Put(ctx, key, "v"); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	r, err := c.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get %s: %v %v", key, r, err)
	}
}

// TestTLSTowardsEtcd: etcd accepts only TLS with client certificates; plain
// clients reach it through the proxy's --cert/--key/--cacert.
func TestTLSTowardsEtcd(t *testing.T) {
	ca := newTestCA(t)
	m := startTLSMember(t, ca)
	cert, key := ca.issue(t, "", 3)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.Cert, c.Key, c.CACert = cert, key, ca.file
	})
	putGet(t, testutil.Client(t, p.Addr()), "plain-client")
	// The failover machine's health probes speak the same TLS.
	testutil.WaitUntil(t, 10*time.Second, "the member probed healthy over TLS", func() bool {
		st, _ := p.CoreState()
		return st.Failover.Healthy == 1
	})
}

// TestTLSTowardsClients: the proxy terminates client TLS (--cert-file,
// --key-file, --trusted-ca-file) and speaks TLS to etcd as well; a client
// without TLS is refused.
func TestTLSTowardsClients(t *testing.T) {
	ca := newTestCA(t)
	m := startTLSMember(t, ca)
	upCert, upKey := ca.issue(t, "", 3)
	srvCert, srvKey := ca.issue(t, "proxy", 4)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.Cert, c.Key, c.CACert = upCert, upKey, ca.file
		c.CertFile, c.KeyFile, c.TrustedCAFile = srvCert, srvKey, ca.file
	})
	cliCert, cliKey := ca.issue(t, "client", 5)
	putGet(t, tlsClient(t, "https://"+p.Addr(), transport.TLSInfo{CertFile: cliCert, KeyFile: cliKey, TrustedCAFile: ca.file}), "tls-client")

	plain := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 2*time.Second)
	if _, err := plain.Get(ctx, "tls-client"); err == nil {
		t.Errorf("a plaintext client was served by a TLS-only proxy")
	}
}

// TestAutoTLS: --auto-tls serves clients with a generated certificate.
func TestAutoTLS(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.AutoTLS, c.DataDir = true, t.TempDir()
	})
	tc := &tls.Config{InsecureSkipVerify: true}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + p.Addr()}, TLS: tc, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	putGet(t, c, "auto-tls")
}
