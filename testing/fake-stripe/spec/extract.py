#!/usr/bin/env python3
"""Extract the Stripe operations the fake serves from Stripe's OpenAPI spec.

Usage: extract.py <stripe-openapi.json> [<out.json>]   (no output path: print to stdout)

The operations are copied verbatim, and every component schema they reference (through their
parameters, request bodies and responses) is copied too, recursively. The output is
deterministic (sorted keys, one-space indent) so a test can compare it byte for byte.
"""
import json
import sys

OPERATIONS = [
    ("get", "/v1/account"),
    ("post", "/v1/webhook_endpoints"),
    ("delete", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("post", "/v1/customers"),
    ("get", "/v1/customers/{customer}"),
    ("post", "/v1/customers/{customer}"),
    ("get", "/v1/payment_methods/{payment_method}"),
    ("post", "/v1/invoices"),
    ("get", "/v1/invoices"),
    ("get", "/v1/invoices/{invoice}"),
    ("post", "/v1/invoices/{invoice}"),
    ("delete", "/v1/invoices/{invoice}"),
    ("post", "/v1/invoices/{invoice}/finalize"),
    ("post", "/v1/invoices/{invoice}/pay"),
    ("post", "/v1/invoices/{invoice}/void"),
    ("post", "/v1/invoices/{invoice}/mark_uncollectible"),
    ("post", "/v1/invoices/{invoice}/send"),
    ("get", "/v1/invoices/{invoice}/lines"),
    ("post", "/v1/invoiceitems"),
    ("get", "/v1/invoiceitems"),
    ("post", "/v1/invoiceitems/{invoiceitem}"),
    ("delete", "/v1/invoiceitems/{invoiceitem}"),
    ("post", "/v1/checkout/sessions"),
    ("post", "/v1/billing_portal/sessions"),
]


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def extract(spec):
    paths = {}
    pending = set()
    for method, path in OPERATIONS:
        operation = spec["paths"][path][method]
        paths.setdefault(path, {})[method] = operation
        refs(operation, pending)
    schemas = {}
    while pending:
        name = pending.pop()
        if name in schemas:
            continue
        schemas[name] = spec["components"]["schemas"][name]
        found = set()
        refs(schemas[name], found)
        pending |= found - schemas.keys()
    return {
        "info": {"version": spec["info"]["version"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def render(subset):
    return json.dumps(subset, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main():
    with open(sys.argv[1], encoding="utf-8") as source:
        spec = json.load(source)
    text = render(extract(spec))
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w", encoding="utf-8") as target:
            target.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
