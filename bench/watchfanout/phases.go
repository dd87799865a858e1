package main

// --auth: the fan-out without auth and with etcd auth enabled, in one run,
// against the same target and key.
//
// The phases run in this order: without auth ("none", with --auth=both),
// then with one token on every stream ("one-token"), then with a token per
// connection ("token-per-conn", with --auth-tokens=per-conn or both). Each
// phase measures exactly what the unauthenticated fan-out measures, and
// also samples etcd's watcher gauge (etcdstats.go). In the authenticated
// phases every stream carries a token of the reader, a user who may only
// read --key, obtained with Authenticate through the target (one token:
// from the first of --endpoints; per connection: from the endpoint the
// connection goes to); the revision read and the puts go to etcd directly
// as root.
//
// Auth is enabled on the etcd member behind --put-endpoint before the first
// authenticated phase and disabled again after the last one (also when a
// phase fails, or the tool gets SIGINT or SIGTERM), because the same member
// serves everything after: run.sh reuses it for the next target and for its
// idle rounds, and the unauthenticated phase of the next run must find
// etcd as it was. The users and the role stay (auth.go).

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

type authPhase struct {
	name    string
	auth    bool
	perConn bool // one token per connection, all for the same user
}

// authPhases is the phases --auth and --auth-tokens ask for; nil for
// --auth=off.
func authPhases(o options) ([]authPhase, error) {
	var with []authPhase
	one := authPhase{name: "one-token", auth: true}
	perConn := authPhase{name: "token-per-conn", auth: true, perConn: true}
	switch o.authTokens {
	case "one":
		with = []authPhase{one}
	case "per-conn":
		with = []authPhase{perConn}
	case "both":
		with = []authPhase{one, perConn}
	default:
		return nil, fmt.Errorf("--auth-tokens=%q: want one, per-conn or both", o.authTokens)
	}
	switch o.auth {
	case "off":
		return nil, nil
	case "on":
		return with, nil
	case "both":
		return append([]authPhase{{name: "none"}}, with...), nil
	}
	return nil, fmt.Errorf("--auth=%q: want off, on or both", o.auth)
}

// authState is auth as this run left it on etcd, shared with the signal
// handler so that a killed run turns auth off.
type authState struct {
	mu sync.Mutex
	ea *etcdAuth // non-nil while this run has auth enabled
}

func (s *authState) disable() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ea == nil {
		return
	}
	if err := s.ea.disable(); err != nil {
		fmt.Fprintln(os.Stderr, "watchfanout: AUTH LEFT ENABLED ON ETCD:", err)
	} else {
		fmt.Fprintln(os.Stderr, "watchfanout: auth disabled on etcd")
	}
	s.ea = nil
}

