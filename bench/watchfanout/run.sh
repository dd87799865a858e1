#!/usr/bin/env bash
# Watch fan-out benchmark for EVAL.md ("Watch fan-out"): bash bench/watchfanout/run.sh
#
# Builds etcd (bench/etcd), this proxy (cmd/etcdproxy) and the load
# generator (bench/watchfanout) into a temporary directory, starts one etcd
# member, etcd's grpc-proxy and this proxy in front of it, then:
#
#  1. RSS per idle watcher on the fresh processes: for each of etcd (direct
#     watchers, for reference), grpc-proxy and etcdproxy, VmRSS before, after
#     the client connections are open, and with IDLE_KEYS watchers on
#     IDLE_KEYS distinct keys held open.
#  2. Fan-out: for W in WATCHERS and each target (direct, grpcproxy,
#     etcdproxy), one generator run: W watchers on one key over CONNS
#     connections, BURST puts as fast as possible then PACED puts at RATE/s,
#     all written directly to etcd. The proxies' and etcd's CPU time
#     (utime+stime from /proc/<pid>/stat) is read before and after each run.
#  3. RSS per idle watcher again, on the processes warmed by step 2 (Go
#     reuses or returns heap grown in step 2, so this round only shows how
#     far the fresh figure moves; the fresh round is the measurement).
#
# Per fan-out run it also records the target's and etcd's peak RSS (VmHWM,
# reset through /proc/<pid>/clear_refs before the run) and the load average.
#
# AUTH=both (or on) adds etcd auth to step 2: each generator run measures the
# fan-out without auth and then with auth enabled on the etcd member, every
# stream carrying one token of a user who may read the key (AUTH_TOKENS=per-conn:
# a token per connection; both: one token, then per connection), and records
# per phase the watchers etcd holds (etcd_debugging_mvcc_watcher_total) and
# the target's and etcd's CPU time and peak RSS. The generator enables auth
# and disables it again before it exits, so every later run and round sees
# etcd without auth (see phases.go). An extra table compares the phases.
# IDLE_KEYS=0 skips steps 1 and 3. With AUTH=off (the default) the runs and
# the tables are the ones above.
#
# Nothing is restarted between runs. Every process started here is killed by
# PID at exit. Results and logs stay in the printed directory.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WATCHERS=${WATCHERS:-"1000 10000"}
TARGETS=${TARGETS:-"direct grpcproxy etcdproxy"}
CONNS=${CONNS:-100}
BURST=${BURST:-200}
PACED=${PACED:-200}
RATE=${RATE:-100}
VALUE_SIZE=${VALUE_SIZE:-128}
IDLE_KEYS=${IDLE_KEYS:-10000}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-120s}
SETTLE=${SETTLE:-3}
AUTH=${AUTH:-off}
AUTH_TOKENS=${AUTH_TOKENS:-one}

case $AUTH in off | on | both) ;; *) echo "AUTH=$AUTH: want off, on or both" >&2 && exit 2 ;; esac
case $AUTH_TOKENS in one | per-conn | both) ;; *) echo "AUTH_TOKENS=$AUTH_TOKENS: want one, per-conn or both" >&2 && exit 2 ;; esac

# Builds etcd, the proxy and the generator into $OUT, and sets LABEL.
. "$ROOT/bench/build.sh"
bench_build watchfanout
log "$LABEL"
PIDS=()

