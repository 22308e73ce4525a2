use super::*;
use crate::form::{pairs, parse};

fn check(method: &str, template: &str, body: &str) -> Result<()> {
    spec().check(method, template, &parse(&pairs(body).unwrap()).unwrap())
}

#[test]
fn the_embedded_subset_has_every_served_operation() {
    for (method, template) in crate::server::OPERATIONS {
        assert!(spec().has(method, template), "{method} {template}");
    }
}

#[test]
fn a_contract_invoice_item_passes() {
    let body = "customer=cus_1&invoice=in_1&amount=-7725&currency=USD&description=x\
        &period[start]=1&period[end]=2&metadata[om_line_id]=l&metadata[om_line_type]=line\
        &tax_behavior=inclusive&tax_code=txcd_10000000";
    assert_eq!(check("POST", "/v1/invoiceitems", body), Ok(()));
}

#[test]
fn errors_name_the_parameter_and_code() {
    let cases = [
        (
            "POST",
            "/v1/invoiceitems",
            "customer=c&bogus=1",
            "parameter_unknown",
            "bogus",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            "customer=c&period[start]=1&period[end]=2&period[x]=3",
            "parameter_unknown",
            "period[x]",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            "amount=1",
            "parameter_missing",
            "customer",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            "customer=c&period[start]=1",
            "parameter_missing",
            "period[end]",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            "customer=c&amount=1.5",
            "parameter_invalid_integer",
            "amount",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            "customer=c&tax_behavior=sometimes",
            "parameter_invalid_string",
            "tax_behavior",
        ),
        (
            "POST",
            "/v1/invoices",
            "auto_advance=yes",
            "parameter_invalid_boolean",
            "auto_advance",
        ),
        (
            "POST",
            "/v1/invoices",
            "metadata[a][b]=1",
            "parameter_invalid_string",
            "metadata[a]",
        ),
        (
            "GET",
            "/v1/invoices",
            "limit=x",
            "parameter_invalid_integer",
            "limit",
        ),
        (
            "GET",
            "/v1/invoices",
            "status=weird",
            "parameter_invalid_string",
            "status",
        ),
        (
            "GET",
            "/v1/invoices/{invoice}/lines",
            "customer=c",
            "parameter_unknown",
            "customer",
        ),
        (
            "POST",
            "/v1/webhook_endpoints",
            "url=http://x",
            "parameter_missing",
            "enabled_events",
        ),
    ];
    for (method, template, body, code, param) in cases {
        let error = check(method, template, body).expect_err(body);
        assert_eq!((error.code, error.param.as_str()), (code, param), "{body}");
    }
}

#[test]
fn the_acacia_allow_list_is_accepted() {
    let body = "url=http://x&enabled_events[]=*&api_version=2024-09-30.acacia";
    assert_eq!(check("POST", "/v1/webhook_endpoints", body), Ok(()));
    assert!(
        check(
            "POST",
            "/v1/webhook_endpoints",
            "url=http://x&enabled_events[]=*&api_version=2099-01-01.zzz"
        )
        .is_err()
    );
    assert_eq!(
        check(
            "POST",
            "/v1/invoices/{invoice}",
            "rendering[template]=x&rendering[pdf][page_size]=a4"
        ),
        Ok(())
    );
}

#[test]
fn empty_strings_unset_and_expand_arrays_pass() {
    assert_eq!(
        check(
            "POST",
            "/v1/invoices/{invoice}",
            "metadata=&default_tax_rates=&discounts="
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "GET",
            "/v1/customers/{customer}",
            "expand[0]=invoice_settings.default_payment_method&expand[1]=tax"
        ),
        Ok(())
    );
}

/// The committed subset is what `spec/extract.py` makes of the full spec, when that is present.
#[test]
fn the_subset_matches_a_fresh_extraction() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let full = root.join("../../../shared/reference/stripe-openapi.json");
    if !full.exists() {
        println!("skipped: {} is absent", full.display());
        return;
    }
    let output = std::process::Command::new("python3")
        .arg(root.join("spec/extract.py"))
        .arg(&full)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8(output.stdout).unwrap() == SUBSET,
        "re-run spec/extract.py"
    );
}
