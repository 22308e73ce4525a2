//! The `metron` binary: `metron serve`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use metron_actors::customer::Entitlements;
use metron_actors::{Pipeline, PipelineConfig};
use metron_api::config::Config;
use metron_api::state::AppState;
use metron_storage::dedup::DedupConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Metron: usage metering, limits and billing in one binary.
#[derive(Parser)]
#[command(name = "metron", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server: embedded defaults (SQLite catalog, local data directory, embedded event
    /// log), or PostgreSQL, S3 and Kafka or Fluvio as the config and flags say.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "METRON_LISTEN", default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// Directory for the catalog, the event log, Parquet files and checkpoints.
    #[arg(long, env = "METRON_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The catalog's database URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE or
    /// sqlite://PATH); wins over `database.url` of the config file. Unset: the config's, else
    /// the SQLite file catalog.db in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The event stream: kafka://HOST:PORT[,HOST:PORT...]/TOPIC or fluvio://HOST:PORT/TOPIC;
    /// wins over `stream.url` of the config file. Unset: the config's, else the embedded log in the data directory.
    #[arg(long, env = "METRON_STREAM_URL")]
    stream_url: Option<String>,
    /// This node's id in the partition leases of a Kafka or Fluvio topic (1 to 64 letters,
    /// digits, '.', '_', '-'). Unset: the one kept in <data-dir>/node-id, made on the first
    /// start.
    #[arg(long, env = "METRON_NODE_ID")]
    node_id: Option<String>,
    /// The URL at which the other nodes of a Kafka or Fluvio topic reach this node's API, to
    /// forward what only the holder of the topic's partitions answers. Unset: http:// and the
    /// bound address (set it when listening on 0.0.0.0).
    #[arg(long, env = "METRON_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// `all`: this node reads the topic's partitions when no other node does, and stands by
    /// (taking events, forwarding the rest) while one does. `api`: it only ever stands by.
    /// The embedded log is always `all`.
    #[arg(long, env = "METRON_ROLE", value_enum, default_value_t = Role::All)]
    role: Role,
    /// YAML config file (meters, partitions, checkpointInterval, dedupHorizon, ...).
    #[arg(long, env = "METRON_CONFIG")]
    config: Option<PathBuf>,
    /// Writes the bound address to this file once listening (for tests and scripts).
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// HTTP worker threads.
    #[arg(long, env = "METRON_HTTP_WORKERS", default_value_t = 2)]
    http_workers: usize,
    /// Threads of the query runtime (DataFusion, Parquet encoding).
    #[arg(long, env = "METRON_QUERY_THREADS", default_value_t = 2)]
    query_threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    All,
    Api,
}

/// How long a standby's forwarded request may take, the holder's answer included.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A standby's HTTP server (see `metron_api::standby`) and its handle on the stream.
struct Standby {
    front: metron_actors::front::Front,
    http: actix_web::dev::ServerHandle,
    running: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

impl Standby {
    async fn start(
        config: &PipelineConfig,
        listener: &std::net::TcpListener,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let front = metron_actors::front::Front::connect(config)
            .await
            .context("connecting to the event stream and the catalog")?;
        let state = actix_web::web::Data::new(metron_api::standby::StandbyState::new(
            front.clone(),
            config.namespace.clone(),
            FORWARD_TIMEOUT,
        ));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .configure(metron_api::standby::configure)
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(
            listener
                .try_clone()
                .context("sharing the listening socket")?,
        )
        .context("serving the standby API")?
        .run();
        let http = server.handle();
        let running = actix_rt::spawn(server);
        Ok(Self {
            front,
            http,
            running,
        })
    }

