package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// freshResult is what the write-to-fresh workload showed on one target.
type freshResult struct {
	lat        []time.Duration // per write: from the Put's return until the reader saw it or a later value; never: math.MaxInt64
	early      int             // writes the reader saw before their Put returned (counted as 0)
	violations int64           // reads that returned a value older than one the reader had seen
	revRegress int64           // reads whose header revision was below one the reader had seen
	polls      int64           // reads answered
	pollSecs   float64         // how long the reader polled
	errs       int64
	example    string
}

const never = time.Duration(math.MaxInt64)

func (f freshResult) seen() int {
	n := 0
	for _, d := range f.lat {
		if d != never {
			n++
		}
	}
	return n
}

func (f freshResult) pollRate() float64 {
	if f.pollSecs == 0 {
		return 0
	}
	return float64(f.polls) / f.pollSecs
}

// quantile is the q-quantile of the latencies in ms ("never" if it falls
// on an unseen write; q = 1 is the maximum).
func (f freshResult) quantile(q float64) string {
	d := f.quantileDur(q)
	switch d {
	case -1:
		return "-"
	case never:
		return "never"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

func (f freshResult) quantileDur(q float64) time.Duration {
	if len(f.lat) == 0 {
		return -1
	}
	s := slices.Clone(f.lat)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// freshValue is the write-to-fresh key's value seq: its number, then
// padding to size bytes.
func freshValue(seq, size int) []byte {
	v := fmt.Appendf(nil, "%08d", seq)
	for len(v) < size {
		v = append(v, 'y')
	}
	return v
}

func parseSeq(v []byte) (int, error) {
	if len(v) < 8 {
		return 0, fmt.Errorf("value %q too short", v)
	}
	return strconv.Atoi(string(v[:8]))
}

// runFresh writes o.writes new values of one key directly on etcd (kv),
// one every o.writeInterval, while one reader polls the key through the
// target, serializable, in a tight loop.
func runFresh(o options, tgt target, kv pb.KVClient) (freshResult, error) {
	var f freshResult
	key := []byte("cachereads/fresh/" + tgt.name)
	n := o.writes
	put := func(seq int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: freshValue(seq, o.valueBytes)})
		return err
	}
	if err := put(0); err != nil {
		return f, fmt.Errorf("write-to-fresh: first Put: %w", err)
	}
	conn, err := probe.Dial(tgt.endpoint)
	if err != nil {
		return f, err
	}
	defer conn.Close()
	tkv := pb.NewKVClient(conn)
	logf("%s, write-to-fresh: %d writes on etcd every %v, one serializable poller through %s", tgt.name, n, o.writeInterval, tgt.name)

	// The reader alone writes firstSeen, the writer alone putDone; both are
	// read after the reader has stopped.
	firstSeen := make([]int64, n+1)
	putDone := make([]int64, n+1)
	for i := range firstSeen {
		firstSeen[i] = -1
	}
	var maxSeen atomic.Int64
	maxSeen.Store(-1)
	var stop atomic.Bool
	ready := make(chan struct{})
	var wg sync.WaitGroup
	var r0, r1 int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Go(func() {
		req := &pb.RangeRequest{Key: key, Serializable: true}
		var maxRev int64
		r0 = now()
		defer func() { r1 = now() }()
		for !stop.Load() {
			resp, err := tkv.Range(ctx, req)
			t := now()
			var seq int
			if err == nil && len(resp.Kvs) != 1 {
				err = fmt.Errorf("%d kvs", len(resp.Kvs))
			}
			if err == nil {
				seq, err = parseSeq(resp.Kvs[0].Value)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				f.errs++
				if f.example == "" {
					f.example = fmt.Sprintf("Range %s: %v", key, err)
				}
				time.Sleep(time.Millisecond)
				continue
			}
			f.polls++
			if rev := resp.GetHeader().GetRevision(); rev < maxRev {
				f.revRegress++
			} else {
				maxRev = rev
			}
			m := int(maxSeen.Load())
			switch {
			case seq < m:
				f.violations++
			case seq > m:
				for j := m + 1; j <= seq && j <= n; j++ {
					firstSeen[j] = t
				}
				maxSeen.Store(int64(seq))
				if m < 0 {
					close(ready)
				}
			}
		}
	})
	stopReader := func() {
		stop.Store(true)
		cancel()
		wg.Wait()
	}

	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		stopReader()
		return f, fmt.Errorf("write-to-fresh: the reader saw no value in 10 s (%d errors, e.g. %s)", f.errs, f.example)
	}
	time.Sleep(200 * time.Millisecond)

	start := now()
	for i := 1; i <= n; i++ {
		sleepUntil(start + int64(i)*int64(o.writeInterval))
		if err := put(i); err != nil {
			stopReader()
			return f, fmt.Errorf("write-to-fresh: Put %d: %w", i, err)
		}
		putDone[i] = now()
	}
	deadline := now() + int64(o.freshTimeout)
	for maxSeen.Load() < int64(n) && now() < deadline {
		time.Sleep(time.Millisecond)
	}
	stopReader()

	f.pollSecs = time.Duration(r1 - r0).Seconds()
	f.lat = make([]time.Duration, n)
	for i := 1; i <= n; i++ {
		switch {
		case firstSeen[i] < 0:
			f.lat[i-1] = never
		case firstSeen[i] < putDone[i]:
			f.early++
		default:
			f.lat[i-1] = time.Duration(firstSeen[i] - putDone[i])
		}
	}
	return f, nil
}
