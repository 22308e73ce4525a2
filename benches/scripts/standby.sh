#!/usr/bin/env bash
# Ingest through a standby: two servers on one Kafka or Fluvio topic and one PostgreSQL
# catalog. One holds the topic's partitions; the other stands by. The load generator sends its
# events to TARGET and probes ack -> visible through it: through the standby, an event is
# appended to the topic by the standby and a meter query is forwarded to the holder. Output as
# benches/scripts/ingest.sh's, plus each server's CPU seconds in the run.
#
#   STREAM=kafka://127.0.0.1:9094/TOPIC DATABASE=postgres://USER:PW@HOST/DB \
#     benches/scripts/standby.sh [SECONDS] [TARGET]
#
# TARGET: `standby` (default) or `holder`. DATABASE must be an empty database (the catalog).
# Environment as ingest.sh: BIN, CONNECTIONS, BATCH; CONFIG adds lines to the config file.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
target=${2:-standby}
bin=${BIN:-target/release}
connections=${CONNECTIONS:-4}
batch=${BATCH:-100}
. benches/scripts/nodes-lib.sh
printf 'stream:\n  url: %s\n  fetchWaitMax: 20ms\ndatabase:\n  url: %s\n%s\n' \
    "$STREAM" "$DATABASE" "${CONFIG:-}" > "$work/config.yaml"
holder_pid=$(start holder); wait_ready holder
standby_pid=$(start standby); wait_ready standby
curl -sf "http://$(cat "$work/standby.addr")/metrics" | grep -q '^metron_standby 1' \
    || { echo "the second server does not stand by" >&2; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
h0=$(cpu "$holder_pid"); s0=$(cpu "$standby_pid")
url="http://$(cat "$work/$target.addr")"
echo "== $(date -u +%FT%TZ) $seconds s through the $target, $connections connections x $batch events, all on the same cores, unpinned"
"$bin/loadgen" --url "$url" --seconds "$seconds" --connections "$connections" --batch "$batch" \
    --server-pid "$holder_pid" --verify-seconds 60 > "$work/out.txt" || {
    cat "$work/out.txt"; tail -20 "$work/holder.log" "$work/standby.log"; exit 1; }
cat "$work/out.txt"
h1=$(cpu "$holder_pid"); s1=$(cpu "$standby_pid")
echo "-- CPU seconds in the run: holder $(( (h1 - h0) / hz )), standby $(( (s1 - s0) / hz ))"
grep -hE "WARN|ERROR" "$work/holder.log" "$work/standby.log" | tail -5 || true
