//! `Stripe-Signature` verification: a vector computed outside Rust, several v1 signatures, v0
//! ignored, tolerance edges both ways, tampering, and header shapes.

use super::*;
use chrono::TimeZone;

const SECRET: &str = "whsec_test_secret";
const T: i64 = 1_700_000_000;
const PAYLOAD: &[u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid","api_version":"2024-09-30.acacia","created":1700000000,"data":{"object":{"id":"in_1","object":"invoice","status":"paid","total":7725}}}"#;
/// `hmac.new(b"whsec_test_secret", b"1700000000." + PAYLOAD, hashlib.sha256).hexdigest()`.
const V1: &str = "a430245bdcfc8cc2a4df444e03f80941fd5087190289a502df30da70b455435a";

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().expect("valid time")
}

#[test]
fn sign_matches_a_signature_computed_with_python_hmac() {
    assert_eq!(sign(PAYLOAD, SECRET, T), format!("t={T},v1={V1}"));
}

#[test]
fn a_valid_signature_yields_the_event() {
    let event = verify(
        PAYLOAD,
        &sign(PAYLOAD, SECRET, T),
        SECRET,
        TOLERANCE_DEFAULT,
        at(T),
    )
    .expect("verifies");
    assert_eq!(event.id, "evt_1");
    assert_eq!(event.kind, "invoice.paid");
    assert_eq!(event.created, T);
    let invoice: crate::stripe::Invoice = event.object().expect("an invoice");
    assert_eq!((invoice.id.as_str(), invoice.total), ("in_1", 7725));
}

#[test]
fn any_one_of_several_v1_signatures_suffices_and_v0_is_ignored() {
    let wrong = "0".repeat(64);
    let cases: &[(String, Result<(), SignatureError>)] = &[
        (format!("t={T},v1={wrong},v1={V1}"), Ok(())),
        (format!("t={T},v1={V1},v1={wrong}"), Ok(())),
        (format!("v1={V1}, t={T}, v0={wrong}"), Ok(())),
        (format!("t={T},v1={}", V1.to_uppercase()), Ok(())),
        (format!("t={T},v0={V1}"), Err(SignatureError::NoSignature)),
        (
            format!("t={T},v1={wrong},v1=zz,v1=abc"),
            Err(SignatureError::Mismatch),
        ),
        (format!("v1={V1}"), Err(SignatureError::Timestamp)),
        (format!("t=soon,v1={V1}"), Err(SignatureError::Timestamp)),
        (String::new(), Err(SignatureError::Timestamp)),
        // The timestamp is signed: moving it breaks the signature.
        (
            format!("t={},v1={V1}", T + 1),
            Err(SignatureError::Mismatch),
        ),
    ];
    for (header, expected) in cases {
        let got = verify(PAYLOAD, header, SECRET, TOLERANCE_DEFAULT, at(T)).map(drop);
        assert_eq!(&got, expected, "{header}");
    }
}

#[test]
fn a_tampered_body_or_another_secret_fails() {
    let header = sign(PAYLOAD, SECRET, T);
    let mut tampered = PAYLOAD.to_vec();
    let last_digit = tampered.len() - 5;
    tampered[last_digit] = b'6';
    assert_eq!(
        verify(&tampered, &header, SECRET, TOLERANCE_DEFAULT, at(T)).map(drop),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify(PAYLOAD, &header, "whsec_other", TOLERANCE_DEFAULT, at(T)).map(drop),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn the_timestamp_must_be_within_the_tolerance_either_way() {
    let header = sign(PAYLOAD, SECRET, T);
    let cases = [
        (T + 300, Ok(())),
        (T - 300, Ok(())),
        (
            T + 301,
            Err(SignatureError::Tolerance {
                age_secs: 301,
                tolerance_secs: 300,
            }),
        ),
        (
            T - 301,
            Err(SignatureError::Tolerance {
                age_secs: -301,
                tolerance_secs: 300,
            }),
        ),
    ];
    for (now, expected) in cases {
        let got = verify(PAYLOAD, &header, SECRET, TOLERANCE_DEFAULT, at(now)).map(drop);
        assert_eq!(got, expected, "now {now}");
    }
    // OpenMeter's 10,000 h accepts what 300 s refuses.
    let long = Duration::from_secs(10_000 * 3600);
    assert!(verify(PAYLOAD, &header, SECRET, long, at(T + 86_400)).is_ok());
}

#[test]
fn a_signed_payload_must_still_be_an_acacia_event() {
    let cases: &[(&[u8], bool)] = &[
        (br#"{"id":"evt_2","type":"invoice.paid"}"#, true),
        (
            br#"{"id":"evt_2","type":"invoice.paid","api_version":"2024-12-18.acacia"}"#,
            true,
        ),
        (
            br#"{"id":"evt_2","type":"invoice.paid","api_version":"2025-03-31.basil"}"#,
            false,
        ),
        (b"not json", false),
    ];
    for (payload, ok) in cases {
        let got = verify(
            payload,
            &sign(payload, SECRET, T),
            SECRET,
            TOLERANCE_DEFAULT,
            at(T),
        );
        assert_eq!(got.is_ok(), *ok, "{}", String::from_utf8_lossy(payload));
    }
}
