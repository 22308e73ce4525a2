#!/usr/bin/env bash
# SQL bench (issue 13, item 7): ten analytic queries over `events` (counts, group-bys by
# subject/type/day, top-N, percentiles, a join with a meter's rollups) through Metron's
# POST /api/v1/sql against DuckDB over the same Parquet files, in the same run.
#
#   benches/scripts/sql.sh N [WORK]     # N events (default 1,000,000)
#
# The data is loaded as in queries.sh (same WORK layout; KEEP=1 reuses a load of N).
# Env: BIN, METRON as in queries.sh; RUNS (timed runs of each query on each side, default 10).
# CPU per query: the server's from /proc; DuckDB's is the Python process's (DuckDB runs in it).
set -euo pipefail
N=${1:-1000000}
WORK=${2:-/tmp/metron-queries}
BIN=${BIN:-/tmp/d/bin}
METRON=${METRON:-$BIN/metron}
RUNS=${RUNS:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
LOAD_ONLY=1 BIN=$BIN METRON=$METRON "$HERE/queries.sh" "$N" "$WORK"
WORK=$(cd "$WORK" && pwd)
DATA=$WORK/data
PY=$WORK/venv/bin/python

rm -f "$WORK/addr"
"$METRON" serve --listen 127.0.0.1:0 --data-dir "$DATA" --port-file "$WORK/addr" \
  >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$WORK/addr" ] && break; sleep 0.1; done
ADDR=$(cat "$WORK/addr")
for _ in $(seq 600); do curl -sf "http://$ADDR/api/v1/meters" >/dev/null && break; sleep 0.1; done

"$PY" - "$ADDR" "$SERVER_PID" "$DATA/objects" "$RUNS" <<'EOF'
import http.client, json, sys, time
import duckdb

addr, pid, objects, runs = sys.argv[1:5]
runs = int(runs)
host, port = addr.rsplit(":", 1)
db = duckdb.connect()
db.execute("SET TimeZone = 'UTC'")
db.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{objects}/events/**/*.parquet', hive_partitioning = false)")
# The minute rollups, as meter_<slug> in Metron: not the hourly tier under <meter>/hourly/.
db.execute(f"CREATE VIEW meter_bench_tokens AS SELECT minute, subject FROM read_parquet('{objects}/rollups/*/*/*.parquet', hive_partitioning = false)")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]

# (name, Metron's SQL (DataFusion), DuckDB's SQL); None: the same text.
Q = [
 ("count", "SELECT count(*) AS n FROM events", None),
 ("count distinct subject", "SELECT count(DISTINCT subject) AS n FROM events", None),
 ("group by type", "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type", None),
 ("group by day", "SELECT date_trunc('day', time) AS day, count(*) AS n FROM events GROUP BY 1 ORDER BY 1", None),
 ("group by subject", "SELECT subject, count(*) AS n FROM events GROUP BY subject ORDER BY subject LIMIT 5", None),
 ("top-10 subjects", "SELECT subject, count(*) AS n FROM events GROUP BY subject ORDER BY n DESC, subject LIMIT 10", None),
 ("top-10 subject-days", "SELECT subject, date_trunc('day', time) AS day, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 10", None),
 ("time range count", "SELECT count(*) AS n FROM events WHERE time >= '2026-11-10T00:00:00Z' AND time < '2026-11-12T00:00:00Z'",
  "SELECT count(*) AS n FROM events WHERE time >= TIMESTAMPTZ '2026-11-10 00:00:00+00' AND time < TIMESTAMPTZ '2026-11-12 00:00:00+00'"),
 ("percentiles of events per subject", "SELECT median(n) AS p50, approx_percentile_cont(n, 0.99) AS p99 FROM (SELECT subject, count(*) AS n FROM events GROUP BY subject)",
  "SELECT median(n) AS p50, approx_quantile(n, 0.99) AS p99 FROM (SELECT subject, count(*) AS n FROM events GROUP BY subject)"),
 ("join with rollups", "SELECT e.day, e.n, r.minutes FROM (SELECT date_trunc('day', time) AS day, count(*) AS n FROM events WHERE subject = 'customer-00042' GROUP BY 1) e JOIN (SELECT date_trunc('day', minute) AS day, count(DISTINCT minute) AS minutes FROM meter_bench_tokens WHERE subject = 'customer-00042' GROUP BY 1) r ON e.day = r.day ORDER BY e.day", None),
]

def metron(sql):
    # A connection per query: the server closes one left idle while DuckDB runs.
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("POST", "/api/v1/sql", json.dumps({"sql": sql, "limit": 10000, "timeoutMs": 600000}),
                 {"content-type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{sql}: {r.status} {body[:400]!r}")
    return json.loads(body)["rows"]

def ints(rows):
    out = []
    for row in rows:
        vals = row.values() if isinstance(row, dict) else row
        out.append([v for v in vals if isinstance(v, int) and not isinstance(v, bool)])
    return out

print(f"| query | metron p50 / p99 ms | duckdb p50 / p99 ms | metron / duckdb (p50) | CPU-s per query: metron / duckdb = ratio |")
print("|---|---|---|---|---|")
for name, ours, theirs in Q:
    theirs = theirs or ours
    a = metron(ours); b = db.execute(theirs).fetchall()
    if name != "percentiles of events per subject" and ints(a) != ints(b):
        print(f"  ! {name}: answers differ: {ints(a)[:3]} vs {ints(b)[:3]}")
    m, d = [], []
    c0 = cpu(pid)
    for _ in range(runs):
        t = time.perf_counter(); metron(ours); m.append((time.perf_counter() - t) * 1000)
    c1 = cpu(pid)
    p0 = time.process_time()
    for _ in range(runs):
        t = time.perf_counter(); db.execute(theirs).fetchall(); d.append((time.perf_counter() - t) * 1000)
    p1 = time.process_time()
    mc, dc = (c1 - c0) / runs, (p1 - p0) / runs
    print(f"| {name} | {pct(m,.5):.1f} / {pct(m,.99):.1f} | {pct(d,.5):.1f} / {pct(d,.99):.1f} | "
          f"{pct(m,.5)/pct(d,.5):.2f} | {mc:.3f} / {dc:.3f} = {mc/max(dc,1e-9):.2f} |", flush=True)
EOF
