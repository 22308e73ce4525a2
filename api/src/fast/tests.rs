use super::*;
use crate::routes::entitlements::value_json;
use chrono::{TimeZone, Utc};
use metron_actors::customer::ValueAt;
use metron_engine::credit::Value;
use proptest::prelude::*;
use std::str::FromStr;

/// The bytes `serde_json` prints for the router's tree of the same answer.
fn through_tree(answer: &ValueAnswer, flavor: Flavor) -> String {
    serde_json::to_string(&value_json(answer, flavor)).expect("serialize")
}

fn written(answer: &ValueAnswer, flavor: Flavor) -> String {
    let mut out = Vec::new();
    write_value(&mut out, answer, flavor);
    String::from_utf8(out).expect("utf-8")
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

fn metered(has_access: bool, numbers: [&str; 4], grants: &[(&str, &str)]) -> ValueAnswer {
    let t = Utc
        .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .single()
        .expect("time");
    ValueAnswer::Metered {
        has_access,
        value: ValueAt {
            until: t,
            value: Value {
                balance: dec(numbers[0]),
                usage: dec(numbers[1]),
                overage: dec(numbers[2]),
                total_available_grant_amount: dec(numbers[3]),
                grant_balances: grants
                    .iter()
                    .map(|(id, b)| ((*id).to_owned(), dec(b)))
                    .collect(),
            },
            period: (t, t),
        },
    }
}

#[test]
fn paths_match_as_the_router_matches_them() {
    use ApiKind::*;
    let check = |api, owner, ent| Some(Check { api, owner, ent });
    let cases: &[(&str, Option<Check<'_>>)] = &[
        (
            "/api/v2/customers/c-1/entitlements/tokens/value",
            check(V2Customer, "c-1", "tokens"),
        ),
        (
            "/api/v1/subjects/s.1/entitlements/01JABC/value",
            check(V1Subject, "s.1", "01JABC"),
        ),
        (
            "/api/v1/customers/c/entitlements/f/value",
            check(V1Customer, "c", "f"),
        ),
        // A segment named like the separators is still a segment.
        (
            "/api/v2/customers/value/entitlements/entitlements/value",
            check(V2Customer, "value", "entitlements"),
        ),
        // Left to the router: percent-encoded, empty or nested segments, other routes,
        // trailing slashes, other API versions.
        ("/api/v2/customers/c%2D1/entitlements/f/value", None),
        ("/api/v2/customers//entitlements/f/value", None),
        ("/api/v2/customers/c/entitlements//value", None),
        ("/api/v2/customers/c/x/entitlements/f/value", None),
        ("/api/v2/customers/c/entitlements/f/g/value", None),
        ("/api/v2/customers/c/entitlements/f/value/", None),
        ("/api/v2/customers/c/entitlements/f", None),
        ("/api/v2/customers/c/entitlements/f/history", None),
        ("/api/v1/customers/c/access", None),
        ("/api/v2/subjects/s/entitlements/f/value", None),
        ("/api/v3/customers/c/entitlements/f/value", None),
        ("/api/v2/customers/c/entitlements/value", None),
        ("", None),
    ];
    for (path, want) in cases {
        assert_eq!(match_path(path), *want, "{path}");
    }
}

#[test]
fn written_values_are_the_trees_bytes() {
    let answers = [
        metered(
            true,
            ["1000000", "0", "0", "1000000"],
            &[("01G1", "1000000")],
        ),
        metered(
            false,
            ["0.000", "-0", "12.50", "0"],
            &[("a", "0"), ("b", "-3.25")],
        ),
        metered(
            true,
            [
                "79228162514264337593543950335",
                "-0.0000000000000000000000000001",
                "7.9228162514264337593543950335",
                "1e-5",
            ],
            &[],
        ),
        // Ids that need escaping, out of order and repeated: a map keeps the last.
        metered(
            true,
            ["5", "1", "0", "6"],
            &[("z\"q", "1"), ("a\\b", "2"), ("é\u{1}", "3"), ("a\\b", "4")],
        ),
        ValueAnswer::Inactive,
        ValueAnswer::Past("01G1".into()),
        ValueAnswer::Granted { config: None },
        ValueAnswer::Granted {
            config: Some(r#"{"seats": 5, "note": "a\"b\n"}"#.into()),
        },
    ];
    for answer in &answers {
        for flavor in [Flavor::V1, Flavor::V2] {
            assert_eq!(
                written(answer, flavor),
                through_tree(answer, flavor),
                "{flavor:?}"
            );
        }
    }
}

proptest! {
    #[test]
    fn any_metered_value_is_written_as_the_tree(
        numbers in proptest::array::uniform4((any::<i64>(), 0u32..=28)),
        grants in proptest::collection::vec(("[a-zA-Z0-9\"\\\\é]{0,6}", any::<i64>(), 0u32..=28), 0..4),
        has_access in any::<bool>(),
    ) {
        let d = |(m, s): (i64, u32)| Decimal::new(m, s).to_string();
        let numbers = numbers.map(d);
        let grants: Vec<(String, String)> =
            grants.into_iter().map(|(id, m, s)| (id, d((m, s)))).collect();
        let grants: Vec<(&str, &str)> =
            grants.iter().map(|(id, b)| (id.as_str(), b.as_str())).collect();
        let answer = metered(
            has_access,
            [&numbers[0], &numbers[1], &numbers[2], &numbers[3]],
            &grants,
        );
        for flavor in [Flavor::V1, Flavor::V2] {
            prop_assert_eq!(written(&answer, flavor), through_tree(&answer, flavor));
        }
    }
}
