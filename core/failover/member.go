package failover

import (
	"time"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// member is what the machine knows of one etcd member.
type member struct {
	addr string

	// The probe in flight, if any.
	outstanding bool
	seq         uint64
	sentAt      time.Time

	health     port.ProbeHealth // from the last probe (unknown before the first answer)
	answeredAt time.Time
	applied    uint64 // the last applied raft index it reported (0: unknown)

	leaderlessSince time.Time // start of the run of answers without a leader
	healthySince    time.Time // start of the run of healthy answers
	leftAt          time.Time // when the machine last moved away from it
}

// answer takes the answer to the probe in flight.
func (mb *member) answer(now time.Time, r port.ProbeResult) {
	mb.outstanding = false
	if r.Health == port.ProbeNoAnswer {
		mb.giveUp()
		return
	}
	was := mb.health
	mb.health, mb.answeredAt = r.Health, now
	if r.Health == port.ProbeHealthy {
		if was != port.ProbeHealthy {
			mb.healthySince = now
		}
		if r.Applied > 0 {
			mb.applied = r.Applied
		}
	} else {
		mb.healthySince = time.Time{}
	}
	if r.Health == port.ProbeNoLeader && was != port.ProbeNoLeader {
		mb.leaderlessSince = now
	}
}

// giveUp stops waiting for the probe in flight: the member did not answer.
func (mb *member) giveUp() {
	mb.outstanding = false
	mb.health = port.ProbeNoAnswer
	mb.healthySince = time.Time{}
}

// silent reports that the member's last probe went unanswered, or the one
// in flight has been out for timeout.
func (mb *member) silent(now time.Time, timeout time.Duration) bool {
	return mb.health == port.ProbeNoAnswer || (mb.outstanding && now.Sub(mb.sentAt) >= timeout)
}
