package shell_test

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestProgressNotificationsAtEtcdsCadence: a watcher that asked for
// progress notifications gets them at the cadence of the etcd cluster
// behind the proxy (the members' --watch-progress-notify-interval, which
// Kubernetes deployments lower to seconds), each at the store's current
// revision, as direct etcd sends them; a watcher that did not ask gets
// none. The proxy runs with its defaults: no interval of its own.
func TestProgressNotificationsAtEtcdsCadence(t *testing.T) {
	const interval = 500 * time.Millisecond
	old := v3rpc.GetProgressReportInterval()
	t.Cleanup(func() { v3rpc.SetProgressReportInterval(old) }) // etcd keeps it process-wide
	m := testutil.StartMemberWith(t, embedetcd.Options{NoFsync: true, Configure: func(c *embed.Config) { c.WatchProgressNotifyInterval = interval }})
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)

	for _, target := range []struct{ name, addr string }{{"direct", m.ClientURL}, {"proxy", p.Addr()}} {
		t.Run(target.name, func(t *testing.T) {
			ctx := testutil.Context(t, 30*time.Second)
			cc := testutil.Dial(t, target.addr)
			kv := pb.NewKVClient(cc)
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("elsewhere"), Value: []byte("v")}); err != nil {
				t.Fatal(err)
			}
			st, err := pb.NewWatchClient(cc).Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, cr := range []*pb.WatchCreateRequest{
				{Key: []byte("idle"), WatchId: 1, ProgressNotify: true},
				{Key: []byte("idle"), WatchId: 2},
			} {
				if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
					t.Fatal(err)
				}
			}
			created := time.Time{}
			var notes []time.Duration
			deadline := time.Now().Add(10 * time.Second)
			for len(notes) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("%d progress notifications within 10 s of creation, want 2 (etcd sends one every %v)", len(notes), interval)
				}
				r, err := recvWithin(st, time.Until(deadline))
				if err != nil {
					t.Fatalf("after %d notifications: %v", len(notes), err)
				}
				switch {
				case r.Created:
					created = time.Now()
				case r.WatchId == 2:
					t.Fatalf("the watcher that asked for no notifications got %v", r)
				case r.WatchId == 1 && len(r.Events) == 0 && !r.Canceled:
					rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("x"), Serializable: true})
					if err != nil {
						t.Fatal(err)
					}
					if r.Header.Revision != rr.Header.Revision {
						t.Errorf("notification at revision %d, the store is at %d", r.Header.Revision, rr.Header.Revision)
					}
					notes = append(notes, time.Since(created))
				default:
					t.Fatalf("unexpected response %v", r)
				}
			}
			t.Logf("%s: notifications %v after creation (etcd's interval %v)", target.name, notes, interval)
		})
	}
}

// recvWithin receives one watch response or gives up after d.
func recvWithin(st pb.Watch_WatchClient, d time.Duration) (*pb.WatchResponse, error) {
	type res struct {
		r   *pb.WatchResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := st.Recv()
		ch <- res{r, err}
	}()
	select {
	case x := <-ch:
		return x.r, x.err
	case <-time.After(d):
		return nil, context.DeadlineExceeded
	}
}
