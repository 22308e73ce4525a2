#!/usr/bin/env bash
# Usage-based billing into Stripe, end to end: a plan with a monthly flat fee (in advance) and a
# graduated usage price, a customer linked to a Stripe customer, a subscription, usage events,
# the billing period closed, and both invoices as Metron shows them and as they land in Stripe,
# with the totals checked against the hand-worked amounts (exit 1 on a mismatch).
#
# Against the fake Stripe server (testing/fake-stripe), the default:
#   examples/stripe-invoicing/run.sh
# Against real Stripe in test mode (live keys are refused; no webhooks needed):
#   STRIPE_API_KEY=sk_test_... examples/stripe-invoicing/run.sh
# METRON_BIN and FAKE_STRIPE_BIN name the binaries (default: the debug builds, built if absent);
# METRON_PUBLIC_URL is the URL Stripe's webhooks are registered at (real Stripe only);
# STRIPE_API_BASE replaces https://api.stripe.com (a proxy or a Stripe mock).
set -euo pipefail
# Binaries named relative to where the script was started from.
metron="$(realpath -m "${METRON_BIN:-$(dirname "$0")/../../target/debug/metron}")"
fake="$(realpath -m "${FAKE_STRIPE_BIN:-$(dirname "$0")/../../target/debug/fake-stripe}")"
cd "$(dirname "$0")/../.."
# 32 days: past the end of the first monthly period and its one-hour collection window.
a_month_later=2764800
# Hand-worked totals in cents. First invoice: the platform fee for the month, in advance: 30.00.
# Second: 1,500 tokens by graduated tiers, 1,000 × 0.10 = 100.00, then 500 × 0.05 = 25.00 plus
# the second tier's flat 5.00, so 130.00 of usage; and next month's fee 30.00: 160.00.
first_expected=3000
second_expected=16000