func runAuth(o options, phases []authPhase) error {
	putConn, err := dial(o.putEndpoint)
	if err != nil {
		return err
	}
	defer putConn.Close()
	if err := ensureAuthOff(putConn); err != nil {
		return err
	}
	// The reader's tokens come from the target, one connection per endpoint.
	var tokAuth []pb.AuthClient
	for _, ep := range strings.Split(o.endpoints, ",") {
		conn, err := dial(ep)
		if err != nil {
			return err
		}
		defer conn.Close()
		tokAuth = append(tokAuth, pb.NewAuthClient(conn))
	}
	st := &authState{}
	defer st.disable()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		if s, ok := <-sigc; ok {
			fmt.Fprintf(os.Stderr, "watchfanout: %v\n", s)
			st.disable()
			os.Exit(130)
		}
	}()

	var results []*result
	for _, p := range phases {
		time.Sleep(o.phaseSettle)
		ph := phase{name: p.name, mon: newMonitor(o)}
		if p.auth {
			st.mu.Lock()
			if st.ea == nil {
				st.ea, err = enableAuth(putConn, o.key)
				if err == nil {
					fmt.Fprintf(os.Stderr, "watchfanout: auth enabled on etcd %s (reader %q may read %q)\n", o.putEndpoint, readUser, o.key)
				}
			}
			ea := st.ea
			st.mu.Unlock()
			if err != nil {
				return err
			}
			// A fresh root token for each phase: a simple token lapses
			// after etcd's --auth-token-ttl without use.
			if ph.putToken, err = ea.authenticate(rootUser, rootPassword); err != nil {
				return fmt.Errorf("phase %s: authenticate %s: %w", p.name, rootUser, err)
			}
			n := 1
			if p.perConn {
				n = o.conns
			}
			t0 := time.Now()
			toks, err := readerTokens(tokAuth, n)
			if err != nil {
				return fmt.Errorf("phase %s: %w", p.name, err)
			}
			fmt.Fprintf(os.Stderr, "watchfanout: phase %s: %d reader token(s) from %s in %.1fs\n", p.name, n, o.endpoints, time.Since(t0).Seconds())
			ph.watchToken = func(c int) string { return toks[c%len(toks)] }
			ph.tokens = n
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		res, err := fanout(ctx, o, ph)
		cancel()
		if err != nil {
			return fmt.Errorf("phase %s: %w", p.name, err)
		}
		results = append(results, res)
		if o.jsonOut {
			printResult(o, res)
		} else {
			fmt.Printf("phase %s (%d token(s)):\n", res.Auth, res.Tokens)
			printHuman(os.Stdout, res)
			printEtcdStats(os.Stdout, res)
		}
	}
	st.disable()
	if !o.jsonOut {
		printComparison(os.Stdout, results)
	}
	return nil
}

func printEtcdStats(w io.Writer, r *result) {
	if e := r.EtcdWatchers; e != nil {
		fmt.Fprintf(w, "  etcd watchers: before %d, once created %d, during max %d min %d (%d samples), at close %d; this phase: %d\n",
			e.Before, e.Created, e.DuringMax, e.DuringMin, e.Samples, e.AtClose, e.PhaseMax)
		if e.Errors > 0 {
			fmt.Fprintf(w, "  etcd metrics: %d failed reads, last: %s\n", e.Errors, e.LastError)
		}
	}
	if p := r.Procs; p != nil && (p.TargetCPUSeconds >= 0 || p.EtcdCPUSeconds >= 0) {
		fmt.Fprintf(w, "  CPU: target %.2fs, etcd %.2fs; peak RSS: target %d KiB, etcd %d KiB\n",
			p.TargetCPUSeconds, p.EtcdCPUSeconds, p.TargetPeakRSSKB, p.EtcdPeakRSSKB)
	}
}

// printComparison prints the phases side by side, the ratios against the
// unauthenticated phase if there is one.
func printComparison(w io.Writer, rs []*result) {
	if len(rs) == 0 {
		return
	}
	var base *result
	for _, r := range rs {
		if r.Auth == "none" {
			base = r
		}
	}
	ratio := func(v, b float64) string {
		if base == nil || b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v/b)
	}
	fmt.Fprintf(w, "\nauth comparison, target %s: %d watchers on one key over %d conns\n", rs[0].Target, rs[0].Watchers, rs[0].Conns)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\ttokens\tdelivered/expected\tburst_ev/s\tvs_none\tpaced_ev/s\tvs_none\tburst_p50_ms\tburst_p99_ms\tpaced_p50_ms\tpaced_p99_ms\tetcd_watchers_before\tduring_max\tphase_max\tcut\tmissing")
	for _, r := range rs {
		var b, p float64
		if base != nil {
			b, p = base.Burst.EventsPerSec, base.Paced.EventsPerSec
		}
		e := r.EtcdWatchers
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%.0f\t%s\t%.0f\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\n",
			r.Auth, r.Tokens, r.Delivered, r.Expected,
			r.Burst.EventsPerSec, ratio(r.Burst.EventsPerSec, b), r.Paced.EventsPerSec, ratio(r.Paced.EventsPerSec, p),
			r.Burst.P50Ms, r.Burst.P99Ms, r.Paced.P50Ms, r.Paced.P99Ms,
			e.Before, e.DuringMax, e.PhaseMax, r.WatchersCut, r.MissingEvents)
	}
	_ = tw.Flush()
}
