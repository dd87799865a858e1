#!/usr/bin/env bash
# Failover benchmark: bash bench/failover/run.sh [flags of bench/failover]
#
# Builds etcd (bench/etcd, for `etcd grpc-proxy start`), this proxy
# (cmd/etcdproxy) and the benchmark (bench/failover) into a temporary
# directory, then runs the benchmark with them. Any arguments are passed on
# (e.g. -scenarios=silent -fault=10s -put-interval=20ms -faulty-leader).
# The benchmark starts the etcd cluster in its own process and the two
# proxies as its children, and kills the children by PID when it exits;
# this script only waits for it. Results (results.md), the proxies' and
# etcd's logs stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build failover

bench_run failover "*/m[0-9]" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" "$@"