work="$(mktemp -d)"
metron_pid=""
fake_pid=""
app_id=""
finish() {
    local status=$?
    if [ -n "$app_id" ] && [ -n "${STRIPE_API_KEY:-}" ]; then
        # The webhook endpoint the install registered in the Stripe account. (Metron's uninstall
        # would delete it too, but refuses while the billing profile uses the app.)
        for endpoint in $(stripe GET "/v1/webhook_endpoints?limit=100" | json webhooks "$app_id"); do
            stripe DELETE "/v1/webhook_endpoints/$endpoint" > /dev/null &&
                echo "deleted the webhook endpoint $endpoint from the Stripe account"
        done || true
    fi
    for pid in $metron_pid $fake_pid; do
        kill "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
    done
    if [ "$status" -ne 0 ] && [ -s "$work/metron.log" ]; then
        echo "FAILED (exit $status); the last lines of metron's log:" >&2
        tail -n 20 "$work/metron.log" >&2
    fi
    rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT TERM

die() {
    echo "error: $*" >&2
    exit 1
}

# The JSON work, in python3: `show_json.py COMMAND ARG` reads JSON on stdin.
#   field PATH      the value at a dotted path (`items.0.id`), empty when absent
#   metron ID       invoice ID of a Metron invoice list, with its lines (detailed lines indented)
#   cents ID        invoice ID's total in cents (Metron: a decimal in the currency's units)
#   stripe-id ID    the Stripe invoice of Metron invoice ID
#   stripe -        a Stripe invoice (`GET /v1/invoices/{id}`) and its lines, in cents
#   state ID        Stripe invoice ID and its items in the fake's `/_test/state`, in cents
#   state-total ID  its total in cents
#   webhooks APP    the ids of the webhook endpoints in a Stripe list registered for app APP
#   default-profile -   the id of the default billing profile in a profile list
#   without-tax -   a billing profile as its update body, with automatic tax off
cat > "$work/show_json.py" << 'PY'
import decimal, json, sys

command, arg = sys.argv[1], sys.argv[2]
doc = json.load(sys.stdin)

def metron_invoice():
    return next(i for i in doc["items"] if i["id"] == arg)

def show_line(line, currency, depth):
    quantity = line.get("quantity")
    quantity = "" if quantity is None else f" x {quantity}"
    print(f"{'  ' * depth}{line['name']}{quantity}: {line['totals']['total']} {currency}")
    for child in line.get("children") or []:
        show_line(child, currency, depth + 1)

if command == "field":
    value = doc
    for key in arg.split("."):
        if isinstance(value, list):
            value = value[int(key)] if int(key) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(key)
        if value is None:
            break
    print("" if value is None else value)
elif command == "metron":
    invoice = metron_invoice()
    print(f"  Metron invoice {invoice['number']} ({invoice['status']}):")
    for line in invoice.get("lines") or []:
        period = line.get("period") or {}
        print(f"    for {period.get('from')} .. {period.get('to')}:")
        show_line(line, invoice["currency"], 3)
    print(f"    total {invoice['totals']['total']} {invoice['currency']}")
elif command == "cents":
    cents = decimal.Decimal(metron_invoice()["totals"]["total"]) * 100
    print(int(cents) if cents == cents.to_integral_value() else cents)
elif command == "stripe-id":
    print(metron_invoice()["externalIds"]["invoicing"])
elif command == "stripe":
    tax = "on" if doc["automatic_tax"]["enabled"] else "off"
    print(f"  Stripe invoice {doc['id']} {doc['number']} ({doc['status']}, automatic tax {tax}), in cents:")
    for line in doc["lines"]["data"]:
        print(f"    {line['description']}: {line['amount']}")
    print(f"    total {doc['total']} {doc['currency']}")
elif command == "state":
    invoice = next(i for i in doc["invoices"] if i["id"] == arg)
    tax = "on" if invoice["automatic_tax"] else "off"
    print(f"  Stripe invoice {invoice['id']} {invoice['number']} ({invoice['status']}, automatic tax {tax}), in cents:")
    for item in doc["invoice_items"]:
        if item["invoice"] == arg:
            print(f"    {item['description']}: {item['amount']}")
    print(f"    total {invoice['total']} {invoice['currency']}")
elif command == "webhooks":
    for endpoint in doc["data"]:
        if (endpoint.get("metadata") or {}).get("om_app_id") == arg:
            print(endpoint["id"])
elif command == "default-profile":
    print(next(p["id"] for p in doc["items"] if p["default"]))
elif command == "without-tax":
    doc["workflow"]["tax"]["enabled"] = False
    keys = ["name", "description", "metadata", "supplier", "default", "workflow"]
    print(json.dumps({k: doc[k] for k in keys if k in doc}))
elif command == "state-total":
    print(next(i["total"] for i in doc["invoices"] if i["id"] == arg))
else:
    sys.exit(f"unknown command {command}")
PY
json() {
    python3 "$work/show_json.py" "$@"
}
field() {
    json field "$1"
}

# A request to Metron: method, path, optional JSON body; fails on a non-2xx with the body shown.
api() {
    local method="$1" path="$2"
    shift 2
    curl -sS --fail-with-body -X "$method" "$url$path" -H 'content-type: application/json' "$@"
}

# A request to Stripe's API with the key (form-encoded, as Stripe takes it). The key is read
# from a file in the private work directory, so that it never shows in the process list.
stripe() {
    local method="$1" path="$2"
    shift 2
    curl -sS --fail-with-body -K "$work/stripe.curlrc" -X "$method" "$stripe_base$path" "$@"
}

# ---- Stripe: the fake server, or real Stripe in test mode ----
if [ -n "${STRIPE_API_KEY:-}" ]; then
    case "$STRIPE_API_KEY" in
        sk_test_*) ;;
        *) die "STRIPE_API_KEY must be a test-mode secret key (sk_test_...); live keys are refused" ;;
    esac
    stripe_key="$STRIPE_API_KEY"
    stripe_base="${STRIPE_API_BASE:-https://api.stripe.com}"
    # Stripe refuses webhook endpoints on localhost, so the install registers this URL. Nothing
    # below needs a webhook: Metron reads what it needs from Stripe's answers.
    public_url="${METRON_PUBLIC_URL:-https://metron.example.com}"
    (umask 077 && printf 'user = "%s:"\n' "$stripe_key" > "$work/stripe.curlrc")
    echo "Stripe: $stripe_base in test mode; webhooks registered at $public_url"
else
    [ -x "$fake" ] || cargo build -p metron-fake-stripe --bin fake-stripe
    stripe_key="sk_test_example"
    "$fake" --port 0 --api-key "$stripe_key" > "$work/fake-stripe.log" 2>&1 &
    fake_pid=$!
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$work/fake-stripe.log" 2> /dev/null && break
        sleep 0.1
    done
    stripe_base="$(sed -n 's/^fake-stripe listening on \([^ ]*\) .*/\1/p' "$work/fake-stripe.log")"
    [ -n "$stripe_base" ] || die "the fake Stripe did not start: $(cat "$work/fake-stripe.log")"
    public_url=""
    echo "Stripe: the fake server at $stripe_base"
