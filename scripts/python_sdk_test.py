#!/usr/bin/env python3
"""Runs OpenMeter's official Python SDK, unchanged, against a `metron` binary.

Usage: scripts/python_sdk_test.py PATH/TO/metron

Creates (once) a virtualenv at $METRON_VENV or ${XDG_CACHE_HOME:-~/.cache}/metron/venv with
`openmeter==1.0.0b236` from PyPI, re-runs itself inside it, starts the binary on a loopback
port with a temporary data directory and a config that declares one meter, then drives it with
the SDK: ingest one event, ingest a batch, list and get meters, list events, and query the
meter by DAY with `subject` and `group_by` (polling up to 30 s for the values to appear). Then
the entitlement flow of openmeter-semantics.md §8.1: create a feature on the meter, a customer
with a usage attribution, a metered MONTH entitlement (v2), a grant of 1000, ingest 3 events of
tokens and poll the entitlement value until its usage reflects them. Then the lookups (currency
list, an unknown progress id is a 404) and billing: create a plan with a flat fee in advance and
a graduated tiered usage price on the feature, publish it, create a customer, subscribe it to
the plan by key, get the subscription (expanded), list the customer's subscriptions, and list
the customer's invoices (`invoices.list`: the fee in advance invoiced at once and paid through
the sandbox app).
Prints "python_sdk: N passed, M failed" and exits non-zero if anything failed.
"""

import datetime as dt
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

from metron_server import MetronServer

SDK_VERSION = "1.0.0b236"
IN_VENV_MARKER = "METRON_SDK_TEST_IN_VENV"
VISIBLE_SECONDS = 30

CONFIG = """\
meters:
  - slug: tokens_total
    description: Tokens used, by model
    eventType: prompt
    aggregation: SUM
    valueProperty: $.tokens
    groupBy:
      model: $.model
"""


