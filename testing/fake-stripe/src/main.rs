//! `fake-stripe`: the fake Stripe server as a process, for the demo scripts.

use clap::Parser;
use metron_fake_stripe::{FakeConfig, FakeStripe};
use std::time::Duration;

/// Runs the fake Stripe API on 127.0.0.1 until killed.
#[derive(Parser)]
#[command(name = "fake-stripe")]
struct Args {
    /// The port to listen on (0 picks a free one).
    #[arg(long, env = "FAKE_STRIPE_PORT", default_value_t = 12111)]
    port: u16,
    /// The accepted secret key (a random sk_test_… when absent).
    #[arg(long, env = "FAKE_STRIPE_API_KEY")]
    api_key: Option<String>,
    /// Seeds IDs and random faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The chance (0–1) of a random fault per Stripe request.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let fake = FakeStripe::start_with(FakeConfig {
        seed: args.seed,
        fault_rate: args.fault_rate,
        api_key: args.api_key,
        port: args.port,
        ..FakeConfig::default()
    })?;
    println!(
        "fake-stripe listening on {} with api key {}",
        fake.base_url(),
        fake.api_key()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
