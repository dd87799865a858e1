package port

import "fmt"

// LaneStart tells the shell that a lane's upstream streams are wanted: it
// opens them, when the lane's first request comes, with Token (a token of
// the lane's identity).
type LaneStart struct {
	Lane  Lane
	Token string
}

func (s LaneStart) String() string {
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
