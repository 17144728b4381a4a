#!/usr/bin/env bash
# The forwarding benchmark (BENCHMARKS.md, "Forwarding to a SIEM").
#
# Builds the release binary, generates N unique signed CEF events with
# `auditsink simulate`, and per run measures, in the same run:
#   ingest        auditsink with signatures off and no sink (load.sh's `off`):
#                 N events delivered with `auditsink send`, durable events/s
#   ingest+sink   the same, while a syslog/TCP sink forwards to a discarding
#                 destination (a TCP listener that reads and drops): ingest's
#                 events/s with forwarding running
#   fwd-discard   forwarding alone: the `ingest` store reopened with a sink
#                 (start = beginning) to the discarding destination; events/s
#                 from when the server listens until /status reports all N
#                 delivered (polled every 20 ms)
#   fwd-rsyslog   the same into a real rsyslog over TLS (RFC 5425), writing
#                 every message to a file (skipped when rsyslogd is missing)
# Each scenario runs R times; the table shows medians, with the receiver's
# CPU time per event (from /proc; for ingest+sink it includes forwarding
# every event, to the end), and the median of each run's ingest+sink /
# ingest ratio.
#
#   benches/sinks.sh [-n EVENTS] [-b BATCH] [-c CONNECTIONS] [-r RUNS]
#
# Needs cargo, jq, curl, python3 (the discarding listener), openssl (the
# rsyslog certificate). NO_BUILD=1 skips the build; KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=100000
BATCH=500
CONNECTIONS=8
RUNS=3
while getopts "n:b:c:r:h" opt; do
    case $opt in
    n) N=$OPTARG ;;
    b) BATCH=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done
for tool in jq curl python3; do
    command -v $tool >/dev/null || { echo "sinks.sh: $tool is required" >&2; exit 2; }
done

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
    echo "building (release)..." >&2
    cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --bin auditsink --target-dir "$TARGET"
fi
BIN=$TARGET/release/auditsink
WORK=$(mktemp -d "${TMPDIR:-/tmp}/auditsink-sinks.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

echo "generating $N events..." >&2
"$BIN" simulate --jwks-dir "$WORK/keys" -n "$N" --seed 1 >"$WORK/events.log" 2>/dev/null

# A TCP listener that reads and discards; prints its port.
start_discard() {
    python3 -u -c '
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16); print(s.getsockname()[1], flush=True)
def drain(c):
    buf = bytearray(1 << 20)
    while c.recv_into(buf): pass
while True:
    c, _ = s.accept(); threading.Thread(target=drain, args=(c,), daemon=True).start()
' >"$WORK/discard.port" &
    PIDS+=($!)
    for _ in $(seq 1 100); do [ -s "$WORK/discard.port" ] && break; sleep 0.05; done
    DISCARD_PORT=$(cat "$WORK/discard.port")
}

RSYSLOG_PORT=
start_rsyslog() {
    local rsyslogd
    rsyslogd=$(command -v rsyslogd || ls /usr/sbin/rsyslogd 2>/dev/null || true)
    if [ -z "$rsyslogd" ] || ! ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1; then
        echo "rsyslogd with lmnsd_ossl missing: the fwd-rsyslog rows are skipped" >&2
        return
    fi
    mkdir -p "$WORK/rsyslog/work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout "$WORK/rsyslog/key.pem" -out "$WORK/rsyslog/cert.pem" 2>/dev/null
    RSYSLOG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$WORK/rsyslog/rsyslog.conf" <<CONF
global(workDirectory="$WORK/rsyslog/work" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="$WORK/rsyslog/cert.pem"
       DefaultNetstreamDriverCertFile="$WORK/rsyslog/cert.pem"
       DefaultNetstreamDriverKeyFile="$WORK/rsyslog/key.pem")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="$RSYSLOG_PORT")
template(name="message" type="string" string="%msg%\n")
action(type="omfile" file="$WORK/rsyslog/messages.log" template="message")
CONF
    "$rsyslogd" -n -f "$WORK/rsyslog/rsyslog.conf" -i "$WORK/rsyslog/pid" 2>"$WORK/rsyslog/stderr" &
    PIDS+=($!)
    sleep 1
}

wait_port() {
    local log=$1
    for _ in $(seq 1 300); do
        if grep -q 'listening on https://' "$log" 2>/dev/null; then
            grep -o 'listening on https://[^ ]*' "$log" | head -1 | sed 's/.*:\([0-9]*\)$/\1/'
            return 0
        fi
        sleep 0.1
    done
    echo "sinks.sh: server did not start; see $log" >&2
    cat "$log" >&2
    return 1
}

# write_config DIR SINK: SINK is "", "discard" or "rsyslog".
write_config() {
    local dir=$1 sink=$2
    {
        echo "data_dir = \"$dir/data\""
        printf '[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n'
        printf '[[source]]\nname = "bench"\npath = "/audit-logs"\nauthorization = "Bearer bench"\nsignatures = "off"\n'
        case $sink in
        discard) printf '[[sink]]\nname = "siem"\ntype = "syslog"\ntransport = "tcp"\naddress = "127.0.0.1:%s"\n' "$DISCARD_PORT" ;;
        rsyslog) printf '[[sink]]\nname = "siem"\ntype = "syslog"\ntransport = "tls"\naddress = "localhost:%s"\nca_file = "%s"\n' \
            "$RSYSLOG_PORT" "$WORK/rsyslog/cert.pem" ;;
        esac
    } >"$dir/auditsink.toml"
}

