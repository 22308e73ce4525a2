#!/usr/bin/env bash
# Ingest: events/s acknowledged (durable, deduplicated, aggregated), the server's CPU
# seconds per million events, resident memory every second, and ack -> visible in a
# meter query (p50/p99 of probes every 200 ms), checkpoints included. At the end the
# meter's total is checked against the tokens of every acknowledged event.
#
#   benches/scripts/ingest.sh [SECONDS] [RATE]     (default 60 s, closed loop)
#
# RATE > 0 offers that many events per second (open loop) instead of as many as the
# server takes.
#
# Environment:
#   BIN          directory with `metron` and `loadgen` (default target/release)
#   CONNECTIONS  load generator connections (default 4)
#   BATCH        events per request (default 100)
#   PIN          1: the server on CPU 0, the load generator on CPU 1 (taskset); default:
#                both on the same two cores, unpinned
#   CONFIG       extra lines for the server's config file
#   PERF         N: `perf record -g` the server for N seconds from second PERF_AT (default 10), into
#                $PERF_OUT (default /tmp/metron-ingest.perf)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
rate=${2:-0}
bin=${BIN:-target/release}
connections=${CONNECTIONS:-4}
batch=${BATCH:-100}
for b in "$bin/metron" "$bin/loadgen"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p metron-api --bin metron -p metron-benches --bin loadgen" >&2; exit 1; }
done
server_cpus=0-1; client_cpus=0-1
if [ "${PIN:-0}" = 1 ]; then server_cpus=0; client_cpus=1; fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
printf '%s\n' "${CONFIG:-}" > "$work/config.yaml"
RUST_LOG=warn taskset -c "$server_cpus" "$bin/metron" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
    --config "$work/config.yaml" --port-file "$work/addr" >>"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/addr")"
until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; done
echo "== $(date -u +%FT%TZ) $seconds s, rate ${rate:-closed loop}, $connections connections x $batch events, server CPUs $server_cpus, load generator CPUs $client_cpus"
if [ -n "${PERF:-}" ]; then
    (sleep "${PERF_AT:-10}"; perf record -F 499 -g -p "$pid" -o "${PERF_OUT:-/tmp/metron-ingest.perf}" -- sleep "$PERF" >/dev/null 2>&1) &
fi
taskset -c "$client_cpus" "$bin/loadgen" --url "$url" --seconds "$seconds" --connections "$connections" \
    --batch "$batch" --rate "$rate" --server-pid "$pid" --every-second --verify-seconds 60 > "$work/out.txt" || {
    cat "$work/out.txt"; tail -20 "$work/server.log"; exit 1; }
# Every tenth second of the per-second table, then the summary.
awk '/^second/ {print; next} /^ *[0-9]+ / {if ($1 % 10 == 0) print; next} {print}' "$work/out.txt"
echo "-- the server's memory at the end (/proc/$pid/smaps_rollup):"
grep -E "^(Rss|Anonymous|AnonHugePages|Pss_File)" "/proc/$pid/smaps_rollup" 2>/dev/null | tr -s ' ' | paste -sd ' ' || true
echo "-- the dedup index at the end (/metrics):"
curl -sf "$url/metrics" | grep -E '^metron_dedup' || true
grep -E "WARN|ERROR" "$work/server.log" | tail -5 || true
