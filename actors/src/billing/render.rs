//! Invoices as the API answers them (OpenMeter v1's `Invoice`, `InvoiceLine`,
//! `InvoiceDetailedLine`).

use super::Billing;
use metron_storage::invoices::{Invoice, Line};
use serde_json::{Map, Value, json};

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value.filter(|v| !v.is_null()) {
        map.insert(key.into(), v);
    }
}

/// `InvoiceLine`, with its detailed lines as `children`.
pub fn line_json(invoice: &Invoice, line: &Line) -> Value {
    let card = serde_json::to_value(&line.rate_card).unwrap_or(Value::Null);
    let mut out = json!({
        "id": line.id,
        "name": line.name,
        "createdAt": line.created_at,
        "updatedAt": line.updated_at,
        "managedBy": line.managed_by,
        "status": "valid",
        "currency": line.currency,
        "totals": line.totals,
        "period": line.period,
        "invoiceAt": line.invoice_at,
        "type": "usage_based",
        "invoice": {"id": invoice.id},
        "rateCard": {
            "price": card.get("price").cloned().unwrap_or(Value::Null),
        },
        "children": line.children.iter().map(|c| child_json(line, c)).collect::<Vec<_>>(),
    });
    if let Value::Object(map) = &mut out {
        put(
            map,
            "description",
            line.description.as_ref().map(|d| json!(d)),
        );
        put(map, "metadata", line.metadata.as_ref().map(|m| json!(m)));
        put(map, "deletedAt", line.deleted_at.map(|t| json!(t)));
        put(
            map,
            "quantity",
            line.quantity.map(|q| json!(q.normalize().to_string())),
        );
        put(
            map,
            "meteredQuantity",
            line.metered_quantity
                .map(|q| json!(q.normalize().to_string())),
        );
        if line.quantity.is_some() {
            // Progressive billing: the usage earlier parts of the split group billed.
            let split = line.split.as_ref();
            let pre = split.and_then(|s| s.pre_line_period_quantity);
            let metered = split.and_then(|s| s.metered_pre_line_period_quantity);
            let text = |q: Option<rust_decimal::Decimal>| {
                json!(q.unwrap_or_default().normalize().to_string())
            };
            map.insert("preLinePeriodQuantity".into(), text(pre));
            if metered.is_some_and(|q| !q.is_zero()) {
                map.insert("meteredPreLinePeriodQuantity".into(), text(metered));
            }
        }
        put(map, "featureKey", card.get("featureKey").cloned());
        put(map, "price", card.get("price").cloned());
        if let Some(Value::Object(rc)) = map.get_mut("rateCard") {
            put(rc, "featureKey", card.get("featureKey").cloned());
            put(rc, "taxConfig", card.get("taxConfig").cloned());
        }
        put(map, "taxConfig", card.get("taxConfig").cloned());
        put(
            map,
            "externalIds",
            line.external_id.as_ref().map(|id| json!({"invoicing": id})),
        );
        put(
            map,
            "subscription",
            line.subscription.as_ref().map(|s| {
                json!({
                    "subscription": {"id": s.subscription_id},
                    "phase": {"id": s.phase_id},
                    "item": {"id": s.item_id},
                    "billingPeriod": s.billing_period,
                })
            }),
        );
    }
    out
}

