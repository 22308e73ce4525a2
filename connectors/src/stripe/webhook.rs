//! Incoming Stripe webhooks: the `Stripe-Signature` check.
//!
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]` where each `v1` is
//! `lower-hex(HMAC-SHA256(key = the endpoint secret "whsec_…" as bytes, "{t}.{raw body}"))`.
//! Any one matching `v1` is enough (Stripe sends several while a secret rolls), `v0` is
//! ignored, comparisons are constant-time, and the timestamp must be within the tolerance of
//! `now` (Stripe's SDKs use 300 s; OpenMeter disables it with 10,000 h, we do not).

use super::config::API_VERSION;
use super::types::Event;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use std::time::Duration;

/// stripe-go's, stripe-node's and async-stripe's default tolerance.
pub const TOLERANCE_DEFAULT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Stripe-Signature header has no valid timestamp `t`")]
    Timestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature matches the payload")]
    Mismatch,
    #[error(
        "the signature is {age_secs} s old (negative: ahead), past the {tolerance_secs} s tolerance"
    )]
    Tolerance { age_secs: i64, tolerance_secs: u64 },
    #[error("the payload is not a Stripe event: {message}")]
    Payload { message: String },
    #[error("the event's API version {version} is not an acacia version")]
    ApiVersion { version: String },
}

/// The event, once the header proves the payload came from Stripe within `tolerance` of `now`.
/// An event of another API generation than acacia is refused, as stripe-go v80 does.
pub fn verify(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    tolerance: Duration,
    now: DateTime<Utc>,
) -> Result<Event, SignatureError> {
    let header = parse_header(signature_header)?;
    if header.signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let Some(mac) = message_mac(payload, secret, header.timestamp) else {
        return Err(SignatureError::Mismatch);
    };
    let matches = header
        .signatures
        .iter()
        .filter_map(|hex| decode_hex(hex))
        .any(|bytes| mac.clone().verify_slice(&bytes).is_ok());
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let age_secs = now.timestamp().saturating_sub(header.timestamp);
    let tolerance_secs = tolerance.as_secs();
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Tolerance {
            age_secs,
            tolerance_secs,
        });
    }
    let event: Event = serde_json::from_slice(payload).map_err(|e| SignatureError::Payload {
        message: e.to_string(),
    })?;
    if let Some(version) = event.api_version.as_deref()
        && !version.is_empty()
        && !is_acacia(version)
    {
        return Err(SignatureError::ApiVersion {
            version: version.to_owned(),
        });
    }
    Ok(event)
}

/// The `Stripe-Signature` header Stripe would send for this payload at unix time `t` (tests,
/// and the fake server's deliveries).
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    let hex = message_mac(payload, secret, t)
        .map(|mac| encode_hex(&mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={hex}")
}

fn is_acacia(version: &str) -> bool {
    let generation = API_VERSION.rsplit('.').next().unwrap_or_default();
    version.rsplit_once('.').map(|(_, g)| g) == Some(generation)
}

struct Header<'a> {
    timestamp: i64,
    signatures: Vec<&'a str>,
}

fn parse_header(header: &str) -> Result<Header<'_>, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((name, value)) = item.trim().split_once('=') else {
            continue;
        };
        match name {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Timestamp)?;
    Ok(Header {
        timestamp,
        signatures,
    })
}

/// The HMAC of `"{t}.{payload}"`; HMAC takes keys of every length, so this is always `Some`.
fn message_mac(payload: &[u8], secret: &str, t: i64) -> Option<hmac::Hmac<sha2::Sha256>> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac)
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests;
