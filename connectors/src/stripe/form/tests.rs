//! Flattening and escaping of Stripe's form encoding (contract §4).

use super::*;

#[test]
fn nested_hashes_arrays_booleans_and_integers_flatten_to_bracket_keys() {
    let metadata: BTreeMap<String, String> = [("om_line_id", "l1"), ("om_line_type", "line")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let events = ["invoice.paid".to_owned(), "invoice.voided".to_owned()];
    let form = Form::new()
        .field("amount", -7725_i64)
        .field("auto_advance", false)
        .field("metadata", &metadata)
        .field("enabled_events", &events[..])
        .map(
            "consent_collection",
            vec![(
                "payment_method_reuse_agreement".to_owned(),
                Value::Map(vec![("position".to_owned(), "auto".into())]),
            )],
        )
        .field(
            "tax_id_data",
            Value::List(vec![Value::Map(vec![
                ("type".to_owned(), "eu_vat".into()),
                ("value".to_owned(), "DE123".into()),
            ])]),
        )
        .field_opt::<&str>("statement_descriptor", None)
        .field_opt("days_until_due", Some(30_i64))
        .map("empty", Vec::new());
    let expected = [
        ("amount", "-7725"),
        ("auto_advance", "false"),
        ("metadata[om_line_id]", "l1"),
        ("metadata[om_line_type]", "line"),
        ("enabled_events[0]", "invoice.paid"),
        ("enabled_events[1]", "invoice.voided"),
        (
            "consent_collection[payment_method_reuse_agreement][position]",
            "auto",
        ),
        ("tax_id_data[0][type]", "eu_vat"),
        ("tax_id_data[0][value]", "DE123"),
        ("days_until_due", "30"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(form.pairs(), expected);
}

#[test]
fn encoding_escapes_values_and_keeps_brackets_in_keys() {
    let cases: &[(Form, &str)] = &[
        (Form::new(), ""),
        (Form::new().field("a", "b"), "a=b"),
        (
            Form::new().field("description", "UBP (32.20 x $100) & more"),
            "description=UBP%20%2832.20%20x%20%24100%29%20%26%20more",
        ),
        (
            Form::new().field("metadata", Value::Map(vec![("k=1".to_owned(), "ü".into())])),
            "metadata[k%3D1]=%C3%BC",
        ),
        (
            Form::new().field("expand", Value::List(vec!["tax".into(), "a.b".into()])),
            "expand[0]=tax&expand[1]=a.b",
        ),
        (Form::new().field("metadata", ""), "metadata="),
    ];
    for (form, expected) in cases {
        assert_eq!(&form.encode(), expected, "{form:?}");
    }
}

#[test]
fn an_ordinary_form_decoder_reads_back_exactly_the_pairs() {
    let form = Form::new()
        .field("description", "a+b=c&d%e [x] \"q\" ünï 🦀")
        .field(
            "metadata",
            Value::Map(vec![("om line".to_owned(), "  ".into())]),
        );
    let decoded: Vec<(String, String)> =
        serde_urlencoded::from_str(&form.encode()).expect("decodes");
    assert_eq!(decoded, form.pairs());
}