    /// Stops taking requests once those under way are answered.
    async fn stop(self) {
        self.http.stop(true).await;
        let _ = self.running.await;
        self.front.close().await;
    }
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

/// SIGTERM or SIGINT.
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The exit code of a fatal error (EX_SOFTWARE).
const EXIT_FATAL: i32 = 70;

/// A panic on an actor's Arbiter, the log writer or any thread but an HTTP worker or
/// a query thread is fatal: the state it held is gone. HTTP workers are restarted by
/// actix, and a query's panic fails only that query.
fn install_panic_hook(health: std::sync::Arc<metron_actors::health::Health>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        let own_failure = ["actix-server worker", "metron-query", "metron-sql"]
            .iter()
            .any(|p| name.starts_with(p));
        if !own_failure {
            health.fatal(format!("thread {name:?} panicked: {info}"));
        }
    }));
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    metron_actors::memory::fix_allocator_thresholds();
    let config = Config::load(args.config.as_deref())?;
    if let Some(id) = &args.node_id
        && !metron_actors::leases::is_node_id(id)
    {
        anyhow::bail!(
            "--node-id {id:?} must be 1 to {} ASCII letters, digits, '.', '_' or '-'",
            metron_actors::leases::NODE_ID_LEN_MAX
        );
    }
    let query_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.query_threads.max(1))
        .thread_name("metron-query")
        .enable_all()
        .build()
        .context("starting the query runtime")?;
    let sql_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.query_threads.max(1))
        .thread_name("metron-sql")
        .enable_all()
        .build()
        .context("starting the SQL runtime")?;
    let shares = config.memory_shares()?;
    tracing::info!(
        total = shares.total,
        held_events = shares.held_events,
        live_windows = shares.live_windows,
        customers = shares.customers,
        dedup = shares.dedup,
        sql = shares.sql,
        rest = shares.rest,
        "Memory budget."
    );
    let mut pipeline_config = PipelineConfig {
        held_events_bytes: shares.held_events,
        live_windows_bytes: shares.live_windows,
        sql_runtime: Some(sql_runtime.handle().clone()),
        sql_limits: (&config.sql).into(),
        data_dir: args.data_dir.clone(),
        catalog_url: config.catalog_url(args.database_url.as_deref()),
        partitions: config.partitions,
        checkpoint_interval: config.checkpoint_interval,
        dedup: DedupConfig {
            horizon_ms: i64::try_from(config.dedup_horizon.as_millis()).unwrap_or(i64::MAX),
            memory_budget_bytes: shares.dedup,
            ..DedupConfig::default()
        },
        batch_records_max: config.batch_records_max,
        backlog_records_max: config.backlog_records_max,
        pending_events_max: config.pending_events_max,
        read_wait_max: config.read_wait_max,
        meters: config.meters.clone(),
        namespace: config.namespace.clone(),
        notifications: (&config.notifications).into(),
        checkpoint_failure_deadline: config.checkpoint_failure_deadline,
        storage: config.storage.clone(),
        stream: config
            .stream
            .backend(args.stream_url.as_deref(), config.partitions)?,
        node_id: args.node_id.clone(),
        lease_ttl: config.stream.lease_ttl,
        advertise_url: None,
    };
    let shared = pipeline_config.stream.lease_name().is_some();
    if args.role == Role::Api && !shared {
        anyhow::bail!("--role api needs a Kafka or Fluvio stream: the embedded log is one node's");
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr().context("the bound address")?;
    let advertise = args
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    if shared && args.advertise_url.is_none() && bound.ip().is_unspecified() {
        tracing::warn!(%advertise, "Listening on every interface without --advertise-url: the other nodes cannot forward to this one.");
    }
    pipeline_config.advertise_url = Some(advertise);
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failpoints = std::env::var("METRON_FAILPOINTS").ok();
    if let Some(spec) = &failpoints {
        metron_engine::failpoint::configure(spec).context("METRON_FAILPOINTS")?;
        tracing::warn!(failpoints = %spec, "Failpoints are enabled (PUT /debug/failpoints changes them).");
    }
    let handle = query_runtime.handle().clone();
    let system = actix::System::new();
    let poll = (pipeline_config.lease_ttl / 5).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(2),
    );
    let result = system.block_on(async move {
        let mut shutdown = Box::pin(wait_for_shutdown_signal());
        let mut standby: Option<Standby> = None;
        let pipeline = loop {
            if args.role == Role::Api {
                let serving = Standby::start(&pipeline_config, &listener, args.http_workers.max(1)).await?;
                tracing::info!(address = %bound, "Metron is listening (role api: taking events, forwarding the rest to the stream's holder).");
                let signal = (&mut shutdown).await;
                serving.stop().await;
                return signal;
            }
            match Pipeline::start(pipeline_config.clone(), handle.clone()).await {
                Ok(pipeline) => break pipeline,
                Err(error) if shared && metron_actors::front::is_held_elsewhere(&error) => {
                    let serving = match standby.take() {
                        Some(serving) => serving,
                        None => {
                            let serving = Standby::start(&pipeline_config, &listener, args.http_workers.max(1)).await?;
                            tracing::info!(address = %bound, reason = %error, "Standing by: taking events and forwarding the rest to the stream's holder until its leases are free.");
                            serving
                        }
                    };
                    let free = serving.front.clone();
                    standby = Some(serving);
                    tokio::select! {
                        () = free.wait_until_free(poll) => {
                            tracing::info!("The stream's leases are free: taking over.");
                        }
                        signal = &mut shutdown => {
                            if let Some(serving) = standby.take() {
                                serving.stop().await;
                            }
                            return signal;
                        }
                    }
                }
                Err(error) => return Err(anyhow::Error::new(error).context("starting the pipeline")),
            }
        };
        // Tests hold the start here, the pipeline running, its HTTP server not yet up.
        if let Some(metron_engine::failpoint::Action::Sleep(pause)) =
            metron_engine::failpoint::eval("serve.start")
        {
            tokio::time::sleep(pause).await;
        }
        let entitlements_config = metron_actors::customer::EntitlementsConfig {
            memory_bytes: shares.customers,
            ..(&config.entitlements).into()
        };
        let entitlements = Entitlements::start(pipeline.clone(), entitlements_config)
            .await
            .context("starting the entitlement service")?;
        pipeline
            .catalog()
            .ensure_billing_defaults(pipeline.namespace())
            .await
            .context("provisioning the sandbox app and the default billing profile")?;
        install_panic_hook(pipeline.health().clone());
        let health = pipeline.health().clone();
        let clock_offset_seconds: i64 = match std::env::var("METRON_BILLING_CLOCK_OFFSET_SECONDS") {
            Ok(text) => text.parse().context("METRON_BILLING_CLOCK_OFFSET_SECONDS must be an integer")?,
            Err(_) => 0,
        };
        if clock_offset_seconds != 0 {
            tracing::warn!(seconds = clock_offset_seconds, "Billing runs on a shifted clock (METRON_BILLING_CLOCK_OFFSET_SECONDS).");
        }
        let billing = metron_actors::billing::Billing::new(
            pipeline.clone(),
            metron_actors::billing::BillingConfig {
                stripe_api_base: config.stripe.api_base.clone(),
                clock_offset: chrono::Duration::seconds(clock_offset_seconds),
                concurrency: config.billing.concurrency.clamp(1, 64),
                ..Default::default()
            },
        );
        {
            use actix::Actor;
            metron_actors::billing::BillingActor::new(billing.clone()).start();
        }
        let state = actix_web::web::Data::new(AppState {
            pipeline: pipeline.clone(),
            entitlements,
            billing,
        });
        let debug = failpoints.is_some();
        let stripe = actix_web::web::Data::new(config.stripe_settings());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(stripe.clone())
                .configure(metron_api::configure)
                .configure(|cfg| {
                    if debug {
                        cfg.route(
                            "/debug/failpoints",
                            actix_web::web::put().to(metron_api::routes::health::set_failpoints),
                        );
                    }
                })
                .default_service(actix_web::web::to(metron_api::no_route))
        })
        .workers(args.http_workers.max(1))
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .with_context(|| format!("serving on {bound}"))?;
        // The standby's server answered until the pipeline was up; requests arriving while
        // the servers change over wait in the socket's backlog.
        if let Some(serving) = standby.take() {
            serving.stop().await;
        }
        tracing::info!(address = %bound, data_dir = %args.data_dir.display(), "Metron is listening.");
        let server = server.run();
        let http = server.handle();
        let running = actix_rt::spawn(server);
        tokio::select! {
            signal = &mut shutdown => signal?,
            reason = health.wait_fatal() => {
                // Nothing more is written: the restart recovers from the last
                // checkpoint and the log, as after SIGKILL.
                eprintln!("metron: fatal: {reason}");
                std::process::exit(EXIT_FATAL);
            }
        }
        tracing::info!("Shutting down: draining HTTP, then a final checkpoint.");
        http.stop(true).await;
        let _ = running.await;
        match pipeline.shutdown().await {
            Ok(epoch) => tracing::info!(epoch, "Wrote the final checkpoint."),
            Err(error) => tracing::warn!(%error, "The final checkpoint failed; restart replays the stream."),
        }
        anyhow::Ok(())
    });
    drop(query_runtime);
    // A query aborted at its timeout may still be between two yields: do not wait for it.
    sql_runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
