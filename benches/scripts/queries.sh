#!/usr/bin/env bash
# Meter query bench (issue 13, item 7): one customer's month by day over N stored events,
# Metron's meter query (GET /api/v1/meters/{slug}/query) against DuckDB running the
# equivalent query over the same raw-event Parquet files, in the same run.
#
#   benches/scripts/queries.sh N [WORK]        # N events (default 1,000,000), WORK dir
#
# Env: BIN (dir with release `metron` and `queryload`, default /tmp/d/bin), RUNS (timed
# Metron queries, default 300), DUCK_RUNS (timed DuckDB queries, default 30), SUBJECTS
# (default 1000), MODELS (default 2), METRON (a metron binary, default $BIN/metron),
# LOAD_ONLY=1 (load and leave the server stopped), KEEP=1 (reuse WORK's data if it holds N),
# S3_ENDPOINT (an S3-compatible server, e.g. http://127.0.0.1:5555 for the moto that
# ./scripts/test starts: the loaded objects are copied to s3://metron-bench/<prefix> with
# boto3 and the server reads them there, `storage.url: s3://...`, while the local copy is
# moved aside; DuckDB still reads the local copy).
#
# Loading: a fresh server creates the meter (SUM of $.tokens by $.model), is stopped, and
# `queryload` writes N events of November 2026 (time order, checkpoints of 400k events,
# Metron's own compaction after each) as Metron's checkpointed state; the server is then
# restarted on that state. DuckDB comes from PyPI into a venv under WORK.
set -euo pipefail
N=${1:-1000000}
WORK=${2:-/tmp/metron-queries}
BIN=${BIN:-/tmp/d/bin}
METRON=${METRON:-$BIN/metron}
RUNS=${RUNS:-300}
DUCK_RUNS=${DUCK_RUNS:-30}
SUBJECTS=${SUBJECTS:-1000}
MODELS=${MODELS:-2}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
DATA=$WORK/data

if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet duckdb
fi
PY=$WORK/venv/bin/python

SERVER_PID=
CONFIG_ARGS=()
start_server() {
  rm -f "$WORK/addr"
  "$METRON" serve --listen 127.0.0.1:0 --data-dir "$DATA" --port-file "$WORK/addr" \
    "${CONFIG_ARGS[@]}" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 600); do [ -s "$WORK/addr" ] && break; sleep 0.1; done
  [ -s "$WORK/addr" ] || { echo "server did not start" >&2; exit 1; }
  ADDR=$(cat "$WORK/addr")
  for _ in $(seq 600); do
    curl -sf "http://$ADDR/api/v1/meters" >/dev/null && break; sleep 0.1
  done
}
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
OBJECTS=$DATA/objects
finish() {
  stop_server
  # Put the local copy back where a later KEEP=1 run looks for it.
  if [ -d "$DATA/objects.local" ] && [ ! -e "$DATA/objects" ]; then mv "$DATA/objects.local" "$DATA/objects"; fi
}
trap finish EXIT

if [ "${KEEP:-0}" = 1 ] && [ "$(cat "$WORK/loaded" 2>/dev/null)" = "$N $SUBJECTS $MODELS" ]; then
  echo "reusing $DATA ($N events)"
else
  rm -rf "$DATA" "$WORK/loaded" "$WORK/probe.json"
  start_server
  curl -sf -X POST "http://$ADDR/api/v1/meters" -H 'content-type: application/json' -d '{
    "slug": "bench_tokens", "eventType": "request", "aggregation": "SUM",
    "valueProperty": "$.tokens", "groupBy": {"model": "$.model"}}' >"$WORK/meter.json"
  # The loader starts from a manifest: wait for the checkpoint that records the meter.
  for _ in $(seq 300); do
    ls "$DATA"/objects/checkpoints/manifest-*.json >/dev/null 2>&1 && break; sleep 0.1
  done
  stop_server
  t0=$(date +%s.%N)
  "$BIN/queryload" --data-dir "$DATA" --meter-json "$WORK/meter.json" --events "$N" \
    --subjects "$SUBJECTS" --models "$MODELS" >"$WORK/probe.json" 2>"$WORK/load.log"
  t1=$(date +%s.%N)
  tail -1 "$WORK/load.log"
  echo "load: $(echo "$t1 - $t0" | bc) s for $N events; data $(du -sh "$DATA/objects" | cut -f1)"
  echo "$N $SUBJECTS $MODELS" >"$WORK/loaded"
fi
[ "${LOAD_ONLY:-0}" = 1 ] && exit 0

