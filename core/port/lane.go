package port

import "fmt"

// LaneStart tells the shell that a lane's upstream streams are wanted: it
// opens them, when the lane's first request comes, with Token (a token of
// the lane's identity). With Restart, the lane's streams are open and etcd
// refused their token: the shell breaks them and opens them again with
// Token, reporting each as lost (node.UpstreamLost) once it is open again,
// even if it never was before; nothing queued for the old streams goes
// out.
type LaneStart struct {
	Lane    Lane
	Token   string
	Restart bool
}

func (s LaneStart) String() string {
	if s.Restart {
		return fmt.Sprintf("lane %v/%v opens again with another token", s.Lane.Shared, s.Lane.CatchUp)
	}
	return fmt.Sprintf("lane %v/%v starts", s.Lane.Shared, s.Lane.CatchUp)
}

// LaneEnd tells the shell that a lane holds nothing any more: it closes
// the lane's upstream streams. A lane's IDs are never used again.
type LaneEnd struct{ Lane Lane }

func (e LaneEnd) String() string {
	return fmt.Sprintf("lane %v/%v ends", e.Lane.Shared, e.Lane.CatchUp)
}

// StartLane hands the shell a lane to open.
func (o *Outbox) StartLane(s LaneStart) { o.lanes = append(o.lanes, s) }

// EndLane hands the shell a lane to close.
func (o *Outbox) EndLane(e LaneEnd) { o.laneEnds = append(o.laneEnds, e) }
