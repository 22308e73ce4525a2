#!/bin/bash
# Open-loop p99 at N customers (default 100,000) × 3 metered entitlements, everyone packed:
# one server, set up by `checks`, left to pack every customer (packAfter 30s), then three
# open loops at 20,000 checks/s over 16 connections, 95 s apart (each loop unpacks the
# customers it reads; the sweeper packs them again before the next). Prints the server's
# CPU per thread between the loops and at rest, and the sweeper's log lines.
# PERF=1 records the third loop with `perf sched record` (system-wide) into the work dir.
# Usage: benches/scripts/entitlements-p99-loops.sh [N] [work dir]   (release binaries in target/release)
set -uo pipefail
N=${1:-100000}
W=${2:-/tmp/metron-p99-loops}
BIN=${BIN:-target/release}
PERF=${PERF:-0}
. "$(dirname "$0")/entitlements-lib.sh"
require_binaries
rm -rf "$W" && mkdir -p "$W"
write_config
threads() { # CPU ticks (1/100 s) per thread name
  for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done |
    awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
start "$W"; echo "server pid $PID at $ADDR"
setup_customers "$W" "$N"
sleep 5; HOT_KB=$(anon "$PID"); sleep 60
threads "$PID" > "$W/t0"; sleep 30; threads "$PID" > "$W/t1"
echo "hot: ${HOT_KB} KiB; at rest: $(anon "$PID") KiB"
echo "server CPU ticks (1/100 s) per thread name over 30 s at rest:"
join "$W/t0" "$W/t1" | awk '$3-$2>0 {print "  "$1, $3-$2}'
for i in 1 2 3; do
  threads "$PID" > "$W/t0"
  if [ "$i" = 3 ] && [ "$PERF" = 1 ]; then
    perf sched record -a -o "$W/sched.data" -- sleep 11 > "$W/perf.log" 2>&1 &
    sleep 0.3
  fi
  "$BIN/checks" --url "http://$ADDR" --customers "$N" --entitlements-per-customer 3 --connections 16 \
    --rate 20000 --seconds 10 --phases open --server-pid "$PID" --reuse-run "$RUN" 2>&1 | grep -vE "customers of|^run "
  threads "$PID" > "$W/t1"
  echo "server CPU ticks per thread name in loop $i:"; join "$W/t0" "$W/t1" | awk '$3-$2>0 {print "  "$1, $3-$2}'
  [ "$i" = 3 ] || sleep 95
done
sed 's/\x1b\[[0-9;]*m//g' "$W/log" | grep "packed and passivated" | tail -8
kill -TERM "$PID"