fi

# ---- Metron ----
[ -x "$metron" ] || cargo build -p metron-api --bin metron
cat > "$work/metron.yaml" << EOF
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: \$.tokens
stripe:
  apiBase: $stripe_base
server:
  publicUrl: "$public_url"
EOF

# Starts metron with the billing clock moved forward by $1 seconds, and waits until it is ready.
start_metron() {
    rm -f "$work/addr"
    NO_COLOR=1 METRON_BILLING_CLOCK_OFFSET_SECONDS="$1" "$metron" serve --listen 127.0.0.1:0 \
        --data-dir "$work/data" --config "$work/metron.yaml" --port-file "$work/addr" \
        >> "$work/metron.log" 2>&1 &
    metron_pid=$!
    for _ in $(seq 1 600); do
        if [ -s "$work/addr" ]; then
            url="http://$(cat "$work/addr")"
            curl -sf "$url/readyz" > /dev/null 2>&1 && return 0
        fi
        kill -0 "$metron_pid" 2> /dev/null || die "metron exited at start"
        sleep 0.1
    done
    die "metron was not ready within 60 s"
}

# SIGTERM: metron drains HTTP and writes a final checkpoint.
stop_metron() {
    kill "$metron_pid"
    wait "$metron_pid" || true
    metron_pid=""
}

start_metron 0
echo "Metron at $url"

# ---- The plan: a monthly flat fee in advance, and tokens by graduated tiers ----
api POST /api/v1/features -d '{"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}' > /dev/null
plan_id="$(api POST /api/v1/plans -d '{
  "key": "pro", "name": "Pro", "currency": "USD", "billingCadence": "P1M",
  "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
    {"type": "flat_fee", "key": "platform", "name": "Platform fee", "billingCadence": "P1M",
     "price": {"type": "flat", "amount": "30", "paymentTerm": "in_advance"}},
    {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens", "billingCadence": "P1M",
     "price": {"type": "tiered", "mode": "graduated", "tiers": [
       {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.10"}},
       {"unitPrice": {"type": "unit", "amount": "0.05"}, "flatPrice": {"type": "flat", "amount": "5"}}]}}]}]}' |
    field id)"
api POST "/api/v1/plans/$plan_id/publish" > /dev/null
echo "plan pro published: 30.00 USD a month in advance; tokens 0.10 up to 1,000, then 0.05 + 5.00 flat"

api POST /api/v1/customers -d '{"name": "ACME", "key": "acme", "primaryEmail": "ops@acme.test",
  "usageAttribution": {"subjectKeys": ["acme"]}}' > /dev/null

# ---- The Stripe app: installed with the API key, it becomes the default billing profile's ----
(umask 077 && printf '{"apiKey": "%s", "name": "Stripe"}' "$stripe_key" > "$work/install.json")
app_id="$(api POST /api/v1/marketplace/listings/stripe/install/apikey -d @"$work/install.json" | field app.id)"
echo "Stripe app installed: $app_id"
# Stripe answers "Stripe Tax has not been activated on your account" to an invoice with automatic
# tax unless Stripe Tax is set up, so the profile the install created bills without it.
profile_id="$(api GET /api/v1/billing/profiles | json default-profile -)"
api GET "/api/v1/billing/profiles/$profile_id" | json without-tax - > "$work/profile.json"
api PUT "/api/v1/billing/profiles/$profile_id" -d @"$work/profile.json" > /dev/null
echo "default billing profile $profile_id: invoices through Stripe, automatic tax off"

# ---- A Stripe customer with a card, linked to the Metron customer ----
if [ -n "${STRIPE_API_KEY:-}" ]; then
    stripe_customer="$(stripe POST /v1/customers -d name=ACME -d email=ops@acme.test \
        -d 'address[country]=US' -d 'address[postal_code]=94103' -d 'address[state]=CA' \
        -d 'address[city]=San Francisco' -d 'address[line1]=1 Main Street' | field id)"
    payment_method="$(stripe POST /v1/payment_methods/pm_card_visa/attach -d "customer=$stripe_customer" | field id)"
    stripe POST "/v1/customers/$stripe_customer" \
        -d "invoice_settings[default_payment_method]=$payment_method" > /dev/null
else
    stripe_customer="$(curl -sS --fail-with-body "$stripe_base/_test/customers" \
        -H 'content-type: application/json' -d '{"name": "ACME", "email": "ops@acme.test"}' | field id)"
    payment_method="$(curl -sS --fail-with-body -X POST \
        "$stripe_base/_test/customers/$stripe_customer/payment_methods" | field id)"
