#!/usr/bin/env bash
# The load benchmark (BENCHMARKS.md, "End-to-end ingest").
#
# Builds the release binaries, generates N unique signed events with
# `auditsink simulate`, and for each receiver starts it on 127.0.0.1, delivers
# the events over HTTPS with `auditsink send` (C keep-alive connections,
# batches of B, gzip, bodies prepared before the clock starts), and stops it.
# Receivers:
#   off      auditsink, signatures off
#   enforce  auditsink, signatures = "enforce" with the simulator's JWKS
#   null     benches/null-receiver: hyper + rustls, reads, gunzips, discards
#   cluster  3 local nats-server nodes (JetStream, replicas 3), one
#            `auditsink serve --role receiver` (signatures off), then one
#            `--role indexer` started after the load, timed until its store
#            holds all N events (its catch-up rate); not in the default set
# "Durable events/s" is acknowledged events / wall time: auditsink answers 200
# only after the batch is flushed to disk, and the script checks afterwards
# that `auditsink query` returns all N events. Each receiver runs R times;
# the table shows the run with the median events/s.
#
#   benches/load.sh [-n EVENTS] [-b BATCH] [-c CONNECTIONS] [-r RUNS]
#                   [-f cef|json|mixed] [-s "off enforce null"]
#
# Needs cargo and jq (cluster: also curl and nats-server, or NATS_SERVER=path). Honours CARGO_TARGET_DIR; NO_BUILD=1 skips the build;
# KEEP=1 keeps the work directory (stores, logs, summaries).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=200000
BATCH=500
CONNECTIONS=8
RUNS=3
FORMAT=cef
SCENARIOS="off enforce null"
while getopts "n:b:c:r:f:s:h" opt; do
    case $opt in
    n) N=$OPTARG ;;
    b) BATCH=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    f) FORMAT=$OPTARG ;;
    s) SCENARIOS=$OPTARG ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
    esac
