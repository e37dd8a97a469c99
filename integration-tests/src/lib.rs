//! Test harness: real servers started per test.
//!
//! [`NatsServer`] runs the real `nats-server` binary with JetStream on a
//! random port (`-p -1`) and a temporary store, one per test, so tests run in
//! parallel; it is killed on `Drop`. It can be killed and restarted on the
//! same port and store mid-test, to test outages.
//!
//! The binary is found as `$NATS_SERVER`, then in the set-up cache
//! (`$PAS_CACHE/bin`, default `~/.cache/pas/bin`), then on `PATH`;
//! `make test` installs it there.
//!
//! [`VictoriaMetrics`] runs the real `victoria-metrics` binary (Debian's
//! package, installed by `make test` into the same cache, or
//! `$VICTORIA_METRICS`): a server that takes InfluxDB 2's
//! `POST /api/v2/write` and lets a test read the points back through its
//! export API. InfluxDB 2 itself cannot be installed here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    accounts: bool,
}

impl NatsServer {
    /// Starts a server with JetStream on a random port.
    pub fn start() -> Self {
        Self::start_with(None, Vec::new())
    }

    /// Starts a server from a configuration file, with extra environment
    /// variables (the file's `$VARS`); port and store are still the test's own.
    pub fn start_with(config: Option<&Path>, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // JetStream reserves each stream's max_bytes when it is created (8 GiB
        // for the PAS streams); a server without max_file_store offers only 75 %
        // of the disk's free space, which a CI machine may not have. The tests
        // store a few megabytes, so they state the limit as nats/server.conf does.
        let config = config.map(Path::to_owned).unwrap_or_else(|| {
            let path = dir.path().join("server.conf");
            std::fs::write(
                &path,
                "jetstream {\n  max_memory_store: 256MB\n  max_file_store: 20GB\n}\n",
            )
            .expect("write the server configuration");
            path
        });
        let mut server = NatsServer {
            child: None,
            dir,
            port: 0,
            config: Some(config),
            env,
            accounts: false,
        };
        server.spawn(None);
        server
    }

    /// Starts a server with `nats/server.conf`: its users and permissions,
    /// each user's password `<user>-pw` (see [`NatsServer::as_user`]).
    pub fn with_accounts() -> Self {
        let env = [
            "ADMIN",
            "AGENT",
            "TRAINER",
            "FORECASTER",
            "SCALER",
            "RECORDER",
            "VIEWER",
        ]
        .iter()
        .map(|u| (format!("PAS_{u}_PASSWORD"), format!("{}-pw", u.to_lowercase())))
        .collect();
        let mut server = Self::start_with(Some(&repo_root().join("nats/server.conf")), env);
        server.accounts = true;
        server
    }

    /// How `user` of [`NatsServer::with_accounts`] connects (on a server
    /// without accounts, anonymously: the tests of a stage run it as its
    /// own user on either).
    pub fn as_user(&self, user: &str) -> pas_nats::NatsConfig {
        if !self.accounts {
            return pas_nats::NatsConfig {
                urls: vec![self.url()],
                ..Default::default()
            };
        }
        pas_nats::NatsConfig {
            urls: vec![self.url()],
            user: Some(user.into()),
            password: Some(pas_runtime::Secret::new(format!("{user}-pw"))),
            ack_timeout: Duration::from_secs(2),
            ..Default::default()
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far (with `PAS_NATS_TRACE=1` in the
    /// environment, every protocol line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server process (SIGSTOP) without closing its connections:
    /// every call to it hangs, as with a server that is overloaded or
    /// behind a partition, until [`NatsServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(Some(port));
    }

    fn spawn(&mut self, port: Option<u16>) {
        let store = self.dir.path().join("jetstream");
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports directory");
        let mut cmd = Command::new(binary());
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.arg("-js")
            .arg("-sd")
            .arg(&store)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into()))
            .arg("--ports_file_dir")
            .arg(&ports)
            .args(std::env::var_os("PAS_NATS_TRACE").map(|_| "-DV"))
            .envs(self.env.iter().cloned());
        let mut child = spawn_logged(cmd, &self.dir.path().join("server.log"), "NATS_SERVER");
        let deadline = Instant::now() + Duration::from_secs(15);
        self.port = loop {
            if let Some(port) = read_port(&ports) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("nats-server exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "nats-server did not start within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_port(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
    let url = ports["nats"][0].as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Connects to `server` as an admin and provisions the streams and buckets.
pub async fn connect_and_provision(server: &NatsServer) -> pas_nats::Connection {
    let config = pas_nats::NatsConfig {
        ack_timeout: Duration::from_secs(5),
        ..server.as_user("admin")
    };
    let conn = pas_nats::connect(&config, "test", false)
        .await
        .expect("connect to the test server");
    pas_nats::provision::init(&conn.jetstream, Default::default())
        .await
        .expect("provision the streams");
    conn
}

/// What the server says of `stream` now (a test's read: it panics when
/// the stream cannot be read).
pub async fn stream_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> async_nats::jetstream::stream::Info {
    js.get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("open stream {stream}: {e}"))
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream {stream} info: {e}"))
        .clone()
}

/// Where the nats-server binary is.
pub fn binary() -> PathBuf {
    find_binary("NATS_SERVER", "nats-server")
}

/// Starts a test server's binary (`cmd`, found by [`find_binary`] under
/// `variable`), its output appended to `log`; one that cannot start fails
/// the test with how to install it.
fn spawn_logged(mut cmd: Command, log: &Path, variable: &str) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the server's log file");
    cmd.stdout(Stdio::null()).stderr(Stdio::from(file));
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e}. Run `make test` or `scripts/setup.sh tools`, \
             which install it into ~/.cache/pas/bin, or set {variable}.",
            cmd.get_program().to_string_lossy()
        )
    })
}

