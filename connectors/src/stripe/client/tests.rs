//! Retry classification and backoff (pure), error bodies, config checks, and the wire: headers,
//! form bodies, retries with one idempotency key, pagination, against a scripted local server.

use super::*;
use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

fn api(status: u16, code: Option<&str>, should_retry: Option<bool>) -> Error {
    Error::Api {
        status,
        kind: "invalid_request_error".to_owned(),
        code: code.map(str::to_owned),
        message: String::new(),
        param: None,
        request_id: None,
        should_retry,
    }
}

#[test]
fn retryable_failures_follow_stripe_gos_rule() {
    let cases = [
        (api(409, None, None), true),
        (api(409, Some("idempotency_key_in_use"), None), true),
        (api(429, Some("lock_timeout"), None), true),
        (api(429, Some("rate_limit"), None), false),
        (api(429, None, None), false),
        (api(500, None, None), true),
        (api(502, None, None), true),
        (api(503, None, None), true),
        (api(400, Some("parameter_missing"), None), false),
        (api(402, None, None), false),
        (api(404, Some("resource_missing"), None), false),
        // The header always wins.
        (api(500, None, Some(false)), false),
        (api(409, None, Some(false)), false),
        (api(429, Some("lock_timeout"), Some(false)), false),
        (api(400, None, Some(true)), true),
        (api(429, Some("rate_limit"), Some(true)), true),
        (
            Error::Transport {
                method: "POST",
                path: "/v1/invoices".to_owned(),
                message: "reset".to_owned(),
            },
            true,
        ),
        (
            Error::Timeout {
                method: "POST",
                path: "/v1/invoices".to_owned(),
                timeout: Duration::from_secs(1),
            },
            true,
        ),
        (
            Error::Unauthorized {
                message: String::new(),
                request_id: None,
            },
            false,
        ),
        (
            Error::Decode {
                method: "GET",
                path: "/v1/account".to_owned(),
                status: 200,
                message: String::new(),
            },
            false,
        ),
        (
            Error::Request {
                method: "GET",
                path: "/v1/account".to_owned(),
                message: String::new(),
            },
            false,
        ),
    ];
    for (error, retryable) in cases {
        assert_eq!(error.is_retryable(), retryable, "{error:?}");
    }
    assert!(api(404, None, None).not_found());
    assert!(api(400, Some("resource_missing"), None).not_found());
    assert!(!api(400, Some("invoice_not_editable"), None).not_found());
}

#[test]
fn backoff_doubles_from_initial_to_max_with_at_most_a_quarter_of_jitter() {
    let ms = Duration::from_millis;
    let (initial, max) = (ms(500), ms(5000));
    let cases = [
        (0, 0.0, ms(500)),
        (0, 0.999, ms(500)),
        (1, 0.0, ms(750)),
        (1, 1.0, ms(1000)),
        (2, 0.5, ms(1750)),
        (3, 1.0, ms(4000)),
        (4, 1.0, ms(5000)),
        (4, 0.0, ms(3750)),
        (40, 1.0, ms(5000)),
        (u32::MAX, 0.0, ms(3750)),
        (1, f64::NAN, ms(750)),
    ];
    for (retry, jitter, expected) in cases {
        assert_eq!(
            backoff(retry, initial, max, jitter),
            expected,
            "retry {retry} jitter {jitter}"
        );
    }
}

