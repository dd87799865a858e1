#!/usr/bin/env bash
# The one benchmark command: bash bench/suite/run.sh [-quick] [flags of bench/suite]
#
# Builds etcd (bench/etcd: the member, and `etcd grpc-proxy start`), this
# proxy (cmd/etcdproxy) and the suite (bench/suite) into a temporary
# directory, then runs the suite with them: every section through direct
# etcd, etcd's grpc-proxy, this proxy and a bare gRPC ceiling, one table
# with the ratios. The suite kills its children by PID when it exits.
# Results (results.md) and logs stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build suite
(cd "$ROOT" && go build -o "$OUT/watchfanout" ./bench/watchfanout) || exit 1
# The reads, lease and failover sections run these benches as children.
(cd "$ROOT" && for b in cachereads leasekeepalive failover; do go build -o "$OUT/$b" "./bench/$b" || exit 1; done) || exit 1

bench_run suite "etcd-data */etcd-data failover/*/*/m[0-9]" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" -watchfanout="$OUT/watchfanout" \
	-cachereads="$OUT/cachereads" -leasekeepalive="$OUT/leasekeepalive" -failover="$OUT/failover" "$@"