fn child_json(line: &Line, child: &metron_storage::invoices::DetailedLine) -> Value {
    let r = &child.rated;
    let mut out = json!({
        "id": child.id,
        "name": r.get("name").cloned().unwrap_or(json!(line.name)),
        "createdAt": line.created_at,
        "updatedAt": line.updated_at,
        "managedBy": line.managed_by,
        "status": "valid",
        "currency": line.currency,
        "totals": child.totals,
        "period": r.get("period").cloned().unwrap_or(json!(line.period)),
        "invoiceAt": line.invoice_at,
        "type": "flat_fee",
        "perUnitAmount": r.get("perUnitAmount").cloned().unwrap_or(json!("0")),
        "quantity": r.get("quantity").cloned().unwrap_or(json!("0")),
        "paymentTerm": r.get("paymentTerm").cloned().unwrap_or(json!("in_advance")),
        "category": r.get("category").cloned().unwrap_or(json!("regular")),
        "rateCard": {
            "price": {"type": "flat", "amount": r.get("perUnitAmount").cloned().unwrap_or(json!("0")),
                      "paymentTerm": r.get("paymentTerm").cloned().unwrap_or(json!("in_advance"))},
        },
    });
    if let (Value::Object(map), Some(Value::Array(discounts))) =
        (&mut out, r.get("amountDiscounts"))
        && !discounts.is_empty()
    {
        map.insert(
            "discounts".into(),
            json!({"amount": discounts.iter().enumerate().map(|(i, d)| {
                let mut d = d.clone();
                if let Value::Object(m) = &mut d {
                    m.insert("id".into(), json!(super::rate::derived_id(&child.id, &format!("discount-{i}"))));
                    m.insert("createdAt".into(), json!(line.created_at));
                    m.insert("updatedAt".into(), json!(line.updated_at));
                }
                d
            }).collect::<Vec<_>>()}),
        );
    }
    out
}

/// `Invoice`; `lines` only when asked (`expand=lines`).
pub fn invoice_json(
    billing: &Billing,
    invoice: &Invoice,
    lines: &[Line],
    expand_lines: bool,
) -> Value {
    let status = invoice.status.status();
    let mut out = json!({
        "id": invoice.id,
        "createdAt": invoice.created_at,
        "updatedAt": invoice.updated_at,
        "type": "standard",
        "supplier": invoice.supplier,
        "customer": invoice.customer,
        "number": invoice.number.clone().unwrap_or_else(|| draft_number(invoice)),
        "currency": invoice.currency,
        "totals": invoice.totals,
        "status": status,
        "statusDetails": billing.status_details(invoice, lines),
        "workflow": invoice.workflow,
    });
    if let Value::Object(map) = &mut out {
        put(map, "metadata", invoice.metadata.as_ref().map(|m| json!(m)));
        put(map, "deletedAt", invoice.deleted_at.map(|t| json!(t)));
        put(map, "issuedAt", invoice.issued_at.map(|t| json!(t)));
        put(map, "draftUntil", invoice.draft_until.map(|t| json!(t)));
        put(
            map,
            "quantitySnapshotedAt",
            invoice.quantity_snapshoted_at.map(|t| json!(t)),
        );
        put(map, "collectionAt", invoice.collection_at.map(|t| json!(t)));
        put(map, "dueAt", invoice.due_at.map(|t| json!(t)));
        put(map, "period", invoice.period.map(|p| json!(p)));
        put(map, "voidedAt", invoice.voided_at.map(|t| json!(t)));
        put(
            map,
            "sentToCustomerAt",
            invoice.sent_to_customer_at.map(|t| json!(t)),
        );
        if !invoice.validation_issues.is_empty() {
            map.insert("validationIssues".into(), json!(invoice.validation_issues));
        }
        let mut external = Map::new();
        put(
            &mut external,
            "invoicing",
            invoice.external_invoicing_id.as_ref().map(|v| json!(v)),
        );
        put(
            &mut external,
            "payment",
            invoice.external_payment_id.as_ref().map(|v| json!(v)),
        );
        if !external.is_empty() {
            map.insert("externalIds".into(), Value::Object(external));
        }
        if expand_lines {
            map.insert(
                "lines".into(),
                json!(
                    lines
                        .iter()
                        .map(|l| line_json(invoice, l))
                        .collect::<Vec<_>>()
                ),
            );
        }
    }
    out
}

/// A draft's number before the app numbers it, as OpenMeter's `DRAFT-…` placeholders.
fn draft_number(invoice: &Invoice) -> String {
    if invoice.is_gathering() {
        format!("GATHER-{}", invoice.id)
    } else {
        format!("DRAFT-{}", invoice.id)
    }
}
