//! A `metron` process for one test, and a small blocking HTTP client around it.
//!
//! Every [`TestServer`] runs the real binary (`metron serve`) on `127.0.0.1:0` with its own data
//! directory (a temporary one unless [`ServerBuilder::with_data_dir`] names one), reads the bound
//! address from `--port-file`, and kills the process when dropped. The server's stdout and stderr
//! go to a log file; a test that panics prints the tail of that log and keeps the files.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take from spawn to answering `/readyz`.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long an acknowledged event may take to show up in queries.
pub const VISIBLE: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` every 100 ms until it returns `Ok`, and returns that value; panics with the
/// last error once `deadline` has passed.
pub fn eventually<T>(deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    match try_eventually(deadline, &mut check) {
        Ok(value) => value,
        Err(last) => panic!("condition still false after {deadline:?}: {last}"),
    }
}

/// Like [`eventually`], but hands the last error back instead of panicking.
pub fn try_eventually<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() >= deadline => return Err(last),
            Err(_) => sleep(Duration::from_millis(100)),
        }
    }
}

/// Options for starting a [`TestServer`].
#[derive(Default)]
pub struct ServerBuilder {
    config: Option<String>,
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl ServerBuilder {
    /// Passes `yaml` as the server's `--config` file.
    pub fn with_config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    /// Uses `path` as the data directory (it outlives the server: restart and crash tests).
    pub fn with_data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// Sets an environment variable of the server process (e.g. `METRON_FAILPOINTS`).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the server and waits until it is ready; panics (with the server log) if it is not.
    pub fn start(self) -> TestServer {
        self.try_start()
            .unwrap_or_else(|e| panic!("metron did not start: {e:#}"))
    }

    pub fn try_start(self) -> Result<TestServer> {
        let work = tempfile::Builder::new()
            .prefix("metron-it-")
            .tempdir()
            .context("creating the test's temporary directory")?;
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => work.path().join("data"),
        };
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let config = match self.config {
            Some(yaml) => {
                let path = work.path().join("config.yaml");
                fs::write(&path, yaml).context("writing config.yaml")?;
                Some(path)
            }
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut server = TestServer {
            work: Some(work),
            data_dir,
            config,
            env: self.env,
            child: None,
            addr: String::new(),
            agent,
            starts: 0,
        };
        server.spawn()?;
        Ok(server)
    }
}

/// One running (or stopped) `metron serve` process.
pub struct TestServer {
    work: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: String,
    agent: ureq::Agent,
    starts: u32,
}

impl TestServer {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server with no config file and a fresh data directory.
    pub fn start() -> TestServer {
        ServerBuilder::default().start()
    }

    /// A server with the given config file and a fresh data directory.
    pub fn start_with_config(yaml: &str) -> TestServer {
        ServerBuilder::default().with_config(yaml).start()
    }

    fn work_dir(&self) -> &Path {
        self.work
            .as_ref()
            .map(|w| w.path())
            .unwrap_or(Path::new("."))
    }

    pub fn log_path(&self) -> PathBuf {
        self.work_dir().join("server.log")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last `lines` lines of the server's log (all starts).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self) -> Result<()> {
        self.spawn_listening()?;
        self.wait_ready()
    }

    /// Starts the process and returns as soon as it listens (before it is ready).
    fn spawn_listening(&mut self) -> Result<()> {
        self.starts += 1;
        let port_file = self.work_dir().join("addr");
        let _ = fs::remove_file(&port_file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening server.log")?;
        writeln!(log, "===== metron start #{} =====", self.starts)?;

        let mut cmd = Command::new(metron_binary());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--port-file")
            .arg(&port_file);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log handle")?)
            .stderr(log);
        let child = cmd.spawn().context("spawning the metron binary")?;
        self.child = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(addr) = read_port_file(&port_file) {
                self.addr = addr;
                break;
            }
            self.fail_if_exited("before writing its port file")?;
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "no port file after {START_DEADLINE:?}; log:\n{}",
                    self.log_tail(80)
                );
            }
            sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        // Listening is not the same as ready (a restart may replay its log first).
        loop {
            match self.get("/readyz").try_send() {
                Ok(resp) if resp.status == 200 => return Ok(()),
                Ok(resp) if resp.status == 404 => {
                    eprintln!("warning: GET /readyz is 404; treating the server as ready");
                    return Ok(());
                }
                Ok(_) | Err(_) => {}
            }
            self.fail_if_exited("before becoming ready")?;
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "/readyz not 200 after {START_DEADLINE:?}; log:\n{}",
                    self.log_tail(80)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn fail_if_exited(&mut self, when: &str) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("metron is not running");
        };
        if let Some(status) = child.try_wait().context("waiting for metron")? {
            self.child = None;
            bail!(
                "metron exited ({status}) {when}; log:\n{}",
                self.log_tail(80)
            );
        }
        Ok(())
    }

    /// SIGKILL: the process dies at once, with no chance to flush or checkpoint.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (a clean shutdown with a final checkpoint).
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("metron is not running")?;
        send_signal(child.id(), libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "metron still running {STOP_DEADLINE:?} after SIGTERM; log:\n{}",
                    self.log_tail(40)
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `deadline` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("metron is not running")?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > deadline {
                bail!(
                    "metron still running after {deadline:?}; log:\n{}",
                    self.log_tail(40)
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (if running), then a new process on the same data directory, returned as
    /// soon as it listens: it may still be replaying its log.
    pub fn restart_listening(&mut self) -> Result<()> {
        self.kill();
        self.spawn_listening()
    }

    /// Replaces the server's environment (for the next start).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Stops the server (SIGTERM) if it is running and starts it again on the same data
    /// directory and config; the new process listens on a new port.
    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn restart(&mut self) {
        self.try_restart()
            .unwrap_or_else(|e| panic!("metron did not restart: {e:#}"));
    }

    pub fn try_restart(&mut self) -> Result<()> {
        if self.is_running() {
            self.terminate()?;
        } else {
            self.kill();
        }
        self.spawn()
    }

    // ----- HTTP -----

    /// A `Send` handle for making requests to the current process (e.g. from another thread).
    /// It does not follow a restart (the new process listens on a new port): take a new one.
    pub fn client(&self) -> Client {
        Client {
            agent: self.agent.clone(),
            base: format!("http://{}", self.addr),
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        Req::new(&self.agent, Method::Get, self.url(path))
    }

    pub fn post(&self, path: &str) -> Req<'_> {
        Req::new(&self.agent, Method::Post, self.url(path))
    }

    pub fn put(&self, path: &str) -> Req<'_> {
        Req::new(&self.agent, Method::Put, self.url(path))
    }

    pub fn delete(&self, path: &str) -> Req<'_> {
        Req::new(&self.agent, Method::Delete, self.url(path))
    }

    /// POST /api/v1/events with `application/cloudevents-batch+json`.
    pub fn ingest_batch(&self, events: &[Value]) -> Resp {
        batch_request(self.post("/api/v1/events"), events).send()
    }

    /// POST /api/v1/events with one `application/cloudevents+json` event.
    pub fn ingest_one(&self, event: &Value) -> Resp {
        self.post("/api/v1/events")
            .body("application/cloudevents+json", event.to_string())
            .send()
    }

    /// GET /api/v1/meters/{slug}/query with the given query parameters.
    pub fn query(&self, slug: &str, params: &[(&str, String)]) -> Resp {
        let mut req = self.get(&format!("/api/v1/meters/{slug}/query"));
        for (k, v) in params {
            req = req.query(k, v);
        }
        req.send()
    }

    /// POST /api/v1/meters; panics unless the answer is 201.
    pub fn create_meter(&self, meter: &Value) -> Value {
        let resp = self.post("/api/v1/meters").json(meter).send();
        assert_eq!(resp.status, 201, "creating meter {meter}: {resp}");
        resp.json()
    }

    /// POST /api/v1/sql; panics unless the answer is 200.
    pub fn sql(&self, sql: &str) -> Value {
        let resp = self
            .post("/api/v1/sql")
            .json(&serde_json::json!({ "sql": sql }))
            .send();
        assert_eq!(resp.status, 200, "SQL {sql:?}: {resp}");
        resp.json()
    }
}

fn batch_request<'a>(req: Req<'a>, events: &[Value]) -> Req<'a> {
    req.body(
        "application/cloudevents-batch+json",
        Value::Array(events.to_vec()).to_string(),
    )
}

/// An owned, `Send` HTTP client for one server address.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    pub fn post(&self, path: &str) -> Req<'_> {
        Req::new(&self.agent, Method::Post, format!("{}{path}", self.base))
    }

    /// POST /api/v1/events with `application/cloudevents-batch+json`; transport errors are `Err`.
    pub fn try_ingest_batch(&self, events: &[Value]) -> Result<Resp> {
        batch_request(self.post("/api/v1/events"), events).try_send()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- metron log tail ({}) -----\n{}\n-----",
                self.log_path().display(),
                self.log_tail(60)
            );
            if let Some(work) = self.work.take() {
                let kept = work.keep();
                eprintln!("kept the server's files in {}", kept.display());
            }
        }
    }
}

/// The binary under test: `$METRON_BIN` if set (e.g. a release build), else the one cargo built
/// for this test run.
fn metron_binary() -> PathBuf {
    std::env::var_os("METRON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_metron")))
}

fn read_port_file(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let addr: std::net::SocketAddr = text.trim().parse().ok()?;
    Some(addr.to_string())
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) takes two integers and touches none of our memory; `pid` is a child of
    // ours that has not been reaped yet, so it cannot name another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()).context("kill(2)")
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// A request being built; `send` performs it.
pub struct Req<'a> {
    agent: &'a ureq::Agent,
    method: Method,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl<'a> Req<'a> {
    fn new(agent: &'a ureq::Agent, method: Method, url: String) -> Self {
        Req {
            agent,
            method,
            url,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Appends a query parameter (percent-encoded; repeat the call for repeated keys).
    pub fn query(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.query.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.body("application/json", body.to_string())
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push(("Content-Type".to_owned(), content_type.to_owned()));
        self.body = Some(body.into());
        self
    }

    /// Performs the request; panics on transport errors (not on 4xx/5xx).
    pub fn send(self) -> Resp {
        let what = format!("{:?} {}", self.method, self.url);
        self.try_send()
            .unwrap_or_else(|e| panic!("{what} failed: {e:#}"))
    }

    /// Performs the request; transport errors (connection refused or reset, timeouts) are `Err`.
    pub fn try_send(self) -> Result<Resp> {
        fn decorate<B>(
            mut rb: ureq::RequestBuilder<B>,
            query: &[(String, String)],
            headers: &[(String, String)],
        ) -> ureq::RequestBuilder<B> {
            for (k, v) in query {
                rb = rb.query(k, v);
            }
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            rb
        }
        let (q, h) = (&self.query, &self.headers);
        let result = match self.method {
            Method::Get => decorate(self.agent.get(&self.url), q, h).call(),
            Method::Delete => decorate(self.agent.delete(&self.url), q, h).call(),
            Method::Post | Method::Put => {
                let rb = match self.method {
                    Method::Post => self.agent.post(&self.url),
                    _ => self.agent.put(&self.url),
                };
                let rb = decorate(rb, q, h);
                match &self.body {
                    Some(body) => rb.send(body.as_slice()),
                    None => rb.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| anyhow!("{:?} {}: {e}", self.method, self.url))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| anyhow!("reading the body of {:?} {}: {e}", self.method, self.url))?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

/// A complete HTTP response.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The body as JSON; panics (showing the body) if it is not JSON.
    pub fn json(&self) -> Value {
        self.try_json()
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {self}"))
    }

    pub fn try_json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("not JSON ({e}): {self}"))
    }

    /// Panics (showing the body) unless the status is `status`.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 2000;
        let body = if self.body.len() > MAX {
            let mut end = MAX;
            while !self.body.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &self.body[..end], self.body.len())
        } else {
            self.body.clone()
        };
        write!(
            f,
            "HTTP {} [{}] {}",
            self.status,
            self.content_type().unwrap_or("no content-type"),
            body
        )
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
