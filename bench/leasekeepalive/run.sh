#!/usr/bin/env bash
# Lease keep-alive benchmark: bash bench/leasekeepalive/run.sh [flags of bench/leasekeepalive]
#
# Builds etcd (bench/etcd: the member, and `etcd grpc-proxy start`), this
# proxy (cmd/etcdproxy) and the benchmark (bench/leasekeepalive) into a
# temporary directory, then runs the benchmark with them. Any arguments are
# passed on (e.g. -quick, -leases=20000 -dup=3, -after=idle,
# -targets=etcdproxy). The benchmark starts etcd and the two proxies as its
# children and kills them by PID when it exits; this script only waits for
# it. Results (results.md) and the logs stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build leasekeepalive

bench_run leasekeepalive "etcd-data" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" "$@"