#[test]
fn error_bodies_become_typed_errors() {
    let body = br#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such invoice: 'in_x'","param":"id"}}"#;
    match api_error(404, body, Some("req_1".to_owned()), None) {
        Error::Api {
            status,
            kind,
            code,
            message,
            param,
            request_id,
            should_retry,
        } => {
            assert_eq!(status, 404);
            assert_eq!(kind, "invalid_request_error");
            assert_eq!(code.as_deref(), Some("resource_missing"));
            assert_eq!(message, "No such invoice: 'in_x'");
            assert_eq!(param.as_deref(), Some("id"));
            assert_eq!(request_id.as_deref(), Some("req_1"));
            assert_eq!(should_retry, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    let gateway = api_error(502, b"<html>Bad Gateway</html>", None, None);
    assert!(matches!(&gateway, Error::Api { status: 502, kind, .. } if kind == "api_error"));
    assert!(gateway.is_retryable());
    let unauthorized = api_error(401, br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****abcd"}}"#, None, None);
    assert!(
        matches!(unauthorized, Error::Unauthorized { ref message, .. } if message.starts_with("Invalid API Key"))
    );
}

#[test]
fn the_config_is_checked_and_the_key_never_printed() {
    let bad = [
        ("ftp://api.stripe.com", "sk_test_1"),
        ("https://", "sk_test_1"),
        ("https://api.stripe.com/v1", "sk_test_1"),
        ("https://api.stripe.com", ""),
        ("https://api.stripe.com", "sk_test 1"),
    ];
    for (base, key) in bad {
        let config = StripeConfig {
            api_base: base.to_owned(),
            ..StripeConfig::new(key)
        };
        assert!(
            matches!(StripeClient::new(config), Err(Error::Config { .. })),
            "{base} {key:?}"
        );
    }
    let config = StripeConfig {
        api_base: "http://127.0.0.1:1/".to_owned(),
        ..StripeConfig::new("sk_test_0123456789abcdef")
    };
    let client = StripeClient::new(config).expect("valid");
    assert_eq!(client.config().api_base, "http://127.0.0.1:1");
    let printed = format!("{client:?}");
    assert!(printed.contains("sk_test_***def"), "{printed}");
    assert!(!printed.contains("0123456789abcdef"), "{printed}");
    assert!(client.config().is_test_mode());
}

// ---------------------------------------------------------------------------------------------
// A scripted server: one connection per reply, every request recorded.

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    Answer(u16, &'static [(&'static str, &'static str)], &'static str),
    /// Reads the request and closes the connection without a word.
    Hangup,
}

struct Scripted {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).expect("header");
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((n, v)) = header.split_once(':') {
                        headers.push((n.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                recorded.lock().push(Recorded {
                    method,
                    target,
                    headers,
                    body: String::from_utf8(body).expect("utf-8"),
                });
                let mut stream = reader.into_inner();
                match reply {
                    Reply::Hangup => drop(stream),
                    Reply::Answer(status, extra, body) => {
                        let mut text = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        for (n, v) in extra {
                            text.push_str(&format!("{n}: {v}\r\n"));
                        }
                        text.push_str("\r\n");
                        text.push_str(body);
                        stream.write_all(text.as_bytes()).expect("writes");
                    }
                }
            }
        });
        Self {
            base,
            requests,
            thread: Some(thread),
        }
    }

    fn client(&self, retries_max: u32) -> StripeClient {
        StripeClient::new(StripeConfig {
            api_base: self.base.clone(),
            retries_max,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            timeout: Duration::from_secs(10),
            ..StripeConfig::new("sk_test_abc")
        })
        .expect("client")
    }

    /// The requests, once the script has run out.
    fn finish(mut self) -> Vec<Recorded> {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
        self.requests.lock().clone()
    }
}

const ITEM: &str = r#"{"id":"ii_1","object":"invoiceitem","amount":7725,"invoice":"in_1"}"#;
const LOCK_TIMEOUT: &str =
    r#"{"error":{"type":"invalid_request_error","code":"lock_timeout","message":"locked"}}"#;
const RATE_LIMIT: &str =
    r#"{"error":{"type":"invalid_request_error","code":"rate_limit","message":"slow down"}}"#;
const API_ERROR: &str = r#"{"error":{"type":"api_error","message":"oops"}}"#;

fn item_params() -> InvoiceItemCreate {
    InvoiceItemCreate {
        customer: "cus_1".to_owned(),
        invoice: Some("in_1".to_owned()),
        amount: 7725,
        description: Some("Usage (2 x $1)".to_owned()),
        ..InvoiceItemCreate::default()
    }
}

#[test]
fn a_write_sends_the_pinned_version_the_key_and_a_form_body() {
    let server = Scripted::start(vec![Reply::Answer(200, &[], ITEM)]);
    let item = server
        .client(0)
        .create_invoice_item(&item_params(), "invoiceitem-create-inv1-l1")
        .expect("created");
    assert_eq!((item.id.as_str(), item.amount), ("ii_1", 7725));
    let requests = server.finish();
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/v1/invoiceitems")
    );
    assert_eq!(request.header("authorization"), Some("Bearer sk_test_abc"));
    assert_eq!(request.header("stripe-version"), Some("2024-09-30.acacia"));
    assert_eq!(
        request.header("idempotency-key"),
        Some("invoiceitem-create-inv1-l1")
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.body,
        "customer=cus_1&invoice=in_1&amount=7725&description=Usage%20%282%20x%20%241%29&period[start]=0&period[end]=0"
    );
}

