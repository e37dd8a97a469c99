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
        let mut server = NatsServer { child: None, dir, port: 0, config: config.map(Path::to_owned), env };
        server.spawn(None);
        server
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

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("server.log"))
                    .expect("server log"),
            ));
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({}): {e}. Run `make test` or `scripts/setup.sh tools`, \
                 which install it into ~/.cache/pas/bin, or set NATS_SERVER.",
                binary().display()
            )
        });
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
    let entry = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).find(|e| {
        e.path().extension().is_some_and(|x| x == "ports")
    })?;
    let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
    let url = ports["nats"][0].as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Connects to `server` as an admin and provisions the streams and buckets.
pub async fn connect_and_provision(server: &NatsServer) -> pas_nats::Connection {
    let config = pas_nats::NatsConfig { urls: vec![server.url()], ..Default::default() };
    let conn = pas_nats::connect(&config, "test", false).await.expect("connect to the test server");
    pas_nats::provision::init(&conn.jetstream).await.expect("provision the streams");
    conn
}

/// Where the nats-server binary is.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("PAS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pas")));
    if let Some(candidate) = cache.map(|c| c.join("bin/nats-server"))
        && candidate.exists() {
            return candidate;
        }
    PathBuf::from("nats-server")
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
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
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
