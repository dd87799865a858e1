package main

// The bench's own scheduling stalls: etcd's members run in this process,
// so when it does not get a CPU, neither do they, and the proxy's
// upstream goes silent however well the proxy does. A goroutine sleeps
// 10 ms at a time and records how late it wakes.

import (
	"context"
	"sync/atomic"
	"time"
)

type stallMeter struct{ worst atomic.Int64 } // ns, since the last take

const stallTick = 10 * time.Millisecond

func (m *stallMeter) run(ctx context.Context) {
	tm := time.NewTimer(stallTick)
	defer tm.Stop()
	for {
		t := time.Now()
		tm.Reset(stallTick)
		select {
		case <-ctx.Done():
			return
		case <-tm.C:
		}
		late := int64(time.Since(t) - stallTick)
		for {
			cur := m.worst.Load()
			if late <= cur || m.worst.CompareAndSwap(cur, late) {
				break
			}
		}
	}
}

// take is the longest stall since the last take.
func (m *stallMeter) take() time.Duration { return time.Duration(m.worst.Swap(0)) }
