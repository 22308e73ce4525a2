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

/// Every optional key OpenMeter's checkout-session call may send (contract §1.3).
#[test]
fn openmeters_checkout_session_keys_pass() {
    let body = "mode=setup&customer=cus_1&setup_intent_data[metadata][om_app_id]=a\
        &billing_address_collection=required&cancel_url=http://x&client_reference_id=r\
        &customer_update[address]=auto&customer_update[name]=auto&customer_update[shipping]=never\
        &currency=usd&consent_collection[payment_method_reuse_agreement][position]=auto\
        &consent_collection[promotions]=auto&consent_collection[terms_of_service]=required\
        &custom_text[after_submit][message]=a&custom_text[shipping_address][message]=b\
        &custom_text[submit][message]=c&custom_text[terms_of_service_acceptance][message]=d\
        &expires_at=1700000000&locale=en&return_url=http://x&ui_mode=embedded\
        &payment_method_types[0]=card&redirect_on_completion=if_required\
        &tax_id_collection[enabled]=true&tax_id_collection[required]=never";
    assert_eq!(check("POST", "/v1/checkout/sessions", body), Ok(()));
}

/// OpenMeter's install and invoice-create calls, key for key (contract §1.2, §1.4).
#[test]
fn openmeters_install_and_invoice_calls_pass() {
    let events = [
        "setup_intent.succeeded",
        "setup_intent.setup_failed",
        "setup_intent.requires_action",
        "invoice.finalization_failed",
        "invoice.marked_uncollectible",
        "invoice.overdue",
        "invoice.paid",
        "invoice.payment_action_required",
        "invoice.payment_failed",
        "invoice.payment_succeeded",
        "invoice.sent",
        "invoice.voided",
    ];
    let mut body =
        "url=http://m/api/v1/apps/a/stripe/webhook&description=OpenMeter&metadata[om_namespace]=n\
        &metadata[om_app_id]=a&api_version=2024-09-30.acacia"
            .to_owned();
    for (i, event) in events.iter().enumerate() {
        body.push_str(&format!("&enabled_events[{i}]={event}"));
    }
    assert_eq!(check("POST", "/v1/webhook_endpoints", &body), Ok(()));
    let invoice = "currency=USD&customer=cus_1&auto_advance=false&collection_method=send_invoice\
        &days_until_due=30&default_payment_method=pm_1&automatic_tax[enabled]=true\
        &metadata[om_namespace]=n&metadata[om_app_id]=a&metadata[om_customer_id]=c&metadata[om_invoice_id]=i";
    assert_eq!(check("POST", "/v1/invoices", invoice), Ok(()));
    assert_eq!(
        check(
            "POST",
            "/v1/invoices/{invoice}/finalize",
            "auto_advance=true"
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "POST",
            "/v1/customers",
            "name=A&email=a@b.c&metadata[om_namespace]=n&metadata[om_customer_id]=c"
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "POST",
            "/v1/billing_portal/sessions",
            "customer=cus_1&configuration=bpc_1&return_url=http://x&locale=en"
        ),
        Ok(())
    );
}

#[test]
fn every_emitted_event_type_can_be_subscribed_to() {
    for (i, kind) in crate::ops::EVENTS.iter().enumerate() {
        let body = format!("url=http://x&enabled_events[{i}]={kind}");
        assert_eq!(
            check("POST", "/v1/webhook_endpoints", &body),
            Ok(()),
            "{kind}"
        );
    }
}
