// Package benchjson holds the results the benches of bench/ print with
// -json (one line of JSON, the last of stdout) and bench/suite reads back:
// one definition for the bench that writes a result and the suite that
// reads it.
package benchjson

// Reads is bench/cachereads' result.
type Reads struct {
	Bench   string        `json:"bench"`
	Setup   ReadsSetup    `json:"setup"`
	Targets []ReadsTarget `json:"targets"`
}

type ReadsSetup struct {
	Keys            int     `json:"keys"`
	ValueBytes      int     `json:"value_bytes"`
	Clients         int     `json:"clients"`
	Conns           int     `json:"conns"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DurationSeconds float64 `json:"duration_s"`
	Writes          int     `json:"writes"`
	WriteIntervalMs float64 `json:"write_interval_ms"`
	FreshTimeoutMs  float64 `json:"fresh_timeout_ms"`
}

type ReadsTarget struct {
	Target       string     `json:"target"`
	Serializable ReadsKind  `json:"serializable"`
	Linearizable ReadsKind  `json:"linearizable"`
	Fresh        ReadsFresh `json:"fresh"`
}

type ReadsKind struct {
	WindowSeconds float64 `json:"window_s"`
	Reads         int64   `json:"reads"`
	ReadsPerSec   float64 `json:"reads_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	Errors        int64   `json:"errors"`
	Wrong         int64   `json:"wrong"`
	// EtcdFraction is the Range calls etcd handled per read answered.
	EtcdFraction      float64            `json:"etcd_fraction"`
	EtcdCPUSeconds    float64            `json:"etcd_cpu_s"`
	ProxyCPUSeconds   float64            `json:"proxy_cpu_s"` // 0 for direct
	HarnessCPUSeconds float64            `json:"harness_cpu_s"`
	ProxyCounters     map[string]float64 `json:"proxy_counters,omitempty"` // increase over the window
}

type ReadsFresh struct {
	Writes int `json:"writes"`
	Seen   int `json:"seen"`
	// The quantiles of the write-to-fresh latency; null when the quantile
	// falls on a write never seen.
	P50Ms       *float64 `json:"p50_ms"`
	P99Ms       *float64 `json:"p99_ms"`
	MaxMs       *float64 `json:"max_ms"`
	Early       int      `json:"seen_before_put_returned"`
	Violations  int64    `json:"monotonic_violations"`
	RevRegress  int64    `json:"header_revision_regressions"`
	PollErrors  int64    `json:"poll_errors"`
	PollsPerSec float64  `json:"polls_per_sec"`
}

// Lease is bench/leasekeepalive's result.
type Lease struct {
	Bench   string        `json:"bench"`
	Setup   LeaseSetup    `json:"setup"`
	Targets []LeaseTarget `json:"targets"`
}