/// `$<variable>`, else `<name>` in the set-up cache's `bin/`, else on `PATH`.
fn find_binary(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("PAS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pas")));
    if let Some(candidate) = cache.map(|c| c.join("bin").join(name))
        && candidate.exists()
    {
        return candidate;
    }
    PathBuf::from(name)
}

/// Tries `spawn` on up to five free ports; whether one started.
fn on_a_free_port(mut spawn: impl FnMut(u16) -> bool) -> bool {
    (0..5).any(|_| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        spawn(port)
    })
}

/// Waits until `ready` answers for `child` on `port`, within `within`; the
/// child when it did, else it is killed.
fn until_ready(mut child: Child, within: Duration, ready: impl Fn() -> bool) -> Option<Child> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if ready() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The `pas` binary `make test` builds.
pub fn pas_binary() -> PathBuf {
    let pas = repo_root().join("target/debug/pas");
    assert!(
        pas.exists(),
        "{} is missing: run `cargo build -p pas-cli` (make test does)",
        pas.display()
    );
    pas
}

/// A child process, killed when dropped: a failing test leaves none behind.
pub struct Process(pub Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// SIGTERM, then waits up to `timeout` for the exit: its status, or
    /// `None` when it did not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `pas args…` as a process of its own with `env` (and `NO_COLOR`); its
/// log lines (stderr) arrive on the receiver.
pub fn spawn_pas(args: &[&str], env: &[(&str, &str)]) -> (Process, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut command = Command::new(pas_binary());
    command.args(args).env("NO_COLOR", "1").stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start pas");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Process(child), rx)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The value of the series `name` (no labels) on a `/metrics` endpoint on
/// loopback, if it answers and has it.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let (status, body) = http_get_blocking(port, "/metrics")?;
    if status != 200 {
        return None;
    }
    body.lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Runs `pas args…` as `user` of [`NatsServer::with_accounts`] on `server`.
pub fn run_pas(server: &NatsServer, user: &str, args: &[&str]) -> std::process::Output {
    Command::new(pas_binary())
        .args(args)
        .env("PAS_NATS__URLS", server.url())
        .env("PAS_NATS__USER", user)
        .env("PAS_NATS__PASSWORD", format!("{user}-pw"))
        .output()
        .expect("run pas")
}

/// A real Prometheus server (Debian's package, installed by the set-up
/// script) whose TSDB `promtool tsdb create-blocks-from openmetrics`
/// backfilled from a file; on loopback, killed on `Drop`.
pub struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prometheus {
    /// Backfills a fresh TSDB from `openmetrics` (OpenMetrics text ending in
    /// `# EOF`) and starts a server on it, on a free port.
    pub fn backfilled(openmetrics: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("history.om");
        std::fs::write(&file, openmetrics).expect("write the OpenMetrics file");
        let data = dir.path().join("data");
        let promtool = find_binary("PROMTOOL", "promtool");
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run promtool ({}): {e}. Run `make test` or `scripts/setup.sh tools`, \
                     which install it into ~/.cache/pas/bin, or set PROMTOOL.",
                    promtool.display()
                )
            });
        assert!(
            out.status.success(),
            "promtool failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 1m\n",
        )
        .expect("write the configuration");
        let mut prom = Prometheus {
            child: None,
            dir,
            port: 0,
        };
        if !on_a_free_port(|port| prom.spawn(port)) {
            panic!("prometheus did not start:\n{}", prom.log());
        }
        prom
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn spawn(&mut self, port: u16) -> bool {
        let mut cmd = Command::new(find_binary("PROMETHEUS", "prometheus"));
        cmd.arg(format!(
            "--config.file={}",
            self.dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            self.dir.path().join("data").display()
        ))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let child = spawn_logged(cmd, &self.dir.path().join("prometheus.log"), "PROMETHEUS");
        let ready = || http_get_blocking(port, "/-/ready").is_some_and(|(status, _)| status == 200);
        self.child = until_ready(child, Duration::from_secs(30), ready);
        self.port = port;
        self.child.is_some()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running VictoriaMetrics, speaking InfluxDB 2's write API on loopback,
/// with its own store; killed on `Drop`.
pub struct VictoriaMetrics {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

/// One series read back: its labels (`__name__` is `<measurement>_<field>`),
/// and its points as (Unix milliseconds, value), oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels: the point's tags and `__name__`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// (time in ms, value).
    pub points: Vec<(i64, f64)>,
}

impl VictoriaMetrics {
    /// Starts one on a free port. Retention is 100 years, so points of any
    /// age are kept.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut vm = VictoriaMetrics {
            child: None,
            dir,
            port: 0,
        };
        if !on_a_free_port(|port| vm.spawn(port)) {
            panic!("victoria-metrics did not start:\n{}", vm.log());
        }
        vm
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vm.log")).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it as an orchestrator would (SIGTERM, then waits): it writes
    /// what it holds in memory to disk first. A SIGKILL would lose the last
    /// seconds of points, which InfluxDB's write-ahead log would keep.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again (after [`VictoriaMetrics::stop`]) on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(self.port),
            "victoria-metrics did not restart:\n{}",
            self.log()
        );
    }

    fn spawn(&mut self, port: u16) -> bool {
        let mut cmd = Command::new(find_binary("VICTORIA_METRICS", "victoria-metrics"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y");
        let child = spawn_logged(cmd, &self.dir.path().join("vm.log"), "VICTORIA_METRICS");
        let ready = || {
            http_get_blocking(port, "/health")
                .is_some_and(|(status, body)| status == 200 && body.trim() == "OK")
        };
        self.child = until_ready(child, Duration::from_secs(15), ready);
        self.port = port;
        self.child.is_some()
    }

    /// Every series whose name matches the regular expression `name`, as
    /// stored so far (it asks the server to make fresh points searchable).
    pub async fn export(&self, name: &str) -> Vec<Series> {
        let port = self.port;
        let query = format!("match[]={}", percent_encode(&format!("{{__name__=~\"{name}\"}}")));
        tokio::task::spawn_blocking(move || {
            let _ = http_get_blocking(port, "/internal/force_flush");
            let Some((200, body)) = http_get_blocking(port, &format!("/api/v1/export?{query}")) else {
                return Vec::new();
            };
            let mut all: Vec<Series> = body
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("export lines are JSON");
                    let labels = v["metric"]
                        .as_object()
                        .expect("metric labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    let times = v["timestamps"].as_array().expect("timestamps");
                    let values = v["values"].as_array().expect("values");
                    let mut points: Vec<(i64, f64)> = times
                        .iter()
                        .zip(values)
                        .map(|(t, v)| (t.as_i64().unwrap_or_default(), v.as_f64().unwrap_or(f64::NAN)))
                        .collect();
                    points.sort_by_key(|p| p.0);
                    Series { labels, points }
                })
                .collect();
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            all
        })
        .await
        .expect("the export request")
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET on loopback with HTTP/1.0: (status, body), or `None` when the
/// server does not answer.
fn http_get_blocking(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This process's resident memory (VmRSS), in bytes; 0 where /proc has none.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kb.unwrap_or(0) * 1024
}

/// Asks a stage to stop (`stop`), waits for its `task` (a minute at most),
/// prints how long it took and checks it was under 10 s: SIGTERM must end
/// a stage in time even with NATS down. Returns what the task returned.
pub async fn exits_within_ten_seconds<T>(
    what: &str,
    stop: impl FnOnce(),
    task: tokio::task::JoinHandle<T>,
) -> T {
    let asked = Instant::now();
    stop();
    let out = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within a minute"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"));
    let took = asked.elapsed();
    println!("{what}: exit with NATS down took {took:?}");
    assert!(took < Duration::from_secs(10), "{what} took {took:?} to exit");
    out
}
