package embedetcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

// waitUntil is testutil.WaitUntil, repeated here because testutil imports
// the proxy (shell, core), which this package's tests should not need to
// build.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func client(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// status asks the member at endpoint itself for its status, within a
// second.
func status(c *clientv3.Client, endpoint string) (*clientv3.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Status(ctx, endpoint)
}

// TestIsolateHeal isolates the leader of a 3-member cluster: it must lose
// its leadership while still answering on its client port, the other two
// must go on committing, and after Heal it must catch up.
func TestIsolateHeal(t *testing.T) {
	c, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)

	// The leader is the harder case: it has to step down, and the others
	// have to elect a new one, before they commit again.
	var m *embedetcd.Member
	var others []string
	probe := client(t, c.Endpoints()...)
	waitUntil(t, 10*time.Second, "a leader", func() bool {
		m, others = nil, nil
		for _, mem := range c.Members {
			st, err := status(probe, mem.ClientURL)
			if err != nil {
				return false
			}
			if st.Leader == st.Header.MemberId {
				m = mem
			} else {
				others = append(others, mem.ClientURL)
			}
		}
		return m != nil
	})
	mc := client(t, m.ClientURL)
	oc := client(t, others...)

	c.Isolate(m)

	waitUntil(t, 10*time.Second, "the isolated member reports no leader", func() bool {
		st, err := status(mc, m.ClientURL)
		if err != nil {
			return strings.Contains(err.Error(), "no leader")
		}
		return st.Leader == 0
	})
	var rev int64
	waitUntil(t, 10*time.Second, "the other two accept a put", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := oc.Put(ctx, "isolate/k", "v")
		if err != nil {
			return false
		}
		rev = resp.Header.Revision
		return true
	})

	// The isolated member still serves reads on its client port, from a
	// store the put did not reach, and still has no leader.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	get, err := mc.Get(ctx, "isolate/k", clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("serializable get on the isolated member: %v", err)
	}
	if len(get.Kvs) != 0 || get.Header.Revision >= rev {
		t.Fatalf("isolated member at revision %d with %d kvs; the put at revision %d must not reach it", get.Header.Revision, len(get.Kvs), rev)
	}
	if st, err := status(mc, m.ClientURL); err == nil && st.Leader != 0 {
		t.Fatalf("isolated member follows leader %x", st.Leader)
	}

	c.Heal(m)

	waitUntil(t, 15*time.Second, "the healed member has a leader and the put's revision", func() bool {
		st, err := status(mc, m.ClientURL)
		return err == nil && st.Leader != 0 && st.Header.Revision >= rev
	})
	get, err = mc.Get(ctx, "isolate/k", clientv3.WithSerializable())
	if err != nil || len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "v" {
		t.Fatalf("serializable get on the healed member: %v, %v", get, err)
	}
}
