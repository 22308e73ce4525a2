#!/bin/bash
# Memory per customer at N customers (default 100,000) with 3 metered entitlements each:
# an A/B of two servers fed the same 2·N events. A: the N customers, their entitlements and
# their events (then checks at 20,000/s). B: 2·(N − M) events of a meter alone, then M
# customers (default 2,000) with their entitlements and events. The M customers make B's
# sweeper pack them and hand freed pages back to the OS as A's does: without them B would
# keep its ingest's garbage resident and A would not, and (A − B) would be off by
# hundreds of bytes per customer either way. (A − B) / (N − M), both settled, is what a
# customer costs.
# Usage: benches/scripts/entitlements-memory-ab.sh [N] [work dir]   (release binaries in target/release)
set -euo pipefail
N=${1:-100000}
M=${M:-2000}
W=${2:-/tmp/metron-memory-ab}
BIN=${BIN:-target/release}
. "$(dirname "$0")/entitlements-lib.sh"
require_binaries
rm -rf "$W" && mkdir -p "$W/A" "$W/B"
write_config

# B: events only.
start "$W/B"
python3 - "$ADDR" "$((N - M))" <<'PY'
import datetime, json, sys, urllib.request
addr, n = sys.argv[1], int(sys.argv[2])
def post(path, body, kind="application/json"):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(), headers={"Content-Type": kind})
    urllib.request.urlopen(req).read()
post("/api/v1/meters", {"slug": "checks_b", "eventType": "checks_b", "aggregation": "SUM", "valueProperty": "$.tokens"})
seq = 0
for _ in range(2):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    batch = []
    for c in range(n):
        seq += 1
        batch.append({"id": f"b-c-{seq}", "source": "checks", "specversion": "1.0", "type": "checks_b",
                      "subject": f"c-b-{c}", "time": now, "data": {"tokens": 1 + seq % 10}})
        if len(batch) == 1000 or c == n - 1:
            post("/api/v1/events", batch, "application/cloudevents-batch+json")
            batch = []
PY
setup_customers "$W/B" "$M" > /dev/null
sleep 90
B_KB=$(anon "$PID"); kill -TERM "$PID"; wait "$PID" || true

# A: customers, entitlements, the same number of events; settle until every customer is packed.
start "$W/A"
setup_customers "$W/A" "$N"
sleep 5
HOT_KB=$(anon "$PID")
sleep 90
A_KB=$(anon "$PID")
echo "B (events only): ${B_KB} KiB; A hot: ${HOT_KB} KiB; A at rest: ${A_KB} KiB"
echo "per customer at rest: $(( (A_KB - B_KB) * 1024 / (N - M) )) B; hot: $(( (HOT_KB - B_KB) * 1024 / (N - M) )) B"
"$BIN/checks" --url "http://$ADDR" --customers "$N" --entitlements-per-customer 3 --connections 16 \
  --rate 20000 --seconds 10 --phases open,closed --server-pid "$PID" --reuse-run "$RUN"
kill -TERM "$PID"; wait "$PID" || true
