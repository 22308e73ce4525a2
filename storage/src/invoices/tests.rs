//! Splitting a gathering line (progressive billing) against a real SQLite catalog.

use super::*;
use chrono::TimeZone;
use serde_json::json;

fn t(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, d, 0, 0, 0).unwrap()
}

fn invoice(id: &str, status: ExtendedStatus) -> Invoice {
    serde_json::from_value(json!({
        "id": id, "customerId": "c", "currency": "USD", "status": status.as_str(),
        "customer": {}, "supplier": {}, "workflow": {}, "invoicingAppId": "app",
        "createdAt": t(1), "updatedAt": t(1)
    }))
    .unwrap()
}

fn line(id: &str, key: &str, invoice_id: &str, from: u32, to: u32) -> Line {
    serde_json::from_value(json!({
        "id": id, "invoiceId": invoice_id, "customerId": "c", "lineKey": key, "name": "Tokens",
        "managedBy": "subscription", "currency": "USD",
        "period": {"from": t(from), "to": t(to)}, "invoiceAt": t(to),
        "rateCard": {"type": "usage_based", "key": "tokens", "name": "Tokens",
                     "featureKey": "tokens", "billingCadence": "P1M",
                     "price": {"type": "unit", "amount": "1"}},
        "createdAt": t(1), "updatedAt": t(1)
    }))
    .unwrap()
}

fn group(period: LinePeriod) -> Split {
    Split {
        group_id: "g1".into(),
        group_key: "sub/k".into(),
        group_period: period,
        metered_pre_line_period_quantity: None,
        pre_line_period_quantity: None,
        previously_billed_amount: Decimal::ZERO,
    }
}

// A split writes the part (same id and key, cut at the 11th) and the rest (own key) in one
// transaction; both are found by their group. Repeating the same split, or splitting a line
// read with a period it no longer has, writes nothing. A stored line without `split` (written
// before progressive billing existed) decodes with none.
crate::catalog_test! {
    #[tokio::test]
    async fn a_split_is_written_once(db) {
        let catalog = db.open().await;
        let gathering = invoice("gi", ExtendedStatus::Gathering);
        catalog.save_invoice("ns", &gathering, &[]).await.unwrap();
        let whole = line("l1", "sub/k", "gi", 1, 30);
        assert_eq!(
            catalog
                .insert_lines("ns", std::slice::from_ref(&whole))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            catalog.invoice_lines("ns", "gi").await.unwrap()[0].split,
            None
        );

        let mut part = whole.clone();
        part.period.to = t(11);
        part.invoice_at = t(11);
        part.split = Some(group(whole.period));
        let mut rest = whole.clone();
        rest.id = "l2".into();
        rest.line_key = Split::key_at("sub/k", t(11));
        rest.period.from = t(11);
        rest.split = part.split.clone();
        let write = SplitWrite {
            read: whole.period,
            part: &part,
            rest: Some(&rest),
        };
        let written = catalog.split_lines("ns", &[write]).await.unwrap();
        assert_eq!(written, vec![part.clone()]);
        let lines = catalog.invoice_lines("ns", "gi").await.unwrap();
        assert_eq!(lines, vec![part.clone(), rest.clone()]);
        assert_eq!(rest.line_key, "sub/k/split/1775865600");

        assert!(
            catalog
                .split_lines("ns", &[write])
                .await
                .unwrap()
                .is_empty()
        );
        let mut other = rest.clone();
        other.line_key = Split::key_at("sub/k", t(20));
        let stale = SplitWrite {
            read: LinePeriod {
                from: t(1),
                to: t(20),
            },
            part: &part,
            rest: Some(&other),
        };
        assert!(
            catalog
                .split_lines("ns", &[stale])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(catalog.invoice_lines("ns", "gi").await.unwrap().len(), 2);

        let members = catalog.split_group_lines("ns", "c", "g1").await.unwrap();
        let ids: Vec<(&str, &str)> = members
            .iter()
            .map(|(l, i)| (l.id.as_str(), i.id.as_str()))
            .collect();
        assert_eq!(ids, vec![("l1", "gi"), ("l2", "gi")]);
        assert!(
            catalog
                .split_group_lines("ns", "c", "g2")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