done
command -v jq >/dev/null || { echo "load.sh: jq is required" >&2; exit 2; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
    echo "building (release)..." >&2
    cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --bin auditsink --target-dir "$TARGET"
    cargo build --quiet --release --manifest-path "$ROOT/benches/null-receiver/Cargo.toml" --target-dir "$TARGET"
fi
BIN=$TARGET/release/auditsink
NULL=$TARGET/release/null_receiver

WORK=$(mktemp -d "${TMPDIR:-/tmp}/auditsink-load.XXXXXX")
SERVER_PID=
NATS_PIDS=()
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ ${#NATS_PIDS[@]} -gt 0 ]; then kill "${NATS_PIDS[@]}" 2>/dev/null || true; fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

echo "generating $N $FORMAT events..." >&2
"$BIN" simulate --jwks-dir "$WORK/keys" -n "$N" --format "$FORMAT" --seed 1 >"$WORK/events.log" 2>/dev/null
EVENT_BYTES=$(wc -c <"$WORK/events.log")

# Waits for "listening on https://ADDR" in $1; prints the port.
wait_port() {
    local log=$1 i
    for i in $(seq 1 300); do
        if grep -q 'listening on https://' "$log" 2>/dev/null; then
            grep -o 'listening on https://[^ ]*' "$log" | head -1 | sed 's/.*:\([0-9]*\)$/\1/'
            return 0
        fi
        sleep 0.1
    done
    echo "load.sh: receiver did not start; see $log" >&2
    cat "$log" >&2
    return 1
}

# CPU seconds (user + system) used so far by process $1.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=
}

# Starts 3 nats-server nodes (JetStream) in $1 on ports from $2; waits for
# a metadata leader. Sets NATS_PIDS and NATS_URLS.
start_nats() {
    local dir=$1 base=$2 i routes="" nats
    nats=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
    NATS_PIDS=() NATS_URLS=""
    for i in 1 2 3; do routes+="${routes:+,}nats://127.0.0.1:$((base + 10 + i))"; done
    for i in 1 2 3; do
        mkdir -p "$dir/n$i"
        "$nats" -a 127.0.0.1 -p $((base + i)) -m $((base + 20 + i)) -js -sd "$dir/n$i" -n "n$i" \
            --cluster_name bench -cluster "nats://127.0.0.1:$((base + 10 + i))" -routes "$routes" \
            >"$dir/n$i.log" 2>&1 &
        NATS_PIDS+=($!)
        NATS_URLS+="${NATS_URLS:+, }\"nats://127.0.0.1:$((base + i))\""
    done
    for i in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$((base + 21))/jsz" | jq -e '.meta_cluster.leader // "" | length > 0' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "load.sh: the NATS cluster did not form; see $dir/n*.log" >&2
    return 1
}

# The `cluster` scenario, run $1: receiver under load, then indexer catch-up.
# Appends to results.tsv (the receiver's row) and cluster.tsv.
run_cluster() {
    local run=$1 dir=$WORK/cluster-$1 port config base i
    mkdir -p "$dir"
    base=$((20000 + RANDOM % 20000))
    start_nats "$dir" "$base"
    local rss0
    rss0=$(for pid in "${NATS_PIDS[@]}"; do awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; done | sort -n | tail -1)
    for role in receiver indexer; do
        config=$dir/$role.toml
        {
            echo "data_dir = \"$dir/$role\""
            echo '[server]'
            echo 'listen = "127.0.0.1:0"'
            echo '[admin]'
            echo 'listen = "127.0.0.1:0"'
            echo '[[source]]'
            echo 'name = "bench"'
            echo 'path = "/audit-logs"'
            echo 'authorization = "Bearer bench"'
            echo 'signatures = "off"'
            echo '[cluster]'
            echo "nats_urls = [$NATS_URLS]"
        } >"$config"
    done
    "$BIN" serve --role receiver --config "$dir/receiver.toml" >"$dir/receiver.log" 2>&1 &
    SERVER_PID=$!
    port=$(wait_port "$dir/receiver.log")
    "$BIN" send --url "https://localhost:$port/audit-logs" --auth 'Bearer bench' \
        --cacert "$dir/receiver/tls/cert.pem" \
        --batch "$BATCH" --concurrency "$CONNECTIONS" --preload --quiet --json \
        "$WORK/events.log" >"$dir/summary.json"
    local cpu nats_cpu=0 stream_bytes rss disk
    cpu=$(cpu_secs "$SERVER_PID")
    stop_server
    for pid in "${NATS_PIDS[@]}"; do
        nats_cpu=$(awk -v a="$nats_cpu" -v b="$(cpu_secs "$pid")" 'BEGIN { printf "%.2f", a + b }')
    done
    # What JetStream holds for the N events in the duplicate window: the
    # stream's bytes, each node's store on disk, and each node's memory.
    stream_bytes=$(curl -sf "http://127.0.0.1:$((base + 21))/jsz?streams=true" |
        jq '[.account_details[].stream_detail[] | select(.name == "AUDITSINK") | .state.bytes] | first')
    rss=$(for pid in "${NATS_PIDS[@]}"; do awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; done | sort -n | tail -1)
    disk=$(for i in 1 2 3; do du -sk "$dir/n$i" | cut -f1; done | sort -n | tail -1)
    # The indexer, started now, reads the whole stream into its store.
    local started finished admin stored=0 icpu
    started=$(date +%s.%N)
    "$BIN" serve --role indexer --config "$dir/indexer.toml" >"$dir/indexer.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 300); do
        admin=$(grep -o 'admin on http://[0-9.:]*' "$dir/indexer.log" 2>/dev/null | head -1 | cut -d/ -f3 || true)
        [ -n "$admin" ] && break
        sleep 0.1
    done
    while [ "$stored" != "$N" ]; do
        sleep 0.2
        stored=$(curl -sf "http://$admin/status" | jq .store.events)
    done
    finished=$(date +%s.%N)
    icpu=$(cpu_secs "$SERVER_PID")
    stop_server
    for pid in "${NATS_PIDS[@]}"; do kill "$pid"; done
    wait "${NATS_PIDS[@]}" 2>/dev/null || true
    NATS_PIDS=()
    local acked failed
    acked=$(jq .acknowledged "$dir/summary.json")
    failed=$(jq .failed_batches "$dir/summary.json")
    if [ "$acked" != "$N" ] || [ "$failed" != 0 ]; then
        echo "load.sh: cluster run $run: acknowledged $acked of $N, $failed failed batches" >&2
        exit 1
    fi
    jq -r --arg cpu "$cpu" \
        '["cluster", .events_per_sec, .elapsed_secs, .latency_ms.p50, .latency_ms.p90, .latency_ms.p99, $cpu] | @tsv' \
        "$dir/summary.json" >>"$WORK/results.tsv"
    local catchup
    catchup=$(awk -v n="$N" -v a="$started" -v b="$finished" 'BEGIN { printf "%.0f", n / (b - a) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(jq .events_per_sec "$dir/summary.json")" \
        "$catchup" "$cpu" "$icpu" "$nats_cpu" "$stream_bytes" "$disk" "$rss" "$rss0" >>"$WORK/cluster.tsv"
    echo "cluster run $run: $(jq -r '"\(.events_per_sec) events/s, p99 \(.latency_ms.p99) ms"' "$dir/summary.json"), receiver CPU ${cpu} s; indexer catch-up $catchup events/s, CPU ${icpu} s; NATS CPU ${nats_cpu} s" >&2
}

# Runs scenario $1, run $2; appends a TSV row to $WORK/results.tsv.
run_one() {
    local scenario=$1 run=$2 dir=$WORK/$1-$2 port ca config
    if [ "$scenario" = cluster ]; then
        run_cluster "$run"
        return
    fi
    mkdir -p "$dir"
    if [ "$scenario" = null ]; then
        "$NULL" --listen 127.0.0.1:0 --cert-dir "$dir" >"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        ca=$dir/cert.pem
    else
        config=$dir/auditsink.toml
        {
            echo "data_dir = \"$dir/data\""
            echo '[server]'
            echo 'listen = "127.0.0.1:0"'
            echo '[admin]'
            echo 'listen = "127.0.0.1:0"'
            echo '[[source]]'
            echo 'name = "bench"'
            echo 'path = "/audit-logs"'
            echo 'authorization = "Bearer bench"'
            if [ "$scenario" = enforce ]; then
                echo "jwks = \"$WORK/keys/jwks.json\""
                echo 'signatures = "enforce"'
            else
                echo 'signatures = "off"'
            fi
        } >"$config"
        "$BIN" serve --config "$config" >"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        ca=$dir/data/tls/cert.pem
    fi
    port=$(wait_port "$dir/server.log")
    "$BIN" send --url "https://localhost:$port/audit-logs" --auth 'Bearer bench' --cacert "$ca" \
        --batch "$BATCH" --concurrency "$CONNECTIONS" --preload --quiet --json \
        "$WORK/events.log" >"$dir/summary.json"
    local cpu
    cpu=$(cpu_secs "$SERVER_PID")
    stop_server
    local acked failed
    acked=$(jq .acknowledged "$dir/summary.json")
    failed=$(jq .failed_batches "$dir/summary.json")
    if [ "$acked" != "$N" ] || [ "$failed" != 0 ]; then
        echo "load.sh: $scenario run $run: acknowledged $acked of $N, $failed failed batches" >&2
        exit 1
    fi
    if [ "$scenario" != null ]; then
        local stored
        stored=$("$BIN" query --config "$config" | wc -l)
        if [ "$stored" != "$N" ]; then
            echo "load.sh: $scenario run $run: $stored events in the store, expected $N" >&2
            exit 1
        fi
    fi
    jq -r --arg s "$scenario" --arg cpu "$cpu" \
        '[$s, .events_per_sec, .elapsed_secs, .latency_ms.p50, .latency_ms.p90, .latency_ms.p99, $cpu] | @tsv' \
        "$dir/summary.json" >>"$WORK/results.tsv"
    echo "$scenario run $run: $(jq -r '"\(.events_per_sec) events/s, p99 \(.latency_ms.p99) ms"' "$dir/summary.json"), receiver CPU ${cpu} s" >&2
}

for run in $(seq 1 "$RUNS"); do
    for scenario in $SCENARIOS; do
        run_one "$scenario" "$run"
    done
done

# The median run (by events/s) of each scenario.
median() {
    awk -F'\t' -v s="$1" '$1 == s' "$WORK/results.tsv" | sort -t$'\t' -k2,2n |
        awk -v n="$RUNS" 'NR == int((n + 1) / 2)'
}
null_rate=$(median null | cut -f2)
label() {
    case $1 in
    off) echo "auditsink, signatures off" ;;
    enforce) echo "auditsink, signatures enforce" ;;
    null) echo "null receiver (read, gunzip, discard)" ;;
    cluster) echo "auditsink cluster: receiver, 3 NATS nodes (replicas 3)" ;;
    esac
}
echo
echo "$N $FORMAT events ($EVENT_BYTES bytes), batches of $BATCH, $CONNECTIONS connections, median of $RUNS runs; $(nproc) cores"
echo
echo "| receiver | durable events/s | % of null | wall s | p50 ms | p90 ms | p99 ms | receiver CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for scenario in $SCENARIOS; do
    IFS=$'\t' read -r _ rate wall p50 p90 p99 cpu <<<"$(median "$scenario")"
    share=-
    if [ -n "$null_rate" ] && [ "$scenario" != null ]; then
        share=$(awk -v a="$rate" -v b="$null_rate" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    fi
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s |\n' \
        "$(label "$scenario")" "$rate" "$share" "$wall" "$p50" "$p90" "$p99" "$cpu"
done
if [ -s "$WORK/cluster.tsv" ]; then
    # The median cluster run by receiver events/s, and CPU per event.
    IFS=$'\t' read -r rate catchup cpu icpu ncpu stream disk rss rss0 <<<"$(sort -t$'\t' -k1,1n "$WORK/cluster.tsv" |
        awk -v n="$RUNS" 'NR == int((n + 1) / 2)')"
    per() { awk -v s="$1" -v n="$N" 'BEGIN { printf "%.0f", s * 1e6 / n }'; }
    echo
    echo "| cluster (median run) | value |"
    echo "|---|---:|"
    echo "| receiver durable events/s (acknowledged by a quorum of 3 replicas) | $(printf '%.0f' "$rate") |"
    echo "| indexer catch-up events/s (store durable, then acknowledged) | $catchup |"
    echo "| receiver CPU µs/event | $(per "$cpu") |"
    echo "| indexer CPU µs/event | $(per "$icpu") |"
    echo "| NATS CPU µs/event (3 nodes together, from their start to the end of the load) | $(per "$ncpu") |"
    off_cpu=$(median off | cut -f7)
    if [ -n "$off_cpu" ]; then
        echo "| embedded \`off\` receiver CPU µs/event (same run) | $(per "$off_cpu") |"
    fi
    echo "| stream bytes for $N events (one replica) | $stream |"
    echo "| largest node store on disk, KiB | $disk |"
    echo "| largest node RSS after the load (before: $rss0), KiB | $rss |"
fi
