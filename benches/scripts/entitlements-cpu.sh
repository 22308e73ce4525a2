#!/bin/bash
# Server CPU per HTTP value check (issue 13, item 5): one server, N customers (default 300)
# × 1 metered entitlement set up by `checks`, the server's CPU at rest over 10 s, then ROUNDS
# (default 3) rounds of a closed loop and an open loop at RATE (default 20,000) checks/s over
# 16 connections, 10 s each. `checks` prints the server's CPU per check from /proc (at rest
# included; the rest rate is printed so that it can be taken out).
# PERF=1 records the last round's loops with `perf record -g` into the work dir and prints
# the top of `perf report --no-children`. ROUTE=v1 checks `/api/v1/subjects/{subject}/...`
# instead of `/api/v2/customers/{key}/...`. METRON_HTTP_WORKERS sets the server's workers.
# PIN=1 pins the server's threads to CPU 0 and the load generator to CPU 1 after the setup.
# BATCH=1 runs the load generator as SCHED_BATCH (`chrt -b 0`): its wake-ups no longer
# preempt the server's workers.
# Usage: benches/scripts/entitlements-cpu.sh [N] [work dir]   (release binaries in BIN, default target/release)
set -uo pipefail
N=${1:-300}
W=${2:-/tmp/metron-checks-cpu}
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-20000}
PERF=${PERF:-0}
ROUTE=${ROUTE:-v2}
PIN=${PIN:-0}
BATCH=${BATCH:-0}
. "$(dirname "$0")/entitlements-lib.sh"
require_binaries
rm -rf "$W" && mkdir -p "$W"
write_config
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
start "$W"; echo "server pid $PID at $ADDR"
"$BIN/checks" --url "http://$ADDR" --customers "$N" --setup-connections 8 --connections 16 \
  --seconds 2 --phases closed --server-pid "$PID" > "$W/setup.out" 2>&1
RUN=$(awk '/^run /{print $2}' "$W/setup.out")
[ -n "$RUN" ] || { cat "$W/setup.out"; kill -TERM "$PID"; exit 1; }
CLIENT=()
if [ "$PIN" = 1 ]; then taskset -a -p -c 0 "$PID" > /dev/null; CLIENT=(taskset -c 1); fi
if [ "$BATCH" = 1 ]; then CLIENT+=(chrt -b 0); fi
sleep 2; T0=$(ticks "$PID"); sleep 10; T1=$(ticks "$PID")
echo "server CPU at rest: $(( (T1 - T0) * 10 )) ms over 10 s"
loop() { # $1: phase, $2: round
  local rec=""
  if [ "$PERF" = 1 ] && [ "$2" = "$ROUNDS" ]; then
    perf record -g -o "$W/perf-$1.data" -p "$PID" -- sleep 10.5 > "$W/perf-$1.log" 2>&1 &
    rec=$!; sleep 0.2
  fi
  "${CLIENT[@]}" "$BIN/checks" --url "http://$ADDR" --customers "$N" --connections 16 --rate "$RATE" --seconds 10 \
    --phases "$1" --route "$ROUTE" --server-pid "$PID" --reuse-run "$RUN" 2>&1 | grep -vE "^run |resident memory"
  [ -z "$rec" ] || wait "$rec"
}
for i in $(seq "$ROUNDS"); do
  echo "round $i"; loop closed "$i"; sleep 2; loop open "$i"; sleep 2
done
kill -TERM "$PID"; wait "$PID" 2> /dev/null
if [ "$PERF" = 1 ]; then
  for phase in closed open; do
    echo "perf, $phase loop (self time, top 40):"
    perf report -i "$W/perf-$phase.data" --no-children --stdio --sort dso,symbol -g none 2> /dev/null |
      grep -E '^ +[0-9]' | head -40
  done
fi
