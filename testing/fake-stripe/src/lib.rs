//! A fake Stripe API server for tests (never shipped). It serves exactly the endpoints of the
//! Stripe contract (`shared/reference/stripe-contract.md`) on `127.0.0.1`, on its own thread
//! with its own actix system. A request goes: auth → `Stripe-Version` → route → form decoding
//! ([`form`]) → the Stripe spec's schema ([`spec`]) and the contract's extra rules → the
//! idempotency store → an injected fault ([`fault`]) → the operation on the in-memory objects
//! ([`ops`] on [`state`]) → events, delivered as signed webhooks from a background thread
//! ([`webhook`]). Every request that breaks the spec is recorded in [`FakeStripe::violations`].

// The invoice JSON is one large `json!` literal.
#![recursion_limit = "256"]

pub mod error;
pub mod fault;
pub mod form;
pub mod limits;
pub mod ops;
pub mod server;
pub mod spec;
pub mod state;
pub mod webhook;

pub use error::ApiError;
pub use fault::{Fault, FaultRule};
pub use state::{Invoice, InvoiceItem, InvoiceStatus, RequestRecord, Store};
pub use webhook::WebhookRequest;

use fault::Faults;
use serde_json::Value;
use server::Shared;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A cloned view of everything the fake holds.
pub type Snapshot = Store;

/// How the fake behaves. `Default` gives no random faults.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Seeds IDs and the random fault mode.
    pub seed: u64,
    /// The chance (0–1) that a Stripe request gets a random fault.
    pub fault_rate: f64,
    /// The kinds the random mode picks from (uniformly).
    pub fault_kinds: Vec<Fault>,
    /// How long a [`Fault::Timeout`] holds the request before closing the connection.
    pub timeout_hold: Duration,
    /// The accepted secret key; a random `sk_test_…` when `None`.
    pub api_key: Option<String>,
    /// The port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

