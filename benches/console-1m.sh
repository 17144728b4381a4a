#!/usr/bin/env bash
# The web console on a large store (BENCHMARKS.md, "Web console").
#
# Builds the release binary, generates N signed events with `auditsink
# simulate` (5 to 60 ms apart: 1M events span about 9 hours), delivers them
# to `auditsink serve` (signatures off) with `auditsink send`, then times
# each console page with curl over the admin listener, R times each, and
# prints the median and the slowest time per page. The searches name a
# principal and a trace taken from the middle of the data, and an hour in
# the middle of its time span.
#
#   benches/console-1m.sh [-n EVENTS] [-r REPEATS]
#
# Needs cargo and curl. Honours CARGO_TARGET_DIR; NO_BUILD=1 skips the
# build; KEEP=1 keeps the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=1000000
REPEATS=7
while getopts "n:r:h" opt; do
    case $opt in
    n) N=$OPTARG ;;
    r) REPEATS=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
    esac
done

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
    echo "building (release)..." >&2
    cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --bin auditsink --target-dir "$TARGET"
fi
BIN=$TARGET/release/auditsink

WORK=$(mktemp -d "${TMPDIR:-/tmp}/auditsink-console.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

echo "generating $N events..." >&2
"$BIN" simulate --jwks-dir "$WORK/keys" -n "$N" --seed 7 >"$WORK/events.log" 2>/dev/null

cat >"$WORK/auditsink.toml" <<EOF
data_dir = "$WORK/data"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[source]]
name = "bench"
path = "/audit-logs"
authorization = "Bearer bench"
signatures = "off"
EOF
"$BIN" serve --config "$WORK/auditsink.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q 'listening on https://' "$WORK/server.log" && grep -q 'admin on http://' "$WORK/server.log" && break
    sleep 0.1
done
PORT=$(grep -o 'listening on https://[^ ]*' "$WORK/server.log" | head -1 | sed 's/.*:\([0-9]*\)$/\1/')
ADMIN=$(grep -o 'admin on http://[^ ]*' "$WORK/server.log" | head -1 | sed 's|.*http://||')
[ -n "$PORT" ] && [ -n "$ADMIN" ] || { cat "$WORK/server.log" >&2; exit 1; }

echo "delivering..." >&2
"$BIN" send --url "https://localhost:$PORT/audit-logs" --auth 'Bearer bench' \
    --cacert "$WORK/data/tls/cert.pem" --concurrency 4 --quiet --json \
    "$WORK/events.log" >"$WORK/send.json"
grep -q "\"acknowledged\":$N" "$WORK/send.json" || { cat "$WORK/send.json" >&2; exit 1; }

# A principal, a trace and an hour from the middle of the data.
MIDDLE=$(sed -n "$((N / 2))p" "$WORK/events.log")
PRINCIPAL=$(grep -o 'principal_id=[^ ]*' <<<"$MIDDLE" | cut -d= -f2)
TRACE=$(grep -o 'trace_id=[^ ]*' <<<"$MIDDLE" | cut -d= -f2)
RT=$(grep -o ' rt=[0-9]*' <<<"$MIDDLE" | cut -d= -f2)
SINCE=$((RT - RT % 3600000))
UNTIL=$((SINCE + 3600000))
FIRST_ID=$(curl -s "http://$ADMIN/api/events?limit=1" | grep -o '"id":"[^"]*"' | cut -d'"' -f4)

pages=(
    "/"
    "/search"
    "/search?principal=$PRINCIPAL"
    "/search?trace=$TRACE"
    "/search?since=$SINCE&until=$UNTIL"
    "/search?since=$SINCE&until=$UNTIL&principal=$PRINCIPAL"
    "/search?source=bench"
    "/event/$FIRST_ID"
    "/quarantine"
    "/api/events?principal=$PRINCIPAL"
)

echo
echo "$N events in the store ($(du -sh "$WORK/data" | cut -f1) on disk); each page $REPEATS times, release build, $(nproc) cores"
echo
echo "| page | median ms | slowest ms | bytes |"
echo "|---|---:|---:|---:|"
for page in "${pages[@]}"; do
    times=()
    for _ in $(seq 1 "$REPEATS"); do
        read -r code secs bytes < <(curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' \
            -H 'Host: localhost' "http://$ADMIN$page")
        [ "$code" = 200 ] || { echo "console-1m.sh: $page answered $code" >&2; exit 1; }
        times+=("$secs")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(sed -n "$(((REPEATS + 1) / 2))p" <<<"$sorted")
    slowest=$(tail -1 <<<"$sorted")
    label=${page//$PRINCIPAL/P}
    label=${label//$TRACE/T}
    label=${label//$SINCE/H}
    label=${label//$UNTIL/H+1h}
    label=${label//$FIRST_ID/ID}
    printf '| `%s` | %.1f | %.1f | %s |\n' "$label" "$(awk -v s="$median" 'BEGIN { print s * 1000 }')" \
        "$(awk -v s="$slowest" 'BEGIN { print s * 1000 }')" "$bytes"
done
echo
echo "P = a principal with $(grep -c "principal_id=$PRINCIPAL " "$WORK/events.log") events; T = a trace with $(grep -c "trace_id=$TRACE " "$WORK/events.log"); H = the hour holding event $((N / 2))"
