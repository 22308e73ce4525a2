//! Exact values end to end: random decimals of up to 20 integer and 18 fractional digits,
//! sent as JSON numbers (and some as numeric strings), give SUM, AVG, MIN and MAX equal to
//! a reference computed with arbitrary-precision integers, from the live state and again
//! after a restart, when every answer comes from the checkpoint's Parquet files. Values
//! that cannot be kept exactly get their `validationError`.
//!
//! `METRON_PROP_SEED=<u64>` replays a run (the seed is printed).

use crate::server::*;
use chrono::{Duration, Utc};
use num_bigint::BigInt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;

const CONFIG: &str = r#"
meters:
  - { slug: v_sum, eventType: exact, aggregation: SUM, valueProperty: $.v }
  - { slug: v_avg, eventType: exact, aggregation: AVG, valueProperty: $.v }
  - { slug: v_min, eventType: exact, aggregation: MIN, valueProperty: $.v }
  - { slug: v_max, eventType: exact, aggregation: MAX, valueProperty: $.v }
partitions: 4
checkpointInterval: 1h
"#;

/// Fractional digits of the reference's fixed point.
const SCALE: u32 = 18;

/// A random decimal text with up to 20 integer and 18 fractional digits, and its value
/// × 10^18. Some are in exponent form, some have trailing zeros.
fn random_value(rng: &mut StdRng) -> (String, BigInt) {
    let int_digits = rng.random_range(0..=20);
    let frac_digits = rng.random_range(0..=18);
    let digits = |rng: &mut StdRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    let int = match digits(rng, int_digits).trim_start_matches('0') {
        "" => "0".to_owned(),
        s => s.to_owned(),
    };
    let frac = digits(rng, frac_digits);
    let negative = rng.random_bool(0.3);
    let sign = if negative { "-" } else { "" };
    let scaled: BigInt = format!("{int}{frac:0<18}").parse().unwrap_or_default();
    let scaled = if negative { -scaled } else { scaled };
    let text = match rng.random_range(0..4) {
        // Exponent form: all digits after the point, exponent = integer digits.
        0 if int != "0" => format!("{sign}0.{int}{frac}e{}", int.len()),
        1 => format!("{sign}{int}.{frac}000"),
        _ if frac.is_empty() => format!("{sign}{int}"),
        _ => format!("{sign}{int}.{frac}"),
    };
    (text, scaled)
}

