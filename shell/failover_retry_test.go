package shell_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// Writes made while the member in use is stopping, before the proxy has
// moved, reach no member (gRPC cannot connect, so it sends them nowhere):
// the proxy sends them again on the member it moves to, and no client sees
// the dead connection's error. Writes keep going from before the stop
// until after the move.
func TestWritesThatReachedNoMemberGoToTheNext(t *testing.T) {
	cl, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	p := testutil.StartProxy(t, cl.Endpoints(), nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	ctx := testutil.Context(t, time.Minute)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	inUse := p.UpstreamMember()
	if !strings.Contains(cl.Members[0].ClientURL, inUse) {
		t.Fatalf("proxy forwards to %s, not member 0 (%s)", inUse, cl.Members[0].ClientURL)
	}

	stopped := make(chan struct{})
	var (
		mu                  sync.Mutex
		ok, deadConn, other int
		firstDead           error
	)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var until time.Time
			for i := 0; ; i++ {
				select {
				case <-stopped:
					if until.IsZero() {
						until = time.Now().Add(3 * time.Second)
					}
				default:
				}
				if !until.IsZero() && time.Now().After(until) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := kv.Put(cctx, &pb.PutRequest{Key: fmt.Appendf(nil, "w/%d/%d", g, i), Value: []byte("v")})
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case strings.HasPrefix(status.Convert(err).Message(), "connection error:"):
					deadConn++
					if firstDead == nil {
						firstDead = err
					}
				default:
					other++ // etcd's own, while it elects a leader
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	cl.Members[0].Stop()
	close(stopped)
	wg.Wait()
	t.Logf("writes: %d ok, %d with etcd's errors while it moved on, %d with the stopped member's connection error; proxy now on %s",
		ok, other, deadConn, p.UpstreamMember())
	if deadConn > 0 {
		t.Fatalf("%d writes got the stopped member's connection error, e.g. %v", deadConn, firstDead)
	}
	if p.UpstreamMember() == inUse {
		t.Fatalf("the proxy did not move from the stopped member")
	}
}
