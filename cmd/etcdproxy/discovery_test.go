package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// srvServer answers SRV queries for _etcd-client._tcp.<domain> with one
// record per target ("host:port"), A queries for those hosts with
// 127.0.0.1, and nothing for any other name, from a DNS server on loopback
// that the process's resolver is pointed at.
func srvServer(t *testing.T, domain string, targets ...string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeSRV && q.Question[0].Name == "_etcd-client._tcp."+domain+"." {
			for _, tg := range targets {
				host, port, _ := net.SplitHostPort(tg)
				p, _ := strconv.Atoi(port)
				m.Answer = append(m.Answer, &dns.SRV{
					Hdr:    dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 60},
					Target: dns.Fqdn(host), Port: uint16(p), Priority: 10, Weight: 10,
				})
			}
		} else if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA && targetHost(targets, q.Question[0].Name) {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(127, 0, 0, 1),
			})
		} else if len(q.Question) != 1 || !targetHost(targets, q.Question[0].Name) {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	t.Cleanup(func() { net.DefaultResolver = old })
}

// targetHost reports whether name (a FQDN) is the host of one of targets.
func targetHost(targets []string, name string) bool {
	for _, tg := range targets {
		if host, _, _ := net.SplitHostPort(tg); dns.Fqdn(host) == name {
			return true
		}
	}
	return false
}

// --discovery-srv finds an embedded member from SRV records served on
// loopback, through etcd's own srv package; the proxy started on what it
// found serves a write and a read. Without --insecure-discovery an http
// endpoint is dropped (etcd keeps only https endpoints that pass a TLS
// handshake), and a domain without records is etcd's error.
func TestDiscoverySRV(t *testing.T) {
	m := testutil.StartMember(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(m.ClientURL, "http://"))
	srvServer(t, "cluster.test", "m0.cluster.test:"+port)
	lg := zaptest.NewLogger(t)

	eps, err := discoverEndpoints(lg, "cluster.test", "", true, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://m0.cluster.test.:" + port; len(eps) != 1 || eps[0] != want {
		t.Fatalf("discovered %v, want [%s]", eps, want)
	}
	cfg := shell.DefaultConfig()
	cfg.ListenAddr, cfg.Endpoints, cfg.Logger = testutil.FreeAddr(t), eps, lg
	p, err := shell.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Addr()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testutil.Context(t, 20*time.Second)
	if _, err := c.Put(ctx, "found", "by-srv"); err != nil {
		t.Fatal(err)
	}
	direct := testutil.Client(t, m.ClientURL)
	if r, err := direct.Get(ctx, "found"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "by-srv" {
		t.Fatalf("the member discovered by SRV has %v %v, want the put made through the proxy", r, err)
	}

	if eps, err := discoverEndpoints(lg, "cluster.test", "", false, ""); err != nil || len(eps) != 0 {
		t.Fatalf("secure discovery of an http endpoint: %v %v, want none kept", eps, err)
	}
	if _, err := discoverEndpoints(lg, "other.test", "", true, ""); err == nil || !strings.Contains(err.Error(), "dns lookup errors") {
		t.Fatalf("a domain without records: %v, want etcd's dns lookup errors", err)
	}
}