echo "files: $(find "$DATA/objects/events" -name '*.parquet' | wc -l) event files, $(find "$DATA/objects/rollups" -name '*.parquet' | wc -l) rollup files"
if [ -n "${S3_ENDPOINT:-}" ]; then
  "$PY" -c 'import boto3' 2>/dev/null || "$WORK/venv/bin/pip" install --quiet boto3
  prefix="q-$N-$(date +%s)"
  t0=$(date +%s.%N)
  "$PY" - "$S3_ENDPOINT" "$DATA/objects" "$prefix" <<'PY'
import os, sys, boto3
endpoint, root, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
try:
    s3.create_bucket(Bucket="metron-bench")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
n = 0
for dirpath, _, files in os.walk(root):
    for f in files:
        path = os.path.join(dirpath, f)
        s3.upload_file(path, "metron-bench", f"{prefix}/{os.path.relpath(path, root)}")
        n += 1
print(f"copied {n} objects to s3://metron-bench/{prefix}")
PY
  t1=$(date +%s.%N)
  echo "copy to S3: $(echo "$t1 - $t0" | bc) s"
  cat >"$WORK/s3.yaml" <<YAML
storage:
  url: s3://metron-bench/$prefix
  endpoint: $S3_ENDPOINT
  region: us-east-1
  accessKeyId: test
  secretAccessKey: test
  allowHttp: true
YAML
  CONFIG_ARGS=(--config "$WORK/s3.yaml")
  mv "$DATA/objects" "$DATA/objects.local"
  OBJECTS=$DATA/objects.local
  echo "the server reads s3://metron-bench/$prefix at $S3_ENDPOINT; DuckDB reads $OBJECTS"
fi
start_server
"$PY" - "$ADDR" "$SERVER_PID" "$OBJECTS" "$WORK/probe.json" "$RUNS" "$DUCK_RUNS" <<'EOF'
import http.client, json, sys, time, decimal
import duckdb

addr, pid, objects, probe_file, runs, duck_runs = sys.argv[1:7]
runs, duck_runs = int(runs), int(duck_runs)
probe = json.load(open(probe_file))
subject = probe["subject"]
host, port = addr.rsplit(":", 1)

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]

conn = http.client.HTTPConnection(host, int(port))
path = (f"/api/v1/meters/bench_tokens/query?subject={subject}"
        "&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&windowSize=DAY&windowTimeZone=UTC")
def metron():
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"meter query answered {r.status}: {body[:300]!r}")
    return json.loads(body, parse_float=decimal.Decimal)

first = metron()
got = sum(decimal.Decimal(str(row["value"])) for row in first["data"])
days = len(first["data"])
if got != probe["total"]:
    raise SystemExit(f"Metron's total {got} is not the loaded {probe['total']}")
for _ in range(10):
    metron()
lat = []
c0 = cpu(pid)
for _ in range(runs):
    t = time.perf_counter(); metron(); lat.append((time.perf_counter() - t) * 1000)
c1 = cpu(pid)

db = duckdb.connect()
db.execute("SET TimeZone = 'UTC'")
sql = f"""
SELECT date_trunc('day', time) AS day,
       sum(CAST(json_extract(data, '$.tokens') AS BIGINT)) AS value
FROM read_parquet('{objects}/events/**/*.parquet', hive_partitioning = false)
WHERE subject = '{subject}' AND type = 'request'
  AND time >= TIMESTAMPTZ '2026-11-01 00:00:00+00' AND time < TIMESTAMPTZ '2026-12-01 00:00:00+00'
GROUP BY 1 ORDER BY 1"""
rows = db.execute(sql).fetchall()
if sum(r[1] for r in rows) != probe["total"] or len(rows) != days:
    raise SystemExit(f"DuckDB's answer {sum(r[1] for r in rows)} over {len(rows)} days differs")
duck = []
p0 = time.process_time()
for _ in range(duck_runs):
    t = time.perf_counter(); db.execute(sql).fetchall(); duck.append((time.perf_counter() - t) * 1000)
p1 = time.process_time()

print(f"answer: {days} days, total {got} (both sides, equal to the loaded events')")
print(f"metron meter query: p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, max {max(lat):.2f} ms"
      f" ({runs} runs); server CPU {1000 * (c1 - c0) / runs:.2f} ms per query")
print(f"duckdb raw events:  p50 {pct(duck, .5):.2f} ms, p99 {pct(duck, .99):.2f} ms ({duck_runs} runs);"
      f" CPU {1000 * (p1 - p0) / duck_runs:.2f} ms per query")
print(f"ratio duckdb/metron: p50 {pct(duck, .5) / pct(lat, .5):.1f}x, p99 {pct(duck, .99) / pct(lat, .99):.1f}x,"
      f" CPU {(p1 - p0) / duck_runs / max((c1 - c0) / runs, 1e-9):.1f}x")
EOF