impl Default for FakeConfig {
    fn default() -> FakeConfig {
        FakeConfig {
            seed: 0,
            fault_rate: 0.0,
            fault_kinds: Fault::ALL.to_vec(),
            timeout_hold: Duration::from_secs(2),
            api_key: None,
            port: 0,
        }
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeStripe {
    shared: Arc<Shared>,
    addr: SocketAddr,
    system: actix_rt::System,
    thread: Option<JoinHandle<()>>,
}

impl FakeStripe {
    /// A fake with the default config on a free port.
    pub fn start() -> std::io::Result<FakeStripe> {
        FakeStripe::start_with(FakeConfig::default())
    }

    /// A fake with `config`; returns once it accepts connections.
    pub fn start_with(config: FakeConfig) -> std::io::Result<FakeStripe> {
        let mut store = Store::new(config.seed);
        let api_key = config
            .api_key
            .clone()
            .unwrap_or_else(|| store.id("sk_test_", 24));
        let faults = Faults::new(config.seed, config.fault_rate, config.fault_kinds.clone());
        let shared = Arc::new(Shared::new(store, faults, api_key, config.timeout_hold)?);
        let listener = TcpListener::bind(("127.0.0.1", config.port))?;
        let addr = listener.local_addr()?;
        let (started, ready) = std::sync::mpsc::channel();
        let data = actix_web::web::Data::from(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("fake-stripe".to_owned())
            .spawn(move || {
                let system = actix_rt::System::new();
                let server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .app_data(data.clone())
                        .app_data(actix_web::web::PayloadConfig::new(limits::BODY_BYTES_MAX))
                        .configure(server::control)
                        .default_service(actix_web::web::to(server::stripe))
                })
                .workers(1)
                .disable_signals()
                .on_connect(server::on_connect)
                .listen(listener);
                match server {
                    Ok(server) => {
                        let running = server.run();
                        system.runtime().spawn(running);
                        let _ = started.send(Ok(actix_rt::System::current()));
                        if let Err(error) = system.run() {
                            tracing::warn!(%error, "The fake Stripe server stopped with an error.");
                        }
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })?;
        let system = ready
            .recv()
            .map_err(|_| std::io::Error::other("the fake Stripe thread ended before starting"))??;
        Ok(FakeStripe {
            shared,
            addr,
            system,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`; clients append `/v1/…`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The only accepted secret key; any other gets 401.
    pub fn api_key(&self) -> String {
        self.shared.api_key.clone()
    }

    /// Queues `fault` for the next Stripe request, whatever it is.
    pub fn inject(&self, fault: Fault) {
        self.inject_rule(FaultRule::next(fault));
    }

    /// Queues a fault for a method, path prefix and occurrence.
    pub fn inject_rule(&self, rule: FaultRule) {
        self.shared.faults.lock().push(rule);
    }

    /// Changes the chance of a random fault from the next request on (the seeded draws go on).
    pub fn set_fault_rate(&self, rate: f64) {
        self.shared.faults.lock().set_rate(rate);
    }

    /// Calls `hook` with every Stripe request, on the server's thread, once the request has
    /// run (or failed) and before its answer is sent: a test can kill its client there, right
    /// after a write took effect. The request is in [`Store::requests`] once `hook` returns.
    pub fn on_request(&self, hook: impl Fn(&state::RequestRecord) + Send + Sync + 'static) {
        *self.shared.hook.lock() = Some(Arc::new(hook));
    }

    /// A copy of everything the fake holds.
    pub fn state(&self) -> Snapshot {
        self.shared.store.lock().clone()
    }

    /// Every request that broke the spec or the contract (tests assert this is empty).
    pub fn violations(&self) -> Vec<String> {
        self.shared.store.lock().violations.clone()
    }

    /// Seeds a customer with a US address; returns its `cus_` ID.
    pub fn create_customer(&self, name: &str, email: Option<&str>) -> String {
        seed_customer(&self.shared, name, email)
    }

    /// Seeds a card with a billing address for `customer`, made the customer's default when it
    /// has none; returns its `pm_` ID.
    pub fn create_payment_method(&self, customer: &str) -> Result<String, ApiError> {
        seed_payment_method(&self.shared, customer)
    }

    /// Finalizes a draft as `POST /v1/invoices/{id}/finalize` would.
    pub fn finalize_invoice(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "finalize")
    }

    /// The payment succeeds: open or uncollectible → paid (`invoice.paid`).
    pub fn pay_invoice(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "pay")
    }

    /// A payment attempt fails (`invoice.payment_failed`); the invoice stays open.
    pub fn fail_payment(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "fail_payment")
    }

    /// open or uncollectible → void (`invoice.voided`).
    pub fn void_invoice(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "void")
    }

    /// open → uncollectible (`invoice.marked_uncollectible`).
    pub fn mark_uncollectible(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "mark_uncollectible")
    }

    /// An open invoice goes past due (`invoice.overdue`).
    pub fn mark_overdue(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "mark_overdue")
    }

    /// The payment needs customer action (`invoice.payment_action_required`).
    pub fn require_action(&self, id: &str) -> Result<Value, ApiError> {
        drive(&self.shared, id, "require_action")
    }

    /// Delivers an event now, synchronously, to every endpoint that wants it (one attempt
    /// each); the receivers' statuses.
    pub fn deliver_event(&self, event_id: &str) -> Vec<Result<u16, String>> {
        deliver_now(&self.shared, event_id)
    }

    /// Sends the last webhook again, byte for byte (same signature), like a Stripe retry.
    pub fn replay_last_webhook(&self) -> Option<Result<u16, String>> {
        let request = self.shared.last_webhook.lock().clone()?;
        let outcome = request.send();
        webhook::record(&self.shared.store, &request, 0, &outcome);
        Some(outcome)
    }

    /// The signed request that would deliver `event_id` to `endpoint_id`; tamper with
    /// [`WebhookRequest::with_bad_signature`] and [`WebhookRequest::send`] it yourself.
    pub fn webhook_request(&self, event_id: &str, endpoint_id: &str) -> Option<WebhookRequest> {
        let store = self.shared.store.lock();
        server::webhook_requests(&store, event_id)
            .into_iter()
            .find(|r| r.endpoint_id == endpoint_id)
    }

    /// Waits until the background sender has nothing queued; false at the deadline.
    pub fn wait_for_webhooks(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while self.shared.sender.pending() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("The fake Stripe thread panicked.");
        }
    }
}

pub(crate) fn seed_customer(shared: &Shared, name: &str, email: Option<&str>) -> String {
    let mut pairs = vec![
        ("name".to_owned(), name.to_owned()),
        ("address[country]".to_owned(), "US".to_owned()),
        ("address[line1]".to_owned(), "1 Main St".to_owned()),
        ("address[city]".to_owned(), "San Francisco".to_owned()),
        ("address[state]".to_owned(), "CA".to_owned()),
        ("address[postal_code]".to_owned(), "94105".to_owned()),
    ];
    if let Some(email) = email {
        pairs.push(("email".to_owned(), email.to_owned()));
    }
    let params = form::parse(&pairs).unwrap_or(form::Param::Map(Default::default()));
    let id = {
        let mut store = shared.store.lock();
        ops::create_customer(&mut store, &params).id
    };
    shared.dispatch();
    id
}

pub(crate) fn seed_payment_method(shared: &Shared, customer: &str) -> Result<String, ApiError> {
    let mut store = shared.store.lock();
    let found = store
        .customer(customer)
        .cloned()
        .ok_or_else(|| ApiError::missing("customer", customer, "customer"))?;
    let id = store.id("pm_", 24);
    store.payment_methods.push(state::PaymentMethod {
        id: id.clone(),
        created: state::now(),
        customer: Some(customer.to_owned()),
        name: found.name.clone(),
        email: found.email.clone(),
        address: found
            .address
            .clone()
            .or_else(|| Some([("country".to_owned(), "US".to_owned())].into())),
    });
    if let Some(c) = store.customer_mut(customer) {
        c.default_payment_method.get_or_insert(id.clone());
    }
    Ok(id)
}

/// Runs one lifecycle action from a test (the library or `/_test/invoices/{id}/{action}`).
pub(crate) fn drive(shared: &Shared, id: &str, action: &str) -> Result<Value, ApiError> {
    let result = {
        let mut store = shared.store.lock();
        let out_of_band = form::Param::Map(
            [(
                "paid_out_of_band".to_owned(),
                form::Param::Value("true".to_owned()),
            )]
            .into(),
        );
        match action {
            "finalize" => ops::finalize(&mut store, id, None),
            "pay" => ops::pay(&mut store, id, &out_of_band),
            "fail_payment" => ops::fail_payment(&mut store, id),
            "void" => ops::void(&mut store, id),
            "mark_uncollectible" => ops::mark_uncollectible(&mut store, id),
            "mark_overdue" => ops::mark_overdue(&mut store, id),
            "require_action" => ops::require_action(&mut store, id),
            other => Err(ApiError::invalid(
                None,
                format!("Unknown test action {other}."),
            )),
        }
    };
    shared.dispatch();
    result
}

pub(crate) fn deliver_now(shared: &Shared, event_id: &str) -> Vec<Result<u16, String>> {
    let requests = server::webhook_requests(&shared.store.lock(), event_id);
    requests
        .iter()
        .map(|request| {
            let outcome = request.send();
            webhook::record(&shared.store, request, 0, &outcome);
            *shared.last_webhook.lock() = Some(request.clone());
            outcome
        })
        .collect()
}