/// The plain decimal text of `raw × 10^-18`, as Metron prints numbers.
fn text_of(raw: &BigInt) -> String {
    let negative = raw.sign() == num_bigint::Sign::Minus;
    let digits = raw.magnitude().to_string();
    let padded = format!("{digits:0>19}");
    let (int, frac) = padded.split_at(padded.len() - SCALE as usize);
    let frac = frac.trim_end_matches('0');
    let sign = if negative && raw != &BigInt::from(0) {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// sum ÷ n rounded half to even at 18 fractional digits.
fn average(sum: &BigInt, n: usize) -> BigInt {
    let n = BigInt::from(n);
    let quotient = sum / &n; // truncates toward zero
    let remainder = sum - &quotient * &n;
    let twice = remainder.magnitude() * 2u32;
    let away = match twice.cmp(n.magnitude()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => (&quotient % 2u32) != BigInt::from(0),
        std::cmp::Ordering::Less => false,
    };
    if !away {
        quotient
    } else if sum.sign() == num_bigint::Sign::Minus {
        quotient - 1
    } else {
        quotient + 1
    }
}

/// meter slug → subject → expected value text.
type Expected = BTreeMap<&'static str, BTreeMap<String, String>>;

/// Every meter's value per subject, as the exact text of the JSON number.
fn answers(server: &TestServer) -> Result<Expected, String> {
    let mut out = Expected::new();
    for slug in ["v_sum", "v_avg", "v_min", "v_max"] {
        let resp = server.query(slug, &[("groupBy", "subject".into())]);
        if resp.status != 200 {
            return Err(format!("{slug}: {resp}"));
        }
        let body = resp.try_json()?;
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        let mut values = BTreeMap::new();
        for row in rows {
            let subject = row["subject"].as_str().unwrap_or_default().to_owned();
            // serde_json keeps a number's text (arbitrary_precision): compare it exactly.
            let Value::Number(value) = &row["value"] else {
                return Err(format!("{slug}: value is not a number: {row}"));
            };
            values.insert(subject, value.as_str().to_owned());
        }
        out.insert(slug, values);
    }
    Ok(out)
}

#[test]
fn sums_averages_minima_and_maxima_are_exact_before_and_after_a_checkpoint() {
    let seed: u64 = std::env::var("METRON_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>().into());
    println!("exact values: seed {seed} (replay with METRON_PROP_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = TestServer::builder().with_config(CONFIG).start();
    let t0 = Utc::now() - Duration::hours(3);

    let mut expected = Expected::new();
    let mut body = Vec::new();
    let mut total = 0;
    for s in 0..40 {
        let subject = format!("case-{s}");
        let n = rng.random_range(1..=30);
        let values: Vec<(String, BigInt)> = (0..n).map(|_| random_value(&mut rng)).collect();
        for (i, (text, _)) in values.iter().enumerate() {
            // Every fifth value as a numeric string: the same exact reading.
            let value = if i % 5 == 4 {
                format!("\"{text}\"")
            } else {
                text.clone()
            };
            let time = t0 + Duration::seconds(rng.random_range(0..3 * 3600));
            body.push(format!(
                r#"{{"specversion":"1.0","id":"{subject}-{i}","source":"exact","type":"exact","subject":"{subject}","time":"{}","data":{{"v":{value}}}}}"#,
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
            total += 1;
        }
        let sum: BigInt = values.iter().map(|(_, v)| v).sum();
        let min = values
            .iter()
            .map(|(_, v)| v)
            .min()
            .cloned()
            .unwrap_or_default();
        let max = values
            .iter()
            .map(|(_, v)| v)
            .max()
            .cloned()
            .unwrap_or_default();
        for (slug, value) in [
            ("v_sum", text_of(&sum)),
            ("v_avg", text_of(&average(&sum, n))),
            ("v_min", text_of(&min)),
            ("v_max", text_of(&max)),
        ] {
            expected
                .entry(slug)
                .or_default()
                .insert(subject.clone(), value);
        }
    }
    // Values that cannot be kept exactly: counted nowhere, each with its validationError.
    let out_of_range = [
        "0.0000000000000000001",
        "123456789012345678901234567890123456789",
        "1e38",
        "-1.0000000000000000001",
    ];
    for (i, text) in out_of_range.iter().enumerate() {
        body.push(format!(
            r#"{{"specversion":"1.0","id":"bad-{i}","source":"exact","type":"exact","subject":"bad","time":"{}","data":{{"v":{text}}}}}"#,
            t0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
    }
    let resp = server
        .post("/api/v1/events")
        .body(
            "application/cloudevents-batch+json",
            format!("[{}]", body.join(",")),
        )
        .send();
    assert_eq!(resp.status, 204, "{resp}");
    println!(
        "{total} values over 40 subjects, {} out of range",
        out_of_range.len()
    );

    // Live state (no checkpoint yet: the interval is an hour).
    let live = try_eventually(std::time::Duration::from_secs(60), || {
        let got = answers(&server)?;
        if got == expected {
            Ok(got)
        } else {
            Err(format!("{got:#?}"))
        }
    });
    if let Err(got) = live {
        panic!("live answers differ from the reference\nwant {expected:#?}\ngot {got}");
    }

    // Restart: SIGTERM writes the final checkpoint; the new process reads Parquet.
    server.restart();
    let after = answers(&server).unwrap_or_else(|e| panic!("after restart: {e}"));
    assert_eq!(after, expected, "answers after the checkpoint differ");

    let listing = server
        .get("/api/v1/events")
        .query("subject", "bad")
        .query("from", (t0 - Duration::minutes(1)).to_rfc3339())
        .send();
    assert_eq!(listing.status, 200, "{listing}");
    let events = listing.json();
    let items = events.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), out_of_range.len(), "{events}");
    for item in items {
        let error = item["validationError"].as_str().unwrap_or_default();
        assert!(
            error.contains("cannot be kept exactly"),
            "event {} has validationError {error:?}",
            item["id"]
        );
    }
}
