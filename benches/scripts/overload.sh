#!/usr/bin/env bash
# Overload: 2x the measured ingest capacity for 5 minutes, with checkpoints forced to fail
# for one of those minutes. Prints, every second, the answers by status (204/429/503) and
# the server's resident memory; at the end the highest resident memory against
# memoryBytes, and checks that the meter counts every acknowledged event exactly once.
#
#   benches/scripts/overload.sh [SECONDS]            (default 300)
#
# Environment:
#   BIN           directory with `metron` and `loadgen` (default target/release)
#   LOADGEN       the load generator binary (default $BIN/loadgen)
#   MEMORY_BYTES  the server's memoryBytes (default 1073741824)
#   CONNECTIONS   load generator connections (default 16)
#   BACKLOG_RECORDS_MAX  the server's backlogRecordsMax (default 100000)
# The load generator runs on the same two cores as the server (no pinning), as the other
# benches here do.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
bin=${BIN:-target/release}
memory=${MEMORY_BYTES:-1073741824}
connections=${CONNECTIONS:-16}
loadgen=${LOADGEN:-$bin/loadgen}
for b in "$bin/metron" "$loadgen"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p metron-api -p metron-benches --bins" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# The unread backlog a partition may have before ingest answers 429: lower than the
# default (2M records) so that pushing back starts within seconds, not minutes, at 2x.
backlog=${BACKLOG_RECORDS_MAX:-100000}
cat > "$work/config.yaml" <<YAML
memoryBytes: $memory
checkpointFailureDeadline: 120s
backlogRecordsMax: $backlog
YAML

start_server() {  # $1: data dir; sets pid and url
    rm -f "$work/addr"
    METRON_FAILPOINTS= RUST_LOG=warn "$bin/metron" serve --listen 127.0.0.1:0 --data-dir "$1" \
        --config "$work/config.yaml" --port-file "$work/addr" >>"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -s "$work/addr" ] && break; sleep 0.1; done
    url="http://$(cat "$work/addr")"
    until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; done
}

echo "== capacity: closed loop, 30 s, $connections connections"
start_server "$work/data-capacity"
"$loadgen" --url "$url" --seconds 30 --connections "$connections" --server-pid "$pid" | tee "$work/capacity.txt"
kill "$pid"; wait "$pid" || true
capacity=$(awk '/events acknowledged/ {print $(NF-1)}' "$work/capacity.txt")
rate=$(( ${capacity%.*} * 2 ))
echo "== overload: $rate events/s offered (2 x $capacity) for $seconds s; checkpoints fail from 120 s to 180 s; memoryBytes $memory"
start_server "$work/data-overload"
(
    sleep 120
    curl -sf -X PUT --data 'objects.put=error' "$url/debug/failpoints" >/dev/null && echo "[checkpoints now fail]"
    sleep 60
    curl -sf -X PUT --data 'objects.put=off' "$url/debug/failpoints" >/dev/null && echo "[checkpoints work again]"
) &
"$loadgen" --url "$url" --seconds "$seconds" --connections $((connections * 4)) --rate "$rate" \
    --server-pid "$pid" --every-second --verify-seconds 900 | tee "$work/overload.txt"
highest=$(awk '/highest resident memory/ {print $(NF-1)}' "$work/overload.txt")
echo "highest resident memory $highest MiB; memoryBytes $((memory / 1048576)) MiB"
kill -0 "$pid" 2>/dev/null && echo "server alive after the run" || { echo "server died:"; tail -20 "$work/server.log"; exit 1; }
if [ "$highest" -gt $((memory / 1048576)) ]; then
    echo "FAIL: resident memory passed memoryBytes"; exit 1
fi