SERVER_PID=
start_server() {
    local dir=$1
    "$BIN" serve --config "$dir/auditsink.toml" >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    PORT=$(wait_port "$dir/server.log")
    ADMIN=$(cat "$dir/data/admin.addr")
}
# The server's CPU time so far, in µs per event (of N).
cpu_per_event() {
    awk -v n="$N" -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz * 1e6 / n }' "/proc/$SERVER_PID/stat"
}
stop_server() {
    CPU=$(cpu_per_event)
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=
}

# Ingest N events into the server in $1; prints events/s.
ingest() {
    local dir=$1
    "$BIN" send --url "https://localhost:$PORT/audit-logs" --auth 'Bearer bench' --cacert "$dir/data/tls/cert.pem" \
        --batch "$BATCH" --concurrency "$CONNECTIONS" --preload --quiet --json \
        "$WORK/events.log" >"$dir/summary.json"
    [ "$(jq .acknowledged "$dir/summary.json")" = "$N" ] || { echo "sinks.sh: not all acknowledged" >&2; exit 1; }
    jq .events_per_sec "$dir/summary.json"
}

delivered() {
    curl -s "http://$ADMIN/status" | jq '.sinks[0].delivered // 0'
}

# Waits until the sink reports N delivered; prints seconds since $1 (epoch ns).
wait_delivered() {
    local since=$1
    while [ "$(delivered)" -lt "$N" ]; do sleep 0.02; done
    echo "$(( $(date +%s%N) - since ))" | awk '{ printf "%.3f", $1 / 1e9 }'
}

start_discard
start_rsyslog
: >"$WORK/results.tsv"
for run in $(seq 1 "$RUNS"); do
    # ingest alone (load.sh's `off`)
    dir=$WORK/ingest-$run; mkdir -p "$dir"; write_config "$dir" ""
    start_server "$dir"
    rate=$(ingest "$dir")
    stop_server
    printf 'ingest\t%s\t%s\n' "$rate" "$CPU" >>"$WORK/results.tsv"
    echo "run $run ingest: $rate events/s" >&2

    # forwarding alone, from the store just filled
    for dest in discard rsyslog; do
        [ "$dest" = rsyslog ] && [ -z "$RSYSLOG_PORT" ] && continue
        fdir=$WORK/fwd-$dest-$run; cp -r "$dir" "$fdir"; rm -f "$fdir/server.log"; write_config "$fdir" "$dest"
        sed -i "s|$dir/data|$fdir/data|" "$fdir/auditsink.toml"
        start_server "$fdir"
        t0=$(date +%s%N)
        secs=$(wait_delivered "$t0")
        stop_server
        printf 'fwd-%s\t%s\t%s\n' "$dest" "$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" "$CPU" >>"$WORK/results.tsv"
        echo "run $run fwd-$dest: $N in $secs s" >&2
    done

    # ingest while a sink forwards to the discarding destination
    dir=$WORK/both-$run; mkdir -p "$dir"; write_config "$dir" discard
    start_server "$dir"
    rate=$(ingest "$dir")
    t0=$(date +%s%N)
    lag=$(wait_delivered "$t0")
    stop_server
    printf 'ingest+sink\t%s\t%s\n' "$rate" "$CPU" >>"$WORK/results.tsv"
    echo "run $run ingest+sink: $rate events/s (sink done $lag s after ingest)" >&2
done

# median SCENARIO [COLUMN]: the median of a column (2: events/s, 3: CPU).
median() {
    awk -F'\t' -v s="$1" -v c="${2:-2}" '$1 == s { print $c }' "$WORK/results.tsv" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
# The median over runs of ingest+sink / ingest (each run's own pair).
paired=$(awk -F'\t' '$1 == "ingest" { a[++i] = $2 } $1 == "ingest+sink" { b[++j] = $2 }
    END { for (k = 1; k <= j; k++) print b[k] / a[k] }' "$WORK/results.tsv" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", v[int((NR + 1) / 2)] }')
ingest=$(median ingest)
echo
echo "$N CEF events, batches of $BATCH, $CONNECTIONS connections, median of $RUNS runs; $(nproc) cores"
echo
echo "| scenario | events/s (median) | vs ingest alone | receiver CPU µs/event (median) |"
echo "|---|---:|---:|---:|"
for s in ingest ingest+sink fwd-discard fwd-rsyslog; do
    m=$(median "$s")
    [ -z "$m" ] && continue
    printf '| %s | %.0f | %s | %s |\n' "$s" "$m" "$(awk -v a="$m" -v b="$ingest" 'BEGIN { printf "%.2f", a / b }')" "$(median "$s" 3)"
done
echo
echo "ingest+sink / ingest, median of the runs' own ratios: $paired"
