//! Outgoing webhooks, signed the Standard Webhooks / Svix way.
//!
//! A [`Delivery`] is one POST of a JSON body to a URL, carrying the channel's custom headers
//! and both header families (`webhook-*` and `svix-*`) with the signature
//! `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>`. [`send`] makes exactly one
//! attempt and reports what happened; retries and their schedule belong to the caller.
//! Sending is blocking (ureq): run it on a blocking thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use std::time::{Duration, Instant};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bounds of a signing key in bytes (after base64 decoding), as OpenMeter checks them.
pub const SECRET_BYTES_MIN: usize = 24;
pub const SECRET_BYTES_MAX: usize = 64;
/// At most this much of a receiver's answer is kept in a delivery attempt.
pub const RESPONSE_BODY_BYTES_MAX: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the signing secret is not valid base64")]
    NotBase64,
    #[error(
        "the signing secret is {bytes} bytes long; it must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX}"
    )]
    Length { bytes: usize },
}

/// The key bytes of a secret (`whsec_` prefix optional), checked for length.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()) {
        return Err(SecretError::Length { bytes: key.len() });
    }
    Ok(key)
}

/// A new random secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `v1,<base64>` signature of a message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let key = secret_key(secret)?;
    // HMAC accepts keys of any length, so this cannot fail for a checked key.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)
        .map_err(|_| SecretError::Length { bytes: key.len() })?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    /// The message id (`webhook-id`): the notification event's id, stable across retries.
    pub message_id: String,
    /// Seconds since the epoch (`webhook-timestamp`), of this attempt.
    pub timestamp: i64,
    pub body: Vec<u8>,
    pub secret: String,
    pub custom_headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, absent when no answer came (connection refused, timeout, bad URL).
    pub status: Option<u16>,
    /// The answer's body (truncated), or the transport error.
    pub body: String,
    pub duration_ms: u64,
}

impl Outcome {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The headers of a delivery, in sending order: custom headers first, then content type and
/// both signature families (which a custom header cannot override).
pub fn headers(delivery: &Delivery) -> Result<Vec<(String, String)>, SecretError> {
    let signature = sign(
        &delivery.secret,
        &delivery.message_id,
        delivery.timestamp,
        &delivery.body,
    )?;
    let reserved = |name: &str| {
        let name = name.to_ascii_lowercase();
        name == "content-type" || name.starts_with("webhook-") || name.starts_with("svix-")
    };
    let mut out: Vec<(String, String)> = delivery
        .custom_headers
        .iter()
        .filter(|(name, _)| !reserved(name))
        .cloned()
        .collect();
    let timestamp = delivery.timestamp.to_string();
    out.push(("content-type".into(), "application/json".into()));
    for family in ["webhook", "svix"] {
        out.push((format!("{family}-id"), delivery.message_id.clone()));
        out.push((format!("{family}-timestamp"), timestamp.clone()));
        out.push((format!("{family}-signature"), signature.clone()));
    }
    Ok(out)
}

/// Makes one attempt. Never panics; every failure is an [`Outcome`] without a success status.
pub fn send(delivery: &Delivery) -> Outcome {
    let started = Instant::now();
    let elapsed =
        |started: Instant| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let headers = match headers(delivery) {
        Ok(h) => h,
        Err(error) => {
            return Outcome {
                status: None,
                body: error.to_string(),
                duration_ms: 0,
            };
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(delivery.timeout))
        .max_redirects(0)
        .build()
        .into();
    let mut request = agent.post(&delivery.url);
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send(delivery.body.as_slice()) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(RESPONSE_BODY_BYTES_MAX)
                .read_to_string()
                .unwrap_or_default();
            Outcome {
                status: Some(status),
                body,
                duration_ms: elapsed(started),
            }
        }
        Err(error) => Outcome {
            status: None,
            body: error.to_string(),
            duration_ms: elapsed(started),
        },
    }
}

#[cfg(test)]
mod tests;
