#!/usr/bin/env bash
# A runnable end-to-end example: starts Metron with deploy/metron.yaml on a free port in a
# temporary data directory, sends events, queries them by day in a time zone, runs SQL,
# and stops the server. Usage: examples/quickstart.sh [path/to/metron]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/metron}"
[ -x "$bin" ] || cargo build --bin metron
data="$(mktemp -d)"
"$bin" serve --listen 127.0.0.1:0 --data-dir "$data/data" --config deploy/metron.yaml --port-file "$data/addr" \
    > "$data/metron.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do [ -s "$data/addr" ] && break; sleep 0.1; done
url="http://$(cat "$data/addr")"
echo "Metron at $url"

curl -sf -X POST "$url/api/v1/events" -H 'content-type: application/cloudevents-batch+json' -d '[
  {"id": "q1", "source": "quickstart", "type": "prompt", "subject": "customer-1", "time": "2025-03-09T06:30:00Z", "data": {"tokens": 120, "model": "gpt-4o", "type": "input"}},
  {"id": "q2", "source": "quickstart", "type": "prompt", "subject": "customer-1", "time": "2025-03-09T18:00:00Z", "data": {"tokens": 30, "model": "gpt-4o", "type": "output"}},
  {"id": "q3", "source": "quickstart", "type": "prompt", "subject": "customer-2", "time": "2025-03-10T09:00:00Z", "data": {"tokens": 7, "model": "o1", "type": "input"}}]'

echo "tokens by day in America/Los_Angeles, per model:"
for _ in $(seq 1 50); do
    answer="$(curl -sf "$url/api/v1/meters/tokens_total/query?windowSize=DAY&windowTimeZone=America/Los_Angeles&groupBy=model")"
    case "$answer" in *'"value"'*) break ;; esac
    sleep 0.1
done
echo "$answer"
echo "events per subject (SQL):"
curl -sf -X POST "$url/api/v1/sql" -H 'content-type: application/json' \
    -d '{"sql": "SELECT subject, count(*) AS events FROM events GROUP BY subject ORDER BY subject"}'
echo

echo "a usage limit: customer-1 gets 1000 tokens a month"
curl -sf -X POST "$url/api/v1/customers" -H 'content-type: application/json' \
    -d '{"name": "ACME", "key": "customer-1", "usageAttribution": {"subjectKeys": ["customer-1"]}}' > /dev/null
curl -sf -X POST "$url/api/v1/features" -H 'content-type: application/json' \
    -d '{"key": "ai_tokens", "name": "AI tokens", "meterSlug": "tokens_total"}' > /dev/null
curl -sf -X POST "$url/api/v2/customers/customer-1/entitlements" -H 'content-type: application/json' \
    -d '{"type": "metered", "featureKey": "ai_tokens", "usagePeriod": {"interval": "MONTH"}, "issue": {"amount": 1000}}' > /dev/null
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
curl -sf -X POST "$url/api/v1/events" -H 'content-type: application/cloudevents+json' \
    -d "{\"id\": \"q4\", \"source\": \"quickstart\", \"type\": \"prompt\", \"subject\": \"customer-1\", \"time\": \"$now\", \"data\": {\"tokens\": 250, \"model\": \"gpt-4o\", \"type\": \"input\"}}"
for _ in $(seq 1 50); do
    value="$(curl -sf "$url/api/v2/customers/customer-1/entitlements/ai_tokens/value")"
    case "$value" in *'"usage":250'*) break ;; esac
    sleep 0.1
done
echo "$value"
