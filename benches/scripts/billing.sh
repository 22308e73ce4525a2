#!/usr/bin/env bash
# Billing: N subscriptions (default 10,000) whose billing periods end at the same instant;
# prints how many invoices per second Metron rates and issues into Stripe after that instant,
# and the time from the period end to each invoice's finalization in Stripe (the fake Stripe
# server of testing/fake-stripe, which checks every request against Stripe's OpenAPI spec and
# times it). Fails unless every customer holds exactly one finalized invoice of 160.00.
#
#   benches/scripts/billing.sh [SUBSCRIPTIONS]
#
# Environment:
#   BIN           directory with `metron`, `fake-stripe` and `billing` (default target/release)
#   SETUP_SECONDS seconds from the start to the period end (default 300): the setup (customers,
#                 Stripe customers, subscriptions, usage) must fit in it
#   CONNECTIONS   setup connections (default 8)
#   PIN_SERVER, PIN_CLIENT  taskset CPU lists for metron and for the fake + driver (default: none,
#                 everything on the same cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
subscriptions=${1:-10000}
bin=${BIN:-target/release}
for b in "$bin/metron" "$bin/fake-stripe" "$bin/billing"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p metron-api -p metron-fake-stripe -p metron-benches --bins" >&2; exit 1; }
done
pin() {  # $1: cpu list or empty
    if [ -n "$1" ]; then echo "taskset -c $1"; fi
}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

: >"$work/stripe.log"
$(pin "${PIN_CLIENT:-}") "$bin/fake-stripe" --port 0 >"$work/stripe.log" 2>&1 &
for _ in $(seq 100); do grep -q listening "$work/stripe.log" && break; sleep 0.1; done
stripe=$(awk '/listening on/ {print $4; exit}' "$work/stripe.log")
[ -n "$stripe" ] || { cat "$work/stripe.log" >&2; exit 1; }

cat > "$work/config.yaml" <<YAML
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: \$.tokens
stripe:
  apiBase: $stripe
YAML
RUST_LOG=${RUST_LOG:-warn} $(pin "${PIN_SERVER:-}") "$bin/metron" serve --listen 127.0.0.1:0 \
    --data-dir "$work/data" --config "$work/config.yaml" --port-file "$work/addr" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/addr")"
until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; done
echo "== $subscriptions subscriptions; metron $url (pid $pid, cpus ${PIN_SERVER:-all}); fake Stripe $stripe (cpus ${PIN_CLIENT:-all})"
$(pin "${PIN_CLIENT:-}") "$bin/billing" --url "$url" --stripe "$stripe" --subscriptions "$subscriptions" \
    --connections "${CONNECTIONS:-8}" --setup-seconds "${SETUP_SECONDS:-300}" --metron-pid "$pid" \
    || { echo "== metron log tail" >&2; tail -30 "$work/server.log" >&2; exit 1; }
[ -n "${DUMP_STATE:-}" ] && curl -s "$stripe/_test/state" > "$DUMP_STATE"
echo "== metron RSS at the end: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