#[test]
fn a_read_sends_its_parameters_in_the_query_and_no_key() {
    let server = Scripted::start(vec![Reply::Answer(200, &[], r#"{"id":"cus_1"}"#)]);
    let customer = server.client(0).customer("cus_1").expect("read");
    assert_eq!(customer.id, "cus_1");
    let request = &server.finish()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.target,
        "/v1/customers/cus_1?expand[0]=invoice_settings.default_payment_method&expand[1]=tax"
    );
    assert_eq!(request.header("idempotency-key"), None);
    assert_eq!(request.header("stripe-version"), Some("2024-09-30.acacia"));
}

#[test]
fn retryable_failures_are_retried_with_the_same_key_and_body() {
    let server = Scripted::start(vec![
        Reply::Answer(500, &[], API_ERROR),
        Reply::Answer(429, &[], LOCK_TIMEOUT),
        Reply::Hangup,
        Reply::Answer(
            409,
            &[],
            r#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use"}}"#,
        ),
        Reply::Answer(200, &[("idempotent-replayed", "true")], ITEM),
    ]);
    let item = server
        .client(4)
        .create_invoice_item(&item_params(), "k1")
        .expect("created in the end");
    assert_eq!(item.id, "ii_1");
    let requests = server.finish();
    assert_eq!(requests.len(), 5);
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("k1"));
        assert_eq!(request.body, requests[0].body);
    }
}

#[test]
fn failures_that_are_not_retryable_are_returned_at_once() {
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(Reply, Expect)> = vec![
        (Reply::Answer(429, &[], RATE_LIMIT), |e| {
            e.code() == Some("rate_limit")
        }),
        (
            Reply::Answer(500, &[("stripe-should-retry", "false")], API_ERROR),
            |e| {
                matches!(
                    e,
                    Error::Api {
                        status: 500,
                        should_retry: Some(false),
                        ..
                    }
                )
            },
        ),
        (
            Reply::Answer(
                400,
                &[],
                r#"{"error":{"type":"invalid_request_error","code":"invoice_not_editable"}}"#,
            ),
            |e| e.code() == Some("invoice_not_editable"),
        ),
        (
            Reply::Answer(
                401,
                &[],
                r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key"}}"#,
            ),
            |e| matches!(e, Error::Unauthorized { .. }),
        ),
        (Reply::Answer(200, &[], "not json"), |e| {
            matches!(e, Error::Decode { status: 200, .. })
        }),
        // A 5xx Stripe kept for the key and replays: the same key gets it again.
        (
            Reply::Answer(
                500,
                &[
                    ("idempotent-replayed", "true"),
                    ("original-request", "req_9"),
                ],
                API_ERROR,
            ),
            |e| e.replayed_failure() == Some("req_9") && !e.is_retryable(),
        ),
        (
            Reply::Answer(500, &[("idempotent-replayed", "true")], API_ERROR),
            |e| e.replayed_failure() == Some(""),
        ),
    ];
    for (reply, expected) in cases {
        let server = Scripted::start(vec![reply]);
        let error = server
            .client(3)
            .create_invoice_item(&item_params(), "k1")
            .expect_err("fails");
        assert!(expected(&error), "{error:?}");
        assert_eq!(server.finish().len(), 1);
    }
}

#[test]
fn should_retry_true_retries_what_would_not_be_and_retries_stop_at_the_limit() {
    let server = Scripted::start(vec![
        Reply::Answer(400, &[("stripe-should-retry", "true")], API_ERROR),
        Reply::Answer(200, &[], ITEM),
    ]);
    assert!(
        server
            .client(1)
            .create_invoice_item(&item_params(), "k1")
            .is_ok()
    );
    assert_eq!(server.finish().len(), 2);

    let server = Scripted::start(vec![
        Reply::Answer(503, &[], API_ERROR),
        Reply::Answer(503, &[], API_ERROR),
        Reply::Answer(503, &[], API_ERROR),
    ]);
    let error = server
        .client(2)
        .create_invoice_item(&item_params(), "k1")
        .expect_err("gives up");
    assert!(matches!(error, Error::Api { status: 503, .. }), "{error:?}");
    assert_eq!(server.finish().len(), 3);
}

#[test]
fn lists_follow_starting_after_until_has_more_is_false() {
    let server = Scripted::start(vec![
        Reply::Answer(
            200,
            &[],
            r#"{"object":"list","has_more":true,"data":[{"id":"il_1"},{"id":"il_2"}]}"#,
        ),
        Reply::Answer(
            200,
            &[],
            r#"{"object":"list","has_more":false,"data":[{"id":"il_3"}]}"#,
        ),
    ]);
    let lines = server.client(0).invoice_lines("in_1").expect("listed");
    let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["il_1", "il_2", "il_3"]);
    let requests = server.finish();
    assert_eq!(requests[0].target, "/v1/invoices/in_1/lines?limit=100");
    assert_eq!(
        requests[1].target,
        "/v1/invoices/in_1/lines?limit=100&starting_after=il_2"
    );
}

#[test]
fn an_overlong_idempotency_key_is_refused_before_any_request() {
    let server = Scripted::start(Vec::new());
    let key = "k".repeat(256);
    let error = server
        .client(0)
        .create_invoice_item(&item_params(), &key)
        .expect_err("refused");
    assert!(matches!(error, Error::IdempotencyKey { bytes: 256 }));
    assert!(server.finish().is_empty());
}
