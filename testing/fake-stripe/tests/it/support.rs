//! A form-encoding HTTP client for the fake and a webhook receiver.

use metron_fake_stripe::FakeStripe;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Client {
    base: String,
    key: String,
    agent: ureq::Agent,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub json: Value,
}

impl Reply {
    pub fn code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }
}

impl Client {
    pub fn new(fake: &FakeStripe) -> Client {
        Client::with_timeout(fake, Duration::from_secs(30))
    }

    pub fn with_timeout(fake: &FakeStripe, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            base: fake.base_url(),
            key: fake.api_key(),
            agent,
        }
    }

    pub fn with_key(mut self, key: &str) -> Client {
        self.key = key.to_owned();
        self
    }

    pub fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        key: Option<&str>,
    ) -> Result<Reply, ureq::Error> {
        let body = serde_urlencoded::to_string(form).unwrap();
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key))
            .header("Stripe-Version", "2024-09-30.acacia")
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        reply(request.send(body.as_bytes()))
    }

    pub fn get(&self, path: &str) -> Result<Reply, ureq::Error> {
        let request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key));
        reply(request.call())
    }

    pub fn delete(&self, path: &str) -> Result<Reply, ureq::Error> {
        let request = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key));
        reply(request.call())
    }

    /// POST that must succeed; the JSON.
    pub fn ok(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let reply = self.post(path, form, None).unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.json);
        reply.json
    }
}

fn reply(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, ureq::Error> {
    let mut response = result?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let text = response.body_mut().read_to_string()?;
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    Ok(Reply {
        status,
        headers,
        json,
    })
}

/// A customer and a draft invoice in USD with the given item amounts.
pub fn draft_with_items(fake: &FakeStripe, client: &Client, amounts: &[i64]) -> (String, String) {
    let customer = fake.create_customer("ACME", Some("billing@acme.test"));
    fake.create_payment_method(&customer).unwrap();
    let invoice = client.ok(
        "/v1/invoices",
        &[
            ("customer", &customer),
            ("currency", "USD"),
            ("auto_advance", "false"),
            ("collection_method", "charge_automatically"),
        ],
    );
    let invoice = invoice["id"].as_str().unwrap().to_owned();
    for amount in amounts {
        client.ok(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("invoice", &invoice),
                ("amount", &amount.to_string()),
                ("description", "usage"),
                ("period[start]", "1700000000"),
                ("period[end]", "1702592000"),
                ("metadata[om_line_type]", "line"),
            ],
        );
    }
    (customer, invoice)
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A webhook receiver answering each POST with the next queued status (200 when none).
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let (got, queued) = (Arc::clone(&received), Arc::clone(&statuses));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((k, v)) = line.trim_end().split_once(": ") else {
                        break;
                    };
                    headers.insert(k.to_lowercase(), v.to_owned());
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                got.lock().unwrap().push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let status = queued.lock().unwrap().pop_front().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            url,
            received,
            statuses,
        }
    }

    /// Waits (with a deadline) until `n` requests arrived; what arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