type LeaseSetup struct {
	Leases          int     `json:"leases"`
	TTLSeconds      int     `json:"ttl_s"`
	Streams         int     `json:"streams"`
	Conns           int     `json:"conns"`
	Dup             int     `json:"dup"`
	IntervalMs      float64 `json:"interval_ms"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DurationSeconds float64 `json:"duration_s"`
	After           string  `json:"after"`
	Sample          int     `json:"sample"`
	// Bound is 1.1 × leases/(TTL/3), the renewals per second a coalescing
	// proxy should stay under.
	Bound float64 `json:"bound_renewals_per_sec"`
}

type LeaseTarget struct {
	Target        string  `json:"target"`
	WindowSeconds float64 `json:"window_s"`
	// On etcd, over the window: renewals a second, and LeaseKeepAlive
	// streams open at its end (and before the target's streams opened).
	RenewalsPerSec      float64 `json:"renewals_per_sec"`
	StreamsOnEtcd       float64 `json:"streams_on_etcd"`
	StreamsOnEtcdBefore float64 `json:"streams_on_etcd_before"`
	// The clients' requests of the window and their answers.
	Planned        int64   `json:"planned"`
	Sent           int64   `json:"sent"`
	Answered       int64   `json:"answered"` // of the sent, by the end of the drain
	Received       int64   `json:"received"` // answers received in the window
	SentPerSec     float64 `json:"sent_per_sec"`
	ReceivedPerSec float64 `json:"received_per_sec"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	BadTTLInWindow int64   `json:"bad_ttl_in_window"` // answers with TTL <= 0 or > -ttl
	BadTTL         int64   `json:"bad_ttl"`           // ... in all
	Extra          int64   `json:"answers_unasked"`
	StreamErrors   int64   `json:"stream_errors"`
	DrainSeconds   float64 `json:"drain_s"`

	TargetCPUSeconds  float64 `json:"target_cpu_s"` // etcd's for direct
	EtcdCPUSeconds    float64 `json:"etcd_cpu_s"`
	HarnessCPUSeconds float64 `json:"harness_cpu_s"`
	TargetRSSKB       int64   `json:"target_rss_kb"`
	TargetPeakRSSKB   int64   `json:"target_peak_rss_kb"`

	// After the clients stopped, of the sampled leases: those seen to
	// expire, and to be gone from etcd, and when (p50, max), from the last
	// keep-alive sent for each.
	Sampled         int     `json:"sampled"`
	Expired         int     `json:"expired"`
	ExpiredP50Secs  float64 `json:"expired_p50_s"`
	ExpiredMaxSecs  float64 `json:"expired_max_s"`
	Gone            int     `json:"gone"`
	GoneP50Secs     float64 `json:"gone_p50_s"`
	GoneMaxSecs     float64 `json:"gone_max_s"`
	NotSeenGone     int     `json:"not_seen_gone"` // seen neither expired nor gone by the end of the polling
	PollErrors      int64   `json:"poll_errors"`
	LeftoverRevoked int     `json:"leftover_revoked"` // leases still on etcd long after; revoked by the harness
	GrantSeconds    float64 `json:"grant_s"`
}

// Failover is bench/failover's result: one entry per scenario and target.
type Failover struct {
	Bench   string           `json:"bench"`
	Setup   FailoverSetup    `json:"setup"`
	Results []FailoverTarget `json:"results"` // one per scenario and target
}

type FailoverSetup struct {
	WarmupSeconds   float64 `json:"warmup_s"`
	FaultSeconds    float64 `json:"fault_s"`
	RecoverySeconds float64 `json:"recovery_s"`
	PutIntervalMs   float64 `json:"put_interval_ms"`
	PutTimeoutMs    float64 `json:"put_timeout_ms"`
	ReadIntervalMs  float64 `json:"read_interval_ms"`
	FaultyLeader    bool    `json:"faulty_leader"`
}

type FailoverTarget struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`

	PutsOK          int `json:"puts_ok"`
	PutsFailed      int `json:"puts_failed"`
	FailedCommitted int `json:"puts_failed_committed"` // failed puts etcd committed all the same
	AckedNotInHist  int `json:"puts_acked_not_in_history"`
	// PutOutageSeconds is the longest run of failed puts (see the
	// Markdown's legend); open: no put succeeded after it.
	PutOutageSeconds float64 `json:"put_outage_s"`
	PutOutageOpen    bool    `json:"put_outage_open"`

	ReadsOK          int     `json:"reads_ok"`
	ReadsFailed      int     `json:"reads_failed"`
	ReadOutageSecs   float64 `json:"read_outage_s"` // longest run of failed serializable reads, likewise
	ReadOutageOpen   bool    `json:"read_outage_open"`
	StalenessSeconds float64 `json:"max_staleness_s"`

	Watch              FailoverWatch `json:"watch"`
	RequireLeaderWatch FailoverWatch `json:"require_leader_watch"`
}

type FailoverWatch struct {
	StallSeconds float64 `json:"stall_s"`
	StallNever   bool    `json:"stall_never_delivered"`
	Exact        bool    `json:"exact"` // every event of the history once, in order, nothing else
	Missing      int     `json:"missing"`
	Duplicated   int     `json:"duplicated"`
	OutOfOrder   int     `json:"out_of_order"`
	NotInHistory int     `json:"not_in_history"`
	Errors       int     `json:"errors"`
	Restarts     int     `json:"restarts"`
}