fi
api PUT /api/v1/customers/acme/stripe -d "{\"stripeCustomerId\": \"$stripe_customer\",
  \"stripeDefaultPaymentMethodId\": \"$payment_method\"}" > /dev/null
echo "customer acme linked to Stripe customer $stripe_customer (card $payment_method)"

api POST /api/v1/subscriptions -d '{"customerKey": "acme", "plan": {"key": "pro"}}' > /dev/null
echo "acme subscribed to pro"

# The invoices Metron has issued (in Stripe: finalized), oldest first, with their lines.
invoices() {
    api GET "/api/v1/billing/invoices?expand=lines&statuses=issued&statuses=payment_processing&statuses=paid&orderBy=createdAt&order=ASC"
}

# Waits until Metron has issued $1 invoices, and prints the id of the $1-th.
wait_invoice() {
    for _ in $(seq 1 600); do
        id="$(invoices | field "items.$(($1 - 1)).id")"
        [ -n "$id" ] && { echo "$id"; return 0; }
        sleep 0.1
    done
    die "metron issued no invoice $1 within 60 s"
}

# Prints Metron invoice $1 and then the Stripe invoice it landed as: real Stripe through its API,
# the fake through its control API state.
show() {
    local stripe_id
    invoices | json metron "$1"
    stripe_id="$(invoices | json stripe-id "$1")"
    if [ -n "${STRIPE_API_KEY:-}" ]; then
        stripe GET "/v1/invoices/$stripe_id" | json stripe -
    else
        curl -sS --fail-with-body "$stripe_base/_test/state" | json state "$stripe_id"
    fi
}

# Checks Metron invoice $1's total and its Stripe invoice's against $2 cents.
check_totals() {
    local metron_cents stripe_id stripe_cents
    metron_cents="$(invoices | json cents "$1")"
    stripe_id="$(invoices | json stripe-id "$1")"
    if [ -n "${STRIPE_API_KEY:-}" ]; then
        stripe_cents="$(stripe GET "/v1/invoices/$stripe_id" | field total)"
    else
        stripe_cents="$(curl -sS --fail-with-body "$stripe_base/_test/state" | json state-total "$stripe_id")"
    fi
    if [ "$metron_cents" != "$2" ] || [ "$stripe_cents" != "$2" ]; then
        die "expected $2 cents; Metron has $metron_cents, Stripe $stripe_cents"
    fi
    echo "  check: $2 cents in Metron and in Stripe, as worked out by hand"
}

# ---- The first invoice: the fee of the first month, in advance ----
first="$(wait_invoice 1)"
echo
echo "first invoice (the fee in advance), cut at once:"
show "$first"
check_totals "$first" "$first_expected"

# ---- Usage during the month ----
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
api POST /api/v1/events -H 'content-type: application/cloudevents-batch+json' -d "[
  {\"specversion\": \"1.0\", \"id\": \"u1\", \"source\": \"example\", \"type\": \"tokens\", \"subject\": \"acme\", \"time\": \"$now\", \"data\": {\"tokens\": 600}},
  {\"specversion\": \"1.0\", \"id\": \"u2\", \"source\": \"example\", \"type\": \"tokens\", \"subject\": \"acme\", \"time\": \"$now\", \"data\": {\"tokens\": 900}}]"
for _ in $(seq 1 300); do
    tokens="$(api GET '/api/v1/meters/tokens/query?subject=acme' | field data.0.value)"
    [ "$tokens" = "1500" ] && break
    sleep 0.1
done
[ "$tokens" = "1500" ] || die "1,500 tokens not visible within 30 s (saw '$tokens')"
echo
echo "usage: 600 + 900 = $tokens tokens for acme"

# ---- The period closes: metron restarts with its billing clock 32 days ahead ----
stop_metron
start_metron "$a_month_later"
echo "metron restarted with the billing clock 32 days ahead: the first period has ended"

second="$(wait_invoice 2)"
echo
echo "second invoice (the month's usage by graduated tiers, and next month's fee):"
show "$second"
check_totals "$second" "$second_expected"
if [ -z "${STRIPE_API_KEY:-}" ]; then
    violations="$(curl -sS --fail-with-body "$stripe_base/_test/violations")"
    [ "$violations" = "[]" ] || die "the fake Stripe saw contract violations: $violations"
fi
echo
echo "OK"
