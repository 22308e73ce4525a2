//! Signed webhook deliveries: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`,
//! POSTed as JSON by one background thread, in order, retried a few times.

use crate::limits::{WEBHOOK_ATTEMPTS_MAX, WEBHOOK_RETRY_BACKOFF_MS, WEBHOOK_TIMEOUT_MS};
use crate::state::{Delivery, Store};
use hmac::{KeyInit, Mac};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The `Stripe-Signature` header for `body` signed with `secret` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

/// Whether `header` carries a valid `v1` signature of `body` (no timestamp tolerance check).
pub fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let expected = hex(&mac(secret, timestamp, body));
    signatures.iter().any(|s| *s == expected)
}

fn mac(secret: &str, timestamp: i64, body: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return Vec::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One webhook POST, ready to send (or to tamper with in a test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub event_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub body: String,
    /// The `Stripe-Signature` header value.
    pub signature: String,
}

impl WebhookRequest {
    /// The same request signed with a wrong secret.
    pub fn with_bad_signature(mut self) -> WebhookRequest {
        let timestamp = self
            .signature
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        self.signature = sign("whsec_not_the_secret", timestamp, &self.body);
        self
    }

    /// POSTs it once; the receiver's status, or the transport error.
    pub fn send(&self) -> Result<u16, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(WEBHOOK_TIMEOUT_MS)))
            .max_redirects(0)
            .build()
            .into();
        agent
            .post(&self.url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Stripe-Signature", &self.signature)
            .header(
                "User-Agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .send(self.body.as_bytes())
            .map(|response| response.status().as_u16())
            .map_err(|error| error.to_string())
    }
}

/// Records one attempt's outcome in the store.
pub fn record(
    store: &Mutex<Store>,
    request: &WebhookRequest,
    attempt: u32,
    outcome: &Result<u16, String>,
) {
    store.lock().deliveries.push(Delivery {
        event_id: request.event_id.clone(),
        endpoint_id: request.endpoint_id.clone(),
        attempt,
        status: outcome.as_ref().ok().copied(),
        error: outcome.as_ref().err().cloned(),
    });
}

/// The background sender; dropping it lets its thread finish the queue and end.
pub struct Sender {
    jobs: mpsc::Sender<WebhookRequest>,
    pending: Arc<AtomicUsize>,
}

impl Sender {
    pub fn start(store: Arc<Mutex<Store>>) -> std::io::Result<Sender> {
        let (jobs, queue) = mpsc::channel::<WebhookRequest>();
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("fake-stripe-webhooks".to_owned())
            .spawn(move || {
                while let Ok(request) = queue.recv() {
                    deliver(&store, &request);
                    counter.fetch_sub(1, Ordering::SeqCst);
                }
            })?;
        Ok(Sender { jobs, pending })
    }

    pub fn enqueue(&self, request: WebhookRequest) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(request).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Deliveries queued or in progress.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

fn deliver(store: &Mutex<Store>, request: &WebhookRequest) {
    let mut backoff = Duration::from_millis(WEBHOOK_RETRY_BACKOFF_MS);
    for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
        let outcome = request.send();
        record(store, request, attempt, &outcome);
        if matches!(outcome, Ok(status) if (200..300).contains(&status)) {
            return;
        }
        tracing::debug!(event = %request.event_id, attempt, ?outcome, "Webhook delivery failed.");
        if attempt < WEBHOOK_ATTEMPTS_MAX {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let header = sign("whsec_abc", 1_700_000_000, "{\"id\":\"evt_1\"}");
        assert!(verify("whsec_abc", &header, "{\"id\":\"evt_1\"}"));
        assert!(!verify("whsec_abd", &header, "{\"id\":\"evt_1\"}"));
        assert!(!verify("whsec_abc", &header, "{\"id\":\"evt_2\"}"));
        assert!(verify(
            "whsec_abc",
            &format!("v1=00,{header},v0=ff"),
            "{\"id\":\"evt_1\"}"
        ));
    }

    /// Stripe's documented example: HMAC-SHA256 of "{t}.{body}" keyed with the secret string.
    #[test]
    fn the_signature_is_hmac_sha256_hex_of_timestamp_dot_body() {
        let header = sign("key", 1, "x");
        // echo -n "1.x" | openssl dgst -sha256 -hmac key
        assert_eq!(
            header,
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }
}
