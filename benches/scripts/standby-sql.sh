#!/usr/bin/env bash
# SQL through a standby: two servers on one Kafka or Fluvio topic, one PostgreSQL catalog and one
# object root (a local directory both read: the same machine). The load generator fills the
# holder with SECONDS of events, a checkpoint writes them as Parquet, and a few more stay only in
# the holder's memory. Then each query runs RUNS times through the holder and through the
# standby, alternating; for each, the wall time at the client and the CPU seconds each server
# spent (from /proc). Through the standby, the holder only sends the files and its live rows
# (`/internal/v1/sql/tables`) and the standby runs the query.
#
#   STREAM=kafka://127.0.0.1:9092/TOPIC DATABASE=postgres://USER:PW@HOST/DB \
#     benches/scripts/standby-sql.sh [SECONDS] [RUNS]
#
# DATABASE must be an empty database (the catalog). BIN: the release binaries (metron, loadgen).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
runs=${2:-10}
bin=${BIN:-target/release}
. benches/scripts/nodes-lib.sh
printf 'stream:\n  url: %s\n  fetchWaitMax: 20ms\ndatabase:\n  url: %s\nstorage:\n  url: file://%s/objects\ncheckpointInterval: 5s\n' \
    "$STREAM" "$DATABASE" "$work" > "$work/config.yaml"
mkdir -p "$work/objects"
holder_pid=$(start holder); wait_ready holder
"$bin/loadgen" --url "http://$(cat "$work/holder.addr")" --seconds "$seconds" --connections 4 \
    --batch 100 --server-pid "$holder_pid" --verify-seconds 60 > "$work/load.txt" || {
    cat "$work/load.txt"; tail -20 "$work/holder.log"; exit 1; }
grep -E "events/s|verified" "$work/load.txt" | head -3
sleep 12  # two checkpoints: what the load sent is in Parquet
standby_pid=$(start standby); wait_ready standby
curl -sf "http://$(cat "$work/standby.addr")/metrics" | grep -q '^metron_standby 1' \
    || { echo "the second server does not stand by" >&2; exit 1; }
echo "== $(date -u +%FT%TZ) $runs runs of each query through each server; servers, client and broker on the same cores, unpinned"
python3 - "$(cat "$work/holder.addr")" "$(cat "$work/standby.addr")" "$holder_pid" "$standby_pid" "$runs" <<'EOF'
import http.client, json, os, statistics, sys, time

holder, standby, holder_pid, standby_pid, runs = sys.argv[1:6]
runs = int(runs)
hz = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

def sql(addr, text):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", "/api/v1/sql", json.dumps({"sql": text}), {"content-type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"{addr}: {resp.status} {body[:300]!r}")
    return json.loads(body)["rows"]

def ingest(addr, n):
    host, port = addr.rsplit(":", 1)
    now = time.time()
    events = [{"specversion": "1.0", "id": f"live-{i}", "source": "bench", "type": "live",
               "subject": f"live-{i % 10}", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
               "data": {}} for i in range(n)]
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/api/v1/events", json.dumps(events), {"content-type": "application/cloudevents-batch+json"})
    resp = conn.getresponse(); resp.read()
    assert resp.status == 204, resp.status

# A few events only the holder's memory holds (the next checkpoint is 5 s away at most; the
# counts below are compared between the two paths, run after run).
ingest(holder, 1000)
time.sleep(1)
queries = {
    "count, distinct ids": "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
    "top subjects": "SELECT subject, count(*) AS n FROM events GROUP BY subject ORDER BY n DESC, subject LIMIT 10",
    "per minute": "SELECT date_trunc('minute', time) AS m, count(*) AS n FROM events GROUP BY 1 ORDER BY 1 DESC LIMIT 5",
}
print(f"{'query':<22} {'through':<8} {'answer':>10} {'p50 ms':>8} {'min ms':>8} {'holder CPU ms/q':>16} {'standby CPU ms/q':>17}")
for name, text in queries.items():
    stats = {"holder": ([], 0.0, 0.0), "standby": ([], 0.0, 0.0)}
    answers = {}
    for _ in range(runs):
        for through, addr in (("holder", holder), ("standby", standby)):
            h0, s0 = cpu(holder_pid), cpu(standby_pid)
            t0 = time.perf_counter()
            rows = sql(addr, text)
            wall = time.perf_counter() - t0
            h1, s1 = cpu(holder_pid), cpu(standby_pid)
            walls, hc, sc = stats[through]
            walls.append(wall)
            stats[through] = (walls, hc + h1 - h0, sc + s1 - s0)
            answers[through] = rows
    if answers["holder"] != answers["standby"]:
        raise SystemExit(f"{name}: the answers differ: {answers}")
    first = answers["holder"][0][-1] if answers["holder"] else 0
    for through in ("holder", "standby"):
        walls, hc, sc = stats[through]
        print(f"{name:<22} {through:<8} {first:>10} {statistics.median(walls) * 1000:>8.1f} "
              f"{min(walls) * 1000:>8.1f} {hc / runs * 1000:>16.1f} {sc / runs * 1000:>17.1f}")
EOF
grep -hE "WARN|ERROR" "$work/holder.log" "$work/standby.log" | tail -5 || true
