#!/usr/bin/env bash
# Freshness: ack -> visible at a sustained ingest rate, checkpoints included, in a meter
# query (the load generator's probes: a fresh subject every 200 ms, polled until the
# query shows it) and in an entitlement balance (`checks --phases visibility`: one event
# for a customer, its value polled until `usage` grows), p50/p99/max.
#
#   benches/scripts/freshness.sh [SECONDS] [RATE]     (default 600 s at 100000 events/s)
#
# Environment:
#   BIN          directory with `metron`, `loadgen` and `checks` (default target/release)
#   CONNECTIONS  load generator connections (default 8)
#   BATCH        events per request (default 100)
#   CONFIG       extra lines for the server's config file (e.g. a `stream:` section for Kafka)
# Everything runs on the same two cores, unpinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
rate=${2:-100000}
bin=${BIN:-target/release}
connections=${CONNECTIONS:-8}
batch=${BATCH:-100}
for b in "$bin/metron" "$bin/loadgen" "$bin/checks"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p metron-api --bin metron -p metron-benches --bin loadgen --bin checks" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
printf '%s\n' "${CONFIG:-}" > "$work/config.yaml"
RUST_LOG=warn "$bin/metron" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
    --config "$work/config.yaml" --port-file "$work/addr" >>"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/addr")"
until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; done
echo "== $(date -u +%FT%TZ) $seconds s at $rate events/s offered ($connections connections x $batch)"
"$bin/loadgen" --url "$url" --seconds "$seconds" --connections "$connections" --batch "$batch" \
    --rate "$rate" --server-pid "$pid" --verify-seconds 60 > "$work/load.txt" 2>&1 &
load=$!
sleep 5
# About one balance probe every 40 ms, for the rest of the run.
probes=$(( (seconds - 15) * 25 ))
"$bin/checks" --url "$url" --customers 20 --setup-connections 1 --phases visibility --probes "$probes" \
    > "$work/checks.txt" 2>&1 || { cat "$work/checks.txt"; exit 1; }
wait "$load" || { cat "$work/load.txt"; exit 1; }
grep -E "events acknowledged|server CPU|visible|answers|verified" "$work/load.txt"
grep -E "usage visible" "$work/checks.txt"
grep -E "WARN|ERROR" "$work/server.log" | tail -5 || true
