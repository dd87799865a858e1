package main

// The run: processes up, leases granted, the load, the fault and the
// samples for -duration, then the checks and the report.

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
)

// run reports whether every check passed; err is a failure of the bench
// itself (setup, or reading etcd's history).
func run(o options) (bool, error) {
	var err error
	if o.dir, err = child.WorkDir(o.dir, "soak"); err != nil {
		return false, err
	}
	logf("data and logs in %s", o.dir)

	cl, err := startCluster(o.dir)
	if err != nil {
		return false, err
	}
	defer cl.Stop()
	p, err := startProxy(o, cl)
	if err != nil {
		return false, err
	}
	defer p.Stop()

	direct, err := newClient(cl.Endpoints())
	if err != nil {
		return false, err
	}
	defer direct.Close()
	var clients []*clientv3.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range o.conns {
		c, err := newClient([]string{p.addr})
		if err != nil {
			return false, err
		}
		clients = append(clients, c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := direct.Get(ctx, "soak/~start")
	cancel()
	if err != nil {
		return false, err
	}
	revs := &revTracker{first: resp.Header.Revision + 1}
	revs.saw(resp.Header.Revision)

	logf("granting %d leases of %d s through the proxy, and %d directly", o.leases, o.leaseTTL, o.controlLeases)
	ll := &leaseLoad{o: o, n: o.leases, via: "proxy", clients: clients}
	if err := ll.grant(context.Background()); err != nil {
		return false, err
	}
	controlCli, err := newClient(cl.Endpoints())
	if err != nil {
		return false, err
	}
	defer controlCli.Close()
	control := &leaseLoad{o: o, n: o.controlLeases, via: "direct", clients: []*clientv3.Client{controlCli}}
	if err := control.grant(context.Background()); err != nil {
		return false, err
	}

	// t=0 of the report: the keep-alives and the load start now.
	clk := clock{time.Now()}
	errs := newTally(clk)
	kaCtx, stopKeepAlives := context.WithCancel(context.Background())
	defer stopKeepAlives()
	for _, l := range []*leaseLoad{ll, control} {
		l.clk, l.errs = clk, errs
		l.keepAlive(kaCtx)
	}

	wl := &watchLoad{o: o, clients: clients, revs: revs, errs: errs}
	wr := &writeLoad{o: o, clients: clients, revs: revs, errs: errs}
	rd := &readLoad{o: o, clients: clients, w: wr, revs: revs, errs: errs}
	f := &fault{}
	stall := &stallMeter{}
	smp := &sampler{clk: clk, cl: cl, p: p, wl: wl, w: wr, errs: errs, fault: f, stall: stall}

	logf("load for %v: %d watchers, %.0f puts/s, %.0f gets/s, %d leases over %d connections; member in use stopped at %v for %v",
		o.duration, o.watchers, o.putRate, o.getRate, o.leases, o.conns, o.duration/2, o.down)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var load, sampling, faulting sync.WaitGroup
	load.Go(func() { wl.run(loadCtx) })
	load.Go(func() { wr.run(loadCtx) })
	load.Go(func() { rd.run(loadCtx) })
	sideCtx, stopSide := context.WithCancel(context.Background())
	defer stopSide()
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	defer stopSampling()
	sampling.Go(func() { stall.run(sampleCtx) })
	sampling.Go(func() { smp.run(sampleCtx, o.sample) })
	faulting.Go(func() { f.run(sideCtx, clk, cl, p, o.duration/2, o.down) })

	time.Sleep(o.duration)
	stopSampling()
	sampling.Wait()
	logf("stopping the load")
	stopLoad()
	load.Wait()
	stopSide()
	faulting.Wait()
	last := smp.take()
	last.note = "load stopped"
	smp.samples = append(smp.samples, last)

	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logf("checking the leases on etcd directly")
	for _, l := range []*leaseLoad{ll, control} {
		l.check(ctx, direct)
		l.end()
	}
	stopKeepAlives()
	ll.wait()
	control.wait()
	f.noteInUse(ctx, p)
	failovers := proxyFailovers(ctx, p)

	logf("reading etcd's history and checking %d sessions", wl.started.Load())
	h, err := readHistory(ctx, direct, revs.first, o.prefixes)
	if err != nil {
		return false, err
	}
	v := check(h, wl.sessions)
	_, selfPeak, _ := child.Memory(os.Getpid())

	rep := report{o: o, samples: smp.samples, fault: f, failovers: failovers, v: v, h: h,
		lost: ll.lost(), leases: len(ll.leases), controlLost: control.lost(), controlLeases: len(control.leases), errs: errs.snapshot(), w: wr, r: rd, selfPeakKB: selfPeak}
	md := rep.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return false, err
		}
		logf("report written to %s", o.out)
	}
	return rep.passed(), nil
}

// proxyFailovers is the proxy's etcdproxy_upstream_failovers_total by
// reason, those not zero.
func proxyFailovers(ctx context.Context, p *proxy) map[string]float64 {
	ms, err := p.metrics(ctx)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, m := range ms["etcdproxy_upstream_failovers_total"].GetMetric() {
		if v := m.GetCounter().GetValue(); v > 0 {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] = v
				}
			}
		}
	}
	return out
}