def venv_dir() -> pathlib.Path:
    if os.environ.get("METRON_VENV"):
        return pathlib.Path(os.environ["METRON_VENV"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "metron" / "venv"


def ensure_venv_and_reexec() -> None:
    """Creates the venv with the SDK if needed and re-executes this script inside it."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"python sdk: creating virtualenv {venv}", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = subprocess.run(
        [str(python), "-c", f"import openmeter, sys; sys.exit(openmeter.__version__ != {SDK_VERSION!r})"],
        capture_output=True,
    )
    if check.returncode != 0:
        print(f"python sdk: installing openmeter=={SDK_VERSION} into {venv}", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--pre", f"openmeter=={SDK_VERSION}"],
            check=True,
        )
    env = dict(os.environ, **{IN_VENV_MARKER: "1"})
    os.execve(str(python), [str(python), os.path.abspath(__file__), *sys.argv[1:]], env)


def start_server(binary: str) -> MetronServer:
    """The server under test, in a temporary directory that lives as long as the process."""
    tmp = tempfile.TemporaryDirectory(prefix="metron-pysdk-")
    server = MetronServer(binary, pathlib.Path(tmp.name), CONFIG, rust_log="info")
    server.tmp = tmp  # kept with the server
    return server


def eventually(check, what: str):
    """Calls `check` every 200 ms until it returns without AssertionError (30 s deadline)."""
    deadline = time.monotonic() + VISIBLE_SECONDS
    while True:
        try:
            return check()
        except AssertionError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {VISIBLE_SECONDS}s: {error}")
            time.sleep(0.2)


def run_checks(server: MetronServer) -> tuple[int, int]:
    from openmeter import Client
    from openmeter.models import Event

    client = Client(endpoint=server.url)
    now = dt.datetime.now(dt.timezone.utc)
    passed, failed = 0, 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every kind of failure and go on
            failed += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)

    def event(subject: str, tokens: int, model: str) -> Event:
        return Event(id=str(uuid.uuid4()), source="python-sdk-test", specversion="1.0", type="prompt",
                     subject=subject, time=now, data={"tokens": tokens, "model": model})

    def ingest_event():
        # POST /api/v1/events, application/cloudevents+json -> 204 (the SDK returns None)
        assert client.events.ingest_event(event("customer-1", 3, "gpt-4o")) is None

    def ingest_events():
        # POST /api/v1/events, application/cloudevents-batch+json -> 204
        batch = [event("customer-1", 5, "gpt-4o"), event("customer-1", 7, "gpt-3.5"),
                 event("customer-2", 11, "gpt-4o")]
        assert client.events.ingest_events(batch) is None

    def list_meters():
        meters = client.meters.list()
        slugs = {m.slug: m for m in meters}
        assert "tokens_total" in slugs, f"meters: {[m.slug for m in meters]}"
        meter = slugs["tokens_total"]
        assert meter.aggregation == "SUM", meter.aggregation
        assert meter.event_type == "prompt", meter.event_type
        assert meter.value_property == "$.tokens", meter.value_property
        assert dict(meter.group_by or {}) == {"model": "$.model"}, meter.group_by

    def get_meter():
        meter = client.meters.get("tokens_total")
        assert meter.slug == "tokens_total", meter.slug
        assert meter.id, "meter has an id"

    def query_by_day_subject_and_model():
        def query():
            result = client.meters.query_json(
                meter_id_or_slug="tokens_total", window_size="DAY",
                from_parameter=now - dt.timedelta(days=1), subject=["customer-1"], group_by=["model"])
            by_model = {}
            for row in result.data:
                assert row.subject == "customer-1", f"row subject {row.subject!r}"
                model = (row.group_by or {}).get("model")
                by_model[model] = by_model.get(model, 0) + row.value
            assert by_model == {"gpt-4o": 8.0, "gpt-3.5": 7.0}, f"rows {result.data!r}"
        eventually(query, "query_json DAY subject=customer-1 group_by=model")

    def query_total():
        def query():
            result = client.meters.query_json(meter_id_or_slug="tokens_total")
            assert len(result.data) == 1, f"rows {result.data!r}"
            assert result.data[0].value == 26.0, f"rows {result.data!r}"
        eventually(query, "query_json total")

    def query_csv():
        text = client.meters.query_csv(meter_id_or_slug="tokens_total", subject=["customer-2"])
        lines = text.strip().splitlines()
        assert lines[0] == "window_start,window_end,subject,value", lines
        assert lines[1].endswith(",customer-2,11.000000"), lines

    def list_events():
        def listed():
            events = client.events.list(subject="customer-1")
            assert len(events) == 3, f"{len(events)} events"
            assert all(e.event.subject == "customer-1" for e in events)
        eventually(listed, "events.list subject=customer-1")

    # ----- entitlements (openmeter-semantics.md §8.1), on a customer of its own -----
    from openmeter.models import (CustomerCreate, CustomerUsageAttribution,
                                  EntitlementGrantCreateInputV2, EntitlementMeteredV2CreateInputs,
                                  ExpirationPeriod, FeatureCreateInputs, RecurringPeriodCreateInput)

    ent_customer, ent_feature = "customer-ent", "ai_tokens"
    ent_tokens = [10, 20, 30]
    ent_state = {}

    def create_feature():
        feature = client.features.create(FeatureCreateInputs(
            key=ent_feature, name="AI Tokens", meter_slug="tokens_total"))
        assert feature.key == ent_feature, feature.key
        assert feature.meter_slug == "tokens_total", feature.meter_slug
        assert feature.id, "feature has an id"

    def create_customer():
        customer = client.customers.create(CustomerCreate(
            name="ACME", key=ent_customer,
            usage_attribution=CustomerUsageAttribution(subject_keys=[ent_customer])))
        assert customer.key == ent_customer, customer.key
        assert list(customer.usage_attribution.subject_keys) == [ent_customer], customer.usage_attribution
        assert customer.id, "customer has an id"
        ent_state["customer_id"] = customer.id

    def create_entitlement():
        entitlement = client.customer_entitlements_v2.post(ent_customer, EntitlementMeteredV2CreateInputs(
            type="metered", feature_key=ent_feature, usage_period=RecurringPeriodCreateInput(interval="MONTH")))
        # The SDK types this answer as a union (`_unions.EntitlementV2`) that its
        # deserializer leaves as the parsed JSON object; read it as such.
        if not isinstance(entitlement, dict):
            entitlement = entitlement.as_dict()
        assert entitlement["type"] == "metered", entitlement
        assert entitlement["featureKey"] == ent_feature, entitlement
        assert entitlement["customerId"] == ent_state.get("customer_id"), entitlement
        assert entitlement["usagePeriod"]["interval"] == "MONTH", entitlement

    def create_grant():
        grant = client.customer_entitlement_v2.create_customer_entitlement_grant(
            ent_customer, ent_feature,
            EntitlementGrantCreateInputV2(amount=1000, priority=1, effective_at=now,
                                          expiration=ExpirationPeriod(duration="YEAR", count=1)))
        assert grant.amount == 1000, grant.amount
        assert grant.priority == 1, grant.priority
        assert grant.id, "grant has an id"

    def ingest_usage():
        # After the entitlement exists (it measures usage from its creation minute).
        at = dt.datetime.now(dt.timezone.utc)
        batch = [Event(id=str(uuid.uuid4()), source="python-sdk-test", specversion="1.0", type="prompt",
                       subject=ent_customer, time=at, data={"tokens": tokens, "model": "gpt-4o"})
                 for tokens in ent_tokens]
        assert client.events.ingest_events(batch) is None

    def entitlement_value():
        used = sum(ent_tokens)

        def value():
            val = client.customer_entitlement_v2.get_customer_entitlement_value(ent_customer, ent_feature)
            assert val.usage == used, f"usage {val.usage!r}, want {used}"
            assert val.has_access is True, f"has_access {val.has_access!r}"
            assert val.balance == 1000 - used, f"balance {val.balance!r}, want {1000 - used}"
            assert val.overage == 0, f"overage {val.overage!r}"
        eventually(value, "customer_entitlement_v2.get_customer_entitlement_value")

    # ----- product catalog, subscriptions and invoices, on the feature above -----
    from openmeter.models import (FlatPrice, FlatPriceWithPaymentTerm, PlanCreate, PlanPhase,
                                  PlanReferenceInput, PlanSubscriptionCreate, PriceTier,
                                  RateCardFlatFee, RateCardUsageBased, TieredPriceWithCommitments,
                                  UnitPrice)

    plan_key, sub_customer = "pro", "customer-sub"
    plan_state = {}

    def list_currencies():
        currencies = client.currencies.list_currencies()
        by_code = {c.code: c for c in currencies}
        assert currencies[0].code == "USD", currencies[0]
        assert by_code["USD"].subunits == 2 and by_code["USD"].symbol == "$", by_code["USD"]
        assert by_code["JPY"].subunits == 0, by_code["JPY"]

    def get_unknown_progress():
        from corehttp.exceptions import ResourceNotFoundError
        try:
            client.progress.get_progress("no-such-progress")
        except ResourceNotFoundError:
            return
        raise AssertionError("an unknown progress id answered without a 404")

    def create_plan():
        # A flat fee billed in advance and a graduated tiered price on the metered feature:
        # the first 1000 tokens at 0.01, then 0.005 plus a flat 5 for the tier.
        plan = client.plans.create(PlanCreate(
            key=plan_key, name="Pro", currency="USD", billing_cadence="P1M",
            phases=[PlanPhase(key="default", name="Default", duration=None, rate_cards=[
                RateCardFlatFee(type="flat_fee", key="platform", name="Platform fee",
                                billing_cadence="P1M",
                                price=FlatPriceWithPaymentTerm(type="flat", amount="49",
                                                               payment_term="in_advance")),
                RateCardUsageBased(
                    type="usage_based", key=ent_feature, name="AI tokens",
                    feature_key=ent_feature, billing_cadence="P1M",
                    price=TieredPriceWithCommitments(type="tiered", mode="graduated", tiers=[
                        PriceTier(up_to_amount="1000", unit_price=UnitPrice(type="unit", amount="0.01")),
                        PriceTier(unit_price=UnitPrice(type="unit", amount="0.005"),
                                  flat_price=FlatPrice(type="flat", amount="5")),
                    ])),
            ])]))
        assert plan.key == plan_key and plan.version == 1, (plan.key, plan.version)
        assert plan.status == "draft", plan.status
        assert plan.id, "plan has an id"
        cards = plan.phases[0].rate_cards
        # The SDK leaves the rate card union as the parsed JSON object.
        cards = [c if isinstance(c, dict) else c.as_dict() for c in cards]
        assert [c["key"] for c in cards] == ["platform", ent_feature], cards
        assert cards[0]["price"] == {"type": "flat", "amount": "49", "paymentTerm": "in_advance"}, cards[0]
        tiers = cards[1]["price"]["tiers"]
        assert cards[1]["price"]["mode"] == "graduated", cards[1]
        assert [t.get("upToAmount") for t in tiers] == ["1000", None], tiers
        assert tiers[1]["flatPrice"] == {"type": "flat", "amount": "5"}, tiers
        plan_state["id"] = plan.id

    def publish_plan():
        plan = client.plans.publish(plan_state["id"])
        assert plan.status == "active", plan.status
        assert plan.effective_from is not None, "published plan has effectiveFrom"

    def create_sub_customer():
        customer = client.customers.create(CustomerCreate(
            name="Subscriber", key=sub_customer,
            usage_attribution=CustomerUsageAttribution(subject_keys=[sub_customer])))
        assert customer.key == sub_customer, customer.key
        plan_state["customer_id"] = customer.id

    def create_subscription():
        sub = client.subscriptions.create(PlanSubscriptionCreate(
            customer_key=sub_customer, plan=PlanReferenceInput(key=plan_key)))
        if not isinstance(sub, dict):
            sub = sub.as_dict()
        assert sub["customerId"] == plan_state["customer_id"], sub
        assert sub["plan"]["key"] == plan_key and sub["plan"]["version"] == 1, sub
        assert sub["status"] == "active", sub
        assert sub["currency"] == "USD", sub
        plan_state["subscription_id"] = sub["id"]

    def get_subscription():
        sub = client.subscriptions.get_expanded(plan_state["subscription_id"])
        assert sub.id == plan_state["subscription_id"], sub.id
        assert sub.status == "active", sub.status
        assert sub.customer_id == plan_state["customer_id"], sub.customer_id
        items = [item.key for phase in sub.phases for item in phase.items_property]
        assert sorted(items) == sorted(["platform", ent_feature]), items

    def list_customer_subscriptions():
        page = client.customers.list_customer_subscriptions(sub_customer)
        assert page.total_count == 1, page.total_count
        assert [s.id for s in page.items_property] == [plan_state["subscription_id"]], page

    def list_invoices():
        # The fee in advance is due at the subscription's start: billing (the default profile
        # on the sandbox app) invoices it at once and the sandbox settles it. Waits for it.
        deadline = time.monotonic() + 30
        while True:
            page = client.invoices.list(customers=[plan_state["customer_id"]])
            assert page.page >= 1, page
            issued = [i for i in page.items_property if i.status != "gathering"]
            for invoice in page.items_property:
                assert invoice.currency == "USD", invoice.currency
                assert invoice.customer.id == plan_state["customer_id"], invoice.customer
            if issued and issued[0].status == "paid":
                break
            assert time.monotonic() < deadline, f"no paid invoice of the fee after 30 s: {page}"
            time.sleep(0.2)
        assert len(issued) == 1, issued
        assert issued[0].totals.total == "49", issued[0].totals

    check("events.ingest_event", ingest_event)
    check("events.ingest_events", ingest_events)
    check("meters.list", list_meters)
    check("meters.get", get_meter)
    check("meters.query_json (DAY, subject, group_by)", query_by_day_subject_and_model)
    check("meters.query_json (total)", query_total)
    check("meters.query_csv (subject)", query_csv)
    check("events.list (subject)", list_events)
    check("features.create", create_feature)
    check("customers.create (usage_attribution)", create_customer)
    check("customer_entitlements_v2.post (metered, MONTH)", create_entitlement)
    check("customer_entitlement_v2.create_customer_entitlement_grant (1000)", create_grant)
    check("events.ingest_events (3 token events for the customer)", ingest_usage)
    check("customer_entitlement_v2.get_customer_entitlement_value", entitlement_value)
    check("currencies.list_currencies", list_currencies)
    check("progress.get_progress (unknown id: 404)", get_unknown_progress)
    check("plans.create (flat fee in advance, graduated tiers on the feature)", create_plan)
    check("plans.publish", publish_plan)
    check("customers.create (subscriber)", create_sub_customer)
    check("subscriptions.create (plan by key, customer by key)", create_subscription)
    check("subscriptions.get_expanded", get_subscription)
    check("customers.list_customer_subscriptions", list_customer_subscriptions)
    check("invoices.list (customer: the fee in advance, 49.00, paid)", list_invoices)
    return passed, failed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get(IN_VENV_MARKER) != "1":
        ensure_venv_and_reexec()  # does not return
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        print(f"python sdk: {binary} is not an executable", file=sys.stderr)
        return 2
    try:
        server = start_server(binary)
    except RuntimeError as error:
        print(f"python sdk: the server did not start: {error}", file=sys.stderr)
        print("python_sdk: 0 passed, 1 failed")
        return 1
    try:
        passed, failed = run_checks(server)
    finally:
        server.stop()
    if failed:
        print(f"----- metron log tail -----\n{server.log_tail()}")
    print(f"python_sdk: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
