package main

// The writers and the readers: open loops at a steady total rate, each
// call in its own goroutine with its own deadline, spread round-robin over
// the connections.

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// tick calls f(i) rate times a second, i counting from 0, each call in
// its own goroutine, until ctx ends; then it waits for the calls under way.
// The calls due are counted from the time elapsed, not from the ticks, so
// that a tick missed while this goroutine waits for a CPU delays calls but
// does not drop them.
func tick(ctx context.Context, rate float64, f func(i int)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	tk := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tk.Stop()
	start := time.Now()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		for due := int(time.Since(start).Seconds() * rate); i < due; i++ {
			n := i
			wg.Go(func() { f(n) })
		}
	}
}

// writeLoad Puts key number seq, seq counting from 0, each under prefix
// seq mod -prefixes.
type writeLoad struct {
	o       options
	clients []*clientv3.Client
	revs    *revTracker
	errs    *tally

	seq        atomic.Uint64 // puts issued
	ok, failed atomic.Int64
}

func (w *writeLoad) run(ctx context.Context) {
	tick(ctx, w.o.putRate, func(i int) {
		seq := w.seq.Add(1) - 1
		cli := w.clients[i%len(w.clients)]
		pctx, cancel := context.WithTimeout(context.Background(), w.o.rpcTimeout)
		defer cancel()
		resp, err := cli.Put(pctx, keyOf(w.o.prefixes, seq), "v")
		if err != nil {
			w.failed.Add(1)
			w.errs.add("Put", err)
			return
		}
		w.ok.Add(1)
		w.revs.saw(resp.Header.Revision)
	})
}

// readLoad Gets keys already written (or being written), serializable and
// linearizable in turn.
type readLoad struct {
	o       options
	clients []*clientv3.Client
	w       *writeLoad
	revs    *revTracker
	errs    *tally

	ok, failed [2]atomic.Int64 // linearizable, serializable
}

var readKinds = [2]string{"Range (linearizable)", "Range (serializable)"}

func (r *readLoad) run(ctx context.Context) {
	if r.o.getRate <= 0 {
		return
	}
	tick(ctx, r.o.getRate, func(i int) {
		cli := r.clients[i%len(r.clients)]
		kind := i % 2
		var opts []clientv3.OpOption
		if kind == 1 {
			opts = append(opts, clientv3.WithSerializable())
		}
		key := keyOf(r.o.prefixes, rand.Uint64N(r.w.seq.Load()+1))
		gctx, cancel := context.WithTimeout(context.Background(), r.o.rpcTimeout)
		defer cancel()
		resp, err := cli.Get(gctx, key, opts...)
		if err != nil {
			r.failed[kind].Add(1)
			r.errs.add(readKinds[kind], err)
			return
		}
		r.ok[kind].Add(1)
		r.revs.saw(resp.Header.Revision)
	})
}
