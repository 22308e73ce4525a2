#!/usr/bin/env bash
# Recovery: N events acknowledged and never checkpointed, SIGKILL, restart. Prints the
# time from the restart to listening and to ready (`/readyz`: every partition has replayed
# the log), the replay rate, and checks that the meter counts every acknowledged event.
#
#   benches/scripts/recovery.sh [EVENTS]     (default 1000000)
#
# Environment:
#   BIN          directory with `metron` and `loadgen` (default target/release)
#   CONNECTIONS  load generator connections (default 16)
#   PERF         N: `perf record -g` the restarted server for its first N seconds, into
#                $PERF_OUT (default /tmp/metron-recovery.perf)
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-1000000}
bin=${BIN:-target/release}
connections=${CONNECTIONS:-16}
batch=1000
for b in "$bin/metron" "$bin/loadgen"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p metron-api --bin metron -p metron-benches --bin loadgen" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# No checkpoint while loading: every event stays in the log, unchecked.
cat > "$work/config.yaml" <<YAML
checkpointInterval: 24h
pendingEventsMax: 1000000000
memoryBytes: 8589934592
backlogRecordsMax: 100000000
YAML
start() {
    rm -f "$work/addr"
    RUST_LOG=info "$bin/metron" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
        --config "$work/config.yaml" --port-file "$work/addr" >>"$work/server.log" 2>&1 &
    pid=$!
}
start
for _ in $(seq 200); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/addr")"
until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; done
# The load generator sends for as long as it takes to pass $events (it reports what it sent).
rate_guess=600000
seconds=$(( events / rate_guess + 1 ))
echo "== loading about $events events ($connections connections x $batch), no checkpoint"
# --verify-seconds: wait until the meter counts every acknowledged event (processed, still
# unchecked), which gives the exact total the restart must reproduce.
"$bin/loadgen" --url "$url" --seconds "$seconds" --connections "$connections" --batch "$batch" \
    --server-pid "$pid" --verify-seconds 300 > "$work/load.txt"
grep -E "events acknowledged|server CPU|verified" "$work/load.txt"
acked=$(awk '/events acknowledged/ {print $3}' "$work/load.txt")
tokens=$(sed -n 's/^verified: .*(\([0-9]*\))$/\1/p' "$work/load.txt")
du -sh "$work/data"/* | sed 's/^/   /'
echo "== SIGKILL with $acked acknowledged events unchecked; meter total $tokens"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(date +%s.%N)
start
if [ -n "${PERF:-}" ]; then
    perf record -F 999 -g -p "$pid" -o "${PERF_OUT:-/tmp/metron-recovery.perf}" -- sleep "$PERF" >/dev/null 2>&1 &
    perf_pid=$!
fi
for _ in $(seq 600); do [ -s "$work/addr" ] && break; sleep 0.01; done
t1=$(date +%s.%N)
url="http://$(cat "$work/addr")"
until curl -sf "$url/readyz" >/dev/null; do sleep 0.01; done
t2=$(date +%s.%N)
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$pid/stat")
after=$(curl -sf "$url/api/v1/meters/loadgen_tokens/query" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(int(d[0]["value"]) if d else 0)')
python3 - "$t0" "$t1" "$t2" "$acked" "$cpu" <<'PY'
import sys
t0, t1, t2, n, cpu = map(float, sys.argv[1:])
print(f"listening after {t1 - t0:.2f} s, ready (replayed) after {t2 - t0:.2f} s: "
      f"{n / (t2 - t0):,.0f} events/s over the whole restart; server CPU {cpu:.1f} s "
      f"({cpu / n * 1e6:.2f} CPU-s per million events)")
PY
[ -n "${perf_pid:-}" ] && wait "$perf_pid" || true
grep -E "replay|Replay" "$work/server.log" | tail -3 | sed 's/^/   /'
if [ "$after" = "$tokens" ]; then echo "verified: the meter total after recovery equals the one before ($after)";
else echo "MISMATCH: before $tokens, after $after"; exit 1; fi
