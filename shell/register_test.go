package shell_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestResolverRegistration: proxies started with --resolver-prefix find each
// other. MemberList through either lists both, clientv3's Sync discovers
// them, and a proxy that stops drops out of the list.
func TestResolverRegistration(t *testing.T) {
	m := testutil.StartMember(t)
	start := func() *shell.Proxy {
		addr, err := embedetcd.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
			c.ListenAddr, c.AdvertiseClientURL = addr, addr
			c.ResolverPrefix, c.ResolverTTL = "___grpc_proxy_endpoint", 60
		})
	}
	p1, p2 := start(), start()
	want := []string{p1.Addr(), p2.Addr()}
	sort.Strings(want)

	c := testutil.Client(t, p1.Addr())
	listed := func() []string {
		r, err := c.MemberList(testutil.Context(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var urls []string
		for _, m := range r.Members {
			urls = append(urls, m.ClientURLs...)
		}
		sort.Strings(urls)
		return urls
	}
	testutil.WaitUntil(t, 10*time.Second, "both proxies listed", func() bool { return slices.Equal(listed(), want) })

	if err := c.Sync(testutil.Context(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eps := c.Endpoints()
	sort.Strings(eps)
	if !slices.Equal(eps, want) {
		t.Errorf("endpoints after Sync: %q, want %q", eps, want)
	}

	p2.Close()
	testutil.WaitUntil(t, 10*time.Second, "the stopped proxy leaves the list", func() bool {
		return slices.Equal(listed(), []string{p1.Addr()})
	})
}
