package sim

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mutants are faults built into the core's machines behind the simfaults
// build tag (core/simfault): each breaks one guarantee.
var mutants = map[string]string{
	"skip-event":                "one event is not delivered",
	"event-after-cancel":        "a watch keeps receiving events after its cancel response",
	"stale-created":             "created answers with a revision one too old",
	"leak-upstream":             "an upstream watch stays open after its last watcher left",
	"duplicate-across-failover": "an event is delivered twice after the upstream stream is lost",
	"unasked-fragment":          "a watcher that did not ask for fragments gets a response marked as one",
	"cancel-below-told":         "a cancel response carries a revision below what the watcher was already told",
	"progress-before-created":   "an upstream progress answer counts for a watch created after its request",
	"compaction-boundary":       "a watcher needing exactly the compaction revision is ended with the compaction",
	"lost-during-rewind":        "the shared stream lost during a rewind reopens from the window, skipping the rewound history",
	"cancel-held-catch-up":      "a cancel on a held stream leaves the watcher's catch-up watch open",
	"future-upstream-start":     "a catch-up watch, or a group for a watcher that wants progress notifications, starts past etcd's revision, so etcd answers no progress for its stream",
	"future-kept":               "a group's upstream watch that starts past etcd's revision is never pulled back, so on an idle cluster etcd answers no progress for the shared stream",
	"map-order":                 "groups are visited in Go's random map order, so replaying the same inputs gives other outputs",
	"keep-compacted":            "an upstream watch etcd compacted is never cancelled, so etcd keeps it and answers no progress on its stream",
	"ignore-silence":            "the failover machine never leaves a member that stopped answering",
	"ignore-behind":             "the failover machine never leaves a member that fell behind the cluster",
	"fail-back":                 "the failover machine moves back to the first member as soon as it answers, leaving a healthy one",
	"lease-never-fresh":         "every keep-alive goes to etcd, none is answered locally: a lease is refreshed far more often than once per third of its TTL",
	"lease-fresh-for-ttl":       "a refresh is trusted for the whole TTL, not a third of it: a lease clients keep alive expires, or is answered TTL 0 while alive",
	"lease-full-ttl":            "a local answer carries the lease's whole TTL, not what is left of it",
	"lease-drop-answer":         "the second request waiting for etcd's answer to a refresh is never answered",
	"lease-answer-twice":        "some keep-alive requests are answered twice",
	"lease-no-resend":           "the refreshes in flight when the keep-alive stream breaks are not sent again, so their requests wait forever",
	"lease-piggyback-unasked":   "a refresh sent along with another lease's takes every lease that has fallen due, even one its clients stopped asking for: leases outlive their clients",
	"cache-no-invalidate":       "an event does not drop the cached responses whose range holds its key",
	"cache-fill-stale":          "a response older than what the subscription delivered is kept, though it may miss an event already delivered",
	"cache-ignore-identity":     "cache entries are keyed without the caller's identity, so one identity is served another's response",
	"cache-ignore-floor":        "a cached response is served below the revision the connection has already seen",
	"cache-consistent-early":    "a linearizable read is answered from the cache before the subscription delivered etcd's current revision",
	"cache-serve-not-live":      "the cache serves while its subscription is not live (the upstream watch stream was lost)",
	"cache-serve-rewinding":     "the cache serves while its subscription's group is rewound behind it",
	"lane-loss-ignored":         "a broken upstream stream of a token's lane is not reported to its machine, so its watches are never created again",
	"lane-never-ends":           "a token's lane is kept after its last stream closed, its upstream streams left open",
	"auth-skip-create-check":    "a watch with a token is created on the proxy's own read of the revision, not one made with the client's token on the watch's range: etcd's permission check is skipped",
	"auth-refusal-ignored":      "etcd's refusal of a watch's re-creation (the token may no longer watch the range) is ignored, so its watchers wait forever",
	"lane-ends-whole":           "etcd refusing a lane's token ends every stream of the lane, not only those carrying that token, though others of the user could go on",
	"lane-old-token-blamed":     "a refusal of the token a lane's streams carried before they were opened again with another is taken for a refusal of the new one",
	"lost-after-rewind":         "a group whose rewound upstream watch had passed where its window began, but not its head, reopens from the head when its stream breaks: the watchers behind lose what lay between",
	"progress-without-watchers": "a progress request on a stream without watchers is answered, where etcd says nothing",
	"auth-created-early":        "a create with a token is answered before etcd has accepted the upstream watch that is to serve it: a permission revoked in between ends a watch the client was told etcd created",
}

// TestMutationsAreCaught proves the simulation's checks can fail: the
// simulation is built with the faults above available and run once per
// fault, and every run must fail with a violated guarantee.
func TestMutationsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the simulation once per fault")
	}
	bin := filepath.Join(t.TempDir(), "sim-with-faults.test")
	build := exec.Command("go", "test", "-c", "-tags", "simfaults", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the simulation with faults: %v\n%s", err, out)
	}
	for name, what := range mutants {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, "-test.run", "^TestCoreSimulation$", "-test.count", "1",
				"-rapid.checks", "2000", "-rapid.shrinktime", "2s", "-rapid.nofailfile")
			cmd.Env = append(os.Environ(), "SIM_MUTANT="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("fault %q (%s) went unnoticed by 2000 schedules", name, what)
			}
			if !strings.Contains(string(out), "guarantee violated") && !strings.Contains(string(out), "not a function of its inputs") {
				t.Fatalf("fault %q: the simulation failed, but not on a guarantee:\n%s", name, lastLines(string(out), 20))
			}
			i := max(strings.Index(string(out), "guarantee violated"), strings.Index(string(out), "not a function of its inputs"))
			t.Logf("caught %q: %s", name, firstLine(string(out)[i:]))
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstLine(s string) string {
	lines := strings.SplitN(s, "\n", 3)
	if len(lines) > 1 {
		return strings.TrimSpace(lines[0] + " " + lines[1])
	}
	return lines[0]
}
