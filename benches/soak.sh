#!/usr/bin/env bash
# The soak test (issue 5; not in CI): sustained deliveries at a fixed rate
# for several minutes, sampling the receiver's memory and file descriptors.
#
# Starts a release auditsink (signatures enforce, so the whole pipeline
# runs) on 127.0.0.1, streams `auditsink simulate` into `auditsink send
# --rate R --duration S` over HTTPS, and every I seconds prints one row:
# elapsed seconds, RSS (KiB), open fds, threads, events stored so far,
# store size on disk.
# At the end it checks that every acknowledged event is in the store and
# prints the first, median-of-the-rest and last samples, so "flat" can be
# judged at a glance. With -u N only N unique events are generated and sent
# over and over (duplicates after the first round): the store stops growing,
# which separates memory that follows the store's size from memory that
# follows the traffic.
#
#   benches/soak.sh [-r EVENTS_PER_S] [-d SECONDS] [-i SAMPLE_SECONDS]
#                   [-c CONNECTIONS] [-b BATCH] [-u UNIQUE_EVENTS] [-m STORE_CACHE_MB]
#
# Needs cargo and jq. Honours CARGO_TARGET_DIR; NO_BUILD=1 skips the build;
# KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=2000
DURATION=300
INTERVAL=10
CONNECTIONS=4
BATCH=200
UNIQUE=
CACHE_MB=256
while getopts "r:d:i:c:b:u:m:h" opt; do
    case $opt in
    r) RATE=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    i) INTERVAL=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    b) BATCH=$OPTARG ;;
    u) UNIQUE=$OPTARG ;;
    m) CACHE_MB=$OPTARG ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
    esac
done
command -v jq >/dev/null || { echo "soak.sh: jq is required" >&2; exit 2; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
    echo "building (release)..." >&2
    cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --bin auditsink --target-dir "$TARGET"
fi
BIN=$TARGET/release/auditsink

WORK=$(mktemp -d "${TMPDIR:-/tmp}/auditsink-soak.XXXXXX")
SERVER_PID=
SENDER_PID=
cleanup() {
    for pid in $SENDER_PID $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

"$BIN" keygen "$WORK/keys" >/dev/null
cat >"$WORK/auditsink.toml" <<EOF
data_dir = "$WORK/data"
store_cache_mb = $CACHE_MB
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[source]]
name = "soak"
path = "/audit-logs"
authorization = "Bearer soak"
jwks = "$WORK/keys/jwks.json"
signatures = "enforce"
EOF
"$BIN" serve --config "$WORK/auditsink.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q 'listening on https://' "$WORK/server.log" && break
    sleep 0.1
done
PORT=$(grep -o 'listening on https://[^ ]*' "$WORK/server.log" | head -1 | sed 's/.*:\([0-9]*\)$/\1/')
[ -n "$PORT" ] || { cat "$WORK/server.log" >&2; exit 1; }
ADMIN=$(cat "$WORK/data/admin.addr")

# Enough events for the whole run (unique, or -u of them repeated);
# simulate streams, send paces.
EVENTS=$(awk -v r="$RATE" -v d="$DURATION" 'BEGIN { printf "%d", r * d + r }')
events() {
    if [ -z "$UNIQUE" ]; then
        "$BIN" simulate --jwks-dir "$WORK/keys" -n "$EVENTS" --format mixed --seed 7 2>/dev/null
    else
        "$BIN" simulate --jwks-dir "$WORK/keys" -n "$UNIQUE" --format mixed --seed 7 \
            >"$WORK/unique.log" 2>/dev/null
        # cat fails once head has what it needs: that ends the loop.
        while cat "$WORK/unique.log"; do :; done | head -n "$EVENTS"
    fi
}
# A generator cut short by the sender's --duration is not a failure.
{ events || true; } |
    "$BIN" send --url "https://localhost:$PORT/audit-logs" --auth 'Bearer soak' \
        --cacert "$WORK/data/tls/cert.pem" --rate "$RATE" --duration "$DURATION" \
        --batch "$BATCH" --concurrency "$CONNECTIONS" --quiet --json \
        --ledger "$WORK/ledger.log" - >"$WORK/summary.json" &
SENDER_PID=$!

# Events stored so far and the store's size on disk, from /status.
stored() {
    curl -fsS "http://$ADMIN/status" |
        jq -r '"\([.sources[].events_stored] | add)\t\(.store.size_on_disk_bytes)"'
}
sample() {
    local rss fds threads
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status")
    threads=$(awk '/^Threads/ { print $2 }' "/proc/$SERVER_PID/status")
    fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$rss" "$fds" "$threads" "$(stored)"
}

echo "soak: $RATE events/s for $DURATION s, batches of $BATCH, $CONNECTIONS connections, store cache $CACHE_MB MiB, sample every $INTERVAL s" >&2
printf 'elapsed_s\trss_kib\tfds\tthreads\tevents_stored\tstore_bytes\n' | tee "$WORK/samples.tsv"
START=$(date +%s)
while kill -0 "$SENDER_PID" 2>/dev/null; do
    sample $(($(date +%s) - START)) | tee -a "$WORK/samples.tsv"
    sleep "$INTERVAL"
done
wait "$SENDER_PID"
SENDER_PID=
sample $(($(date +%s) - START)) | tee -a "$WORK/samples.tsv"

ACKED=$(jq .acknowledged "$WORK/summary.json")
FAILED=$(jq .failed_batches "$WORK/summary.json")
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
STORED=$("$BIN" query --config "$WORK/auditsink.toml" | wc -l)
LEDGER=$(wc -l <"$WORK/ledger.log")
LEDGER_UNIQUE=$(sort -u "$WORK/ledger.log" | wc -l)

echo
echo "acknowledged $ACKED events ($FAILED failed batches), ledger $LEDGER lines ($LEDGER_UNIQUE unique), store $STORED events"
awk -F'\t' 'NR > 1 { n++; rss[n] = $2; fds[n] = $3 }
    END {
        printf "RSS KiB: first %d, max %d, last %d;  fds: first %d, max %d, last %d  (%d samples)\n",
            rss[1], maxof(rss, n), rss[n], fds[1], maxof(fds, n), fds[n], n
    }
    function maxof(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }' \
    "$WORK/samples.tsv"
if [ "$LEDGER_UNIQUE" != "$STORED" ] || [ "$FAILED" != 0 ] || [ "$LEDGER" != "$ACKED" ]; then
    echo "soak.sh: acknowledged and stored differ" >&2
    exit 1
fi