die() {
	log "FATAL: $*"
	exit 1
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for _ in $(seq 50); do
		local alive=0
		for pid in "${PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for pid in "${PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
	done
	rm -rf "$OUT/etcd-data"
	log "results and logs in $OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		if [ -z "$(ss -Hltn "sport = :$p")" ] && [ -z "$(ss -Hltn "sport = :$((p + 1))")" ]; then
			echo "$p"
			return
		fi
	done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
vmrss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
vmhwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; } # VmHWM := VmRSS
alive() { kill -0 "$1" 2>/dev/null || die "process $1 ($2) is gone; see $OUT/$2.log"; }

# wait_for FILE PATTERN SECONDS PID NAME
wait_for() {
	local end=$((SECONDS + $3))
	while ! grep -q -- "$2" "$1" 2>/dev/null; do
		[ $SECONDS -ge $end ] && die "$5: no '$2' in $1 after $3 s"
		kill -0 "$4" 2>/dev/null || die "$5 exited before '$2'; see $1"
		sleep 0.1
	done
}

EP=$(free_port)
PP=$((EP + 1))
ETCD=http://127.0.0.1:$EP
"$OUT/etcd" --name wb --data-dir "$OUT/etcd-data" \
	--listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
	--listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
	--initial-cluster "wb=http://127.0.0.1:$PP" \
	--unsafe-no-fsync --log-level=error >"$OUT/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
end=$((SECONDS + 30))
until curl -sf "$ETCD/health" | grep -q '"health":"true"'; do
	[ $SECONDS -ge $end ] && die "etcd not healthy after 30 s; see $OUT/etcd.log"
	alive "$ETCD_PID" etcd
	sleep 0.1
done
log "etcd pid $ETCD_PID at $ETCD"

GP=$(free_port)
"$OUT/etcd" grpc-proxy start --endpoints="$ETCD" --listen-addr="127.0.0.1:$GP" \
	--advertise-client-url="" >"$OUT/grpcproxy.log" 2>&1 &
GP_PID=$!
PIDS+=("$GP_PID")
wait_for "$OUT/grpcproxy.log" "started gRPC proxy" 30 "$GP_PID" grpcproxy
log "grpc-proxy pid $GP_PID at 127.0.0.1:$GP"

XP=$(free_port)
"$OUT/etcdproxy" start --endpoints="$ETCD" --listen-addr="127.0.0.1:$XP" \
	--advertise-client-url="" >"$OUT/etcdproxy.log" 2>&1 &
XP_PID=$!
PIDS+=("$XP_PID")
wait_for "$OUT/etcdproxy.log" "started gRPC proxy" 30 "$XP_PID" etcdproxy
log "etcdproxy pid $XP_PID at 127.0.0.1:$XP"

addr_of() {
	case $1 in
	direct) echo "$ETCD" ;;
	grpcproxy) echo "127.0.0.1:$GP" ;;
	etcdproxy) echo "127.0.0.1:$XP" ;;
	esac
}
pid_of() {
	case $1 in
	direct) echo "$ETCD_PID" ;;
	grpcproxy) echo "$GP_PID" ;;
	etcdproxy) echo "$XP_PID" ;;
	esac
}

# idle_rss ROUND: RSS per idle watcher for every target, appended to idle.jsonl
idle_rss() {
	local round=$1 t pid f g rss0 rss1 rss2
	for t in $TARGETS; do
		pid=$(pid_of "$t")
		alive "$pid" "$t"
		f="$OUT/idle-$round-$t.out"
		sleep "$SETTLE"
		rss0=$(vmrss_kb "$pid")
		"$OUT/watchfanout" --endpoints="$(addr_of "$t")" --idle-keys="$IDLE_KEYS" --conns="$CONNS" \
			--key="idle/$round/$t" --idle-settle=3s --idle-hold=6s --json >"$f" 2>"$f.err" &
		g=$!
		PIDS+=("$g")
		wait_for "$f" '"phase":"connected"' 60 "$g" "watchfanout idle $t"
		sleep 2
		rss1=$(vmrss_kb "$pid")
		wait_for "$f" '"phase":"ready"' 120 "$g" "watchfanout idle $t"
		sleep 3
		rss2=$(vmrss_kb "$pid")
		wait "$g" || log "watchfanout idle $t exited $?; see $f.err"
		jq -c --arg round "$round" --arg t "$t" --argjson r0 "$rss0" --argjson r1 "$rss1" --argjson r2 "$rss2" \
			--argjson k "$IDLE_KEYS" 'select(.phase == "ready") | {round: $round, target: $t,
				rss_before_kb: $r0, rss_conns_kb: $r1, rss_watchers_kb: $r2, watchers: .watchers, not_ok: .not_ok,
				create_ms: .create_ms,
				bytes_per_watcher: ((($r2 - $r0) * 1024) / $k | floor),
				bytes_per_watcher_excl_conns: ((($r2 - $r1) * 1024) / $k | floor)}' "$f" >>"$OUT/idle.jsonl"
		log "idle $round $t: $(tail -1 "$OUT/idle.jsonl")"
	done
}

print_idle() {
	echo
	echo "RSS per idle watcher ($IDLE_KEYS watchers on $IDLE_KEYS distinct keys, $CONNS connections)"
	{
		echo "round target rss_before_MiB rss_conns_MiB rss_watchers_MiB created B/watcher B/watcher_excl_conns"
		jq -r '[.round, .target, (.rss_before_kb/1024*10|round/10), (.rss_conns_kb/1024*10|round/10),
			(.rss_watchers_kb/1024*10|round/10), .watchers, .bytes_per_watcher, .bytes_per_watcher_excl_conns] | @tsv' "$OUT/idle.jsonl"
	} | column -t
}

if [ "$IDLE_KEYS" -gt 0 ]; then
	log "RSS per idle watcher, fresh processes"
	idle_rss fresh
fi

for W in $WATCHERS; do
	for t in $TARGETS; do
		alive "$ETCD_PID" etcd
		sleep "$SETTLE"
		pid=$(pid_of "$t")
		alive "$pid" "$t"
		f="$OUT/run-$W-$t"
		load=$(cut -d' ' -f1-3 /proc/loadavg)
		reset_hwm "$pid"
		reset_hwm "$ETCD_PID"
		r0=$(vmrss_kb "$pid")
		c0=$(cpu_ticks "$pid")
		e0=$(cpu_ticks "$ETCD_PID")
		extra=()
		if [ "$AUTH" != off ]; then
			extra=(--auth="$AUTH" --auth-tokens="$AUTH_TOKENS" --phase-settle="${SETTLE}s"
				--target-pid="$pid" --etcd-pid="$ETCD_PID")
		fi
		log "W=$W $t: running (load $load)"
		"$OUT/watchfanout" --endpoints="$(addr_of "$t")" --put-endpoint="$ETCD" --watchers="$W" --conns="$CONNS" \
			--key="wb/$W/$t" --burst="$BURST" --paced="$PACED" --rate="$RATE" --value-size="$VALUE_SIZE" \
			--phase-timeout="$PHASE_TIMEOUT" --json --label="$t" "${extra[@]}" >"$f.json" 2>"$f.err" &
		g=$!
		PIDS+=("$g")
		wait "$g"
		rc=$?
		c1=$(cpu_ticks "$pid")
		e1=$(cpu_ticks "$ETCD_PID")
		r1=$(vmrss_kb "$pid")
		h1=$(vmhwm_kb "$pid")
		eh1=$(vmhwm_kb "$ETCD_PID")
		if [ "$rc" != 0 ] || ! jq -e . "$f.json" >/dev/null 2>&1; then
			log "W=$W $t: watchfanout failed (exit $rc); see $f.err"
			jq -nc --arg t "$t" --argjson w "$W" --argjson rc "$rc" '{label: $t, watchers: $w, failed: $rc}' >>"$OUT/results.jsonl"
			continue
		fi
		if [ "$AUTH" != off ]; then
			# one line per phase, with the phase's own CPU and peak RSS
			jq -c --arg load "$load" --arg t "$t" '. + {
				label: "\($t)/\(.auth)", target_name: $t, load_before: $load,
				target_peak_rss_kb: .procs.target_peak_rss_kb, etcd_peak_rss_kb: .procs.etcd_peak_rss_kb,
				etcd_cpu_seconds: (.procs.etcd_cpu_seconds*100|round/100),
				proxy_cpu_seconds: (if $t == "direct" then null else (.procs.target_cpu_seconds*100|round/100) end),
				proxy_cpu_s_per_m_events: (if $t == "direct" or .delivered_events == 0 then null
					else .procs.target_cpu_seconds / .delivered_events * 1e6 end)}' "$f.json" >>"$OUT/results.jsonl"
			log "W=$W $t: $(jq -c '{a: .auth, d: .delivered_events, e: .expected_events, cut: .watchers_cut,
				b: .burst.events_per_sec, p: .paced.events_per_sec, bp99: .burst.p99_ms, pp99: .paced.p99_ms,
				etcd_w: .etcd_watchers}' "$f.json" | tr '\n' ' ')"
			continue
		fi
		jq -c --arg load "$load" --argjson c "$(((c1 - c0)))" --argjson e "$(((e1 - e0)))" --arg t "$t" \
			--argjson r0 "$r0" --argjson r1 "$r1" --argjson h1 "$h1" --argjson eh1 "$eh1" '. + {
			load_before: $load,
			target_rss_before_kb: $r0, target_rss_after_kb: $r1, target_peak_rss_kb: $h1, etcd_peak_rss_kb: $eh1,
			etcd_cpu_seconds: ($e / 100),
			proxy_cpu_seconds: (if $t == "direct" then null else $c / 100 end),
			proxy_cpu_s_per_m_events: (if $t == "direct" or .delivered_events == 0 then null
				else ($c / 100) / .delivered_events * 1e6 end)}' "$f.json" >>"$OUT/results.jsonl"
		log "W=$W $t: $(jq -c '{d: .delivered_events, e: .expected_events, cut: .watchers_cut,
			b: .burst.events_per_sec, p: .paced.events_per_sec, bp99: .burst.p99_ms, pp99: .paced.p99_ms}' "$f.json")"
	done
done

if [ "$IDLE_KEYS" -gt 0 ]; then
	log "RSS per idle watcher, after the fan-out runs"
	idle_rss after
fi

for W in $WATCHERS; do
	echo
	echo "Fan-out, W=$W watchers on one key, $CONNS connections, burst $BURST puts, paced $PACED puts at $RATE/s, value $VALUE_SIZE B"
	{
		echo "target delivered/expected burst_puts_s burst_ev/s paced_ev/s burst_p50_ms burst_p99_ms paced_p50_ms paced_p99_ms cut missing wall_s proxy_cpu_s proxy_cpu_s/1M_ev etcd_cpu_s client_cpu_s peak_rss_MiB etcd_peak_rss_MiB load"
		jq -r --argjson w "$W" 'select(.watchers == $w) | if .failed then [.label, "FAILED(exit \(.failed))"] | @tsv else
			[.label, "\(.delivered_events)/\(.expected_events)", (.burst.put_seconds*1000|round/1000),
			(.burst.events_per_sec|round), (.paced.events_per_sec|round),
			(.burst.p50_ms*10|round/10), (.burst.p99_ms*10|round/10),
			(.paced.p50_ms*10|round/10), (.paced.p99_ms*10|round/10),
			.watchers_cut, .missing_events, (.wall_seconds*10|round/10),
			(.proxy_cpu_seconds // "-"), (if .proxy_cpu_s_per_m_events then (.proxy_cpu_s_per_m_events*100|round/100) else "-" end),
			.etcd_cpu_seconds, (.client_cpu_seconds*10|round/10),
			(.target_peak_rss_kb/1024|round), (.etcd_peak_rss_kb/1024|round), (.load_before|split(" ")[0])] | @tsv end' "$OUT/results.jsonl"
	} | column -t
	[ "$AUTH" = off ] && continue
	echo
	echo "Auth vs no auth, W=$W: events/s ratio against the phase without auth (none) of the same run; etcd watchers from etcd_debugging_mvcc_watcher_total (before the phase's streams opened, max while they were open, and the difference)"
	{
		echo "target phase tokens delivered/expected burst_ev/s burst_vs_none paced_ev/s paced_vs_none burst_p50_ms burst_p99_ms paced_p50_ms paced_p99_ms etcd_watchers_before etcd_watchers_max phase_watchers cut missing proxy_cpu_s/1M_ev"
		for t in $TARGETS; do
			jq -rs --argjson w "$W" --arg t "$t" '[.[] | select(.watchers == $w and .target_name == $t)] |
				(map(select(.auth == "none")) | first) as $b |
				def vs(f): if $b == null or ($b | f) == 0 then "-" else (f / ($b | f) * 100 | round / 100) end;
				.[] | [.target_name, .auth, (.tokens // 0), "\(.delivered_events)/\(.expected_events)",
				(.burst.events_per_sec|round), vs(.burst.events_per_sec),
				(.paced.events_per_sec|round), vs(.paced.events_per_sec),
				(.burst.p50_ms*10|round/10), (.burst.p99_ms*10|round/10),
				(.paced.p50_ms*10|round/10), (.paced.p99_ms*10|round/10),
				.etcd_watchers.before, .etcd_watchers.during_max, .etcd_watchers.phase_max,
				.watchers_cut, .missing_events,
				(if .proxy_cpu_s_per_m_events then (.proxy_cpu_s_per_m_events*100|round/100) else "-" end)] | @tsv' "$OUT/results.jsonl"
		done
	} | column -t
done
if [ "$IDLE_KEYS" -gt 0 ]; then
	print_idle
fi
