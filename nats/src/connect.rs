use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, jetstream};
use pas_runtime::Secret;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Error;

/// How to reach NATS. Every field can be set in the config file under
/// `[nats]`, as `PAS_NATS__<FIELD>`, or by a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs, tried in turn (`nats://host:4222`, `tls://host:4222`).
    pub urls: Vec<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<Secret>,
    /// Authentication token (instead of user and password).
    pub token: Option<Secret>,
    /// File holding an nkey seed (`SU…`) to sign in with.
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT and nkey seed) from `nsc`.
    pub creds_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Longest wait between two reconnect attempts; waits grow
    /// exponentially with jitter up to this.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// How long to wait for JetStream to acknowledge a publish.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Subject prefix of this client's replies (JetStream acks, deliveries,
    /// key-value reads). Unset: `_INBOX_<user>` when `user` is set, so the
    /// accounts file can let each user read only its own replies, else
    /// `_INBOX`.
    pub inbox_prefix: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls: TlsConfig::default(),
            reconnect_max_delay: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            inbox_prefix: None,
        }
    }
}

/// TLS to the NATS server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Refuse to connect without TLS.
    pub required: bool,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl NatsConfig {
    /// The reply subject prefix this client uses (see `inbox_prefix`).
    pub fn inbox(&self) -> String {
        if let Some(prefix) = &self.inbox_prefix {
            return prefix.clone();
        }
        match &self.user {
            Some(user) if is_token(user) => format!("_INBOX_{user}"),
            _ => "_INBOX".into(),
        }
    }
}

/// Whether `s` can stand as one subject token (no separators, no wildcards).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A connected client, its JetStream context, and whether it is connected
/// right now (updated on every connect and disconnect).
#[derive(Debug, Clone)]
pub struct Connection {
    /// The core NATS client.
    pub client: async_nats::Client,
    /// JetStream on that client, with the configured ack timeout.
    pub jetstream: jetstream::Context,
    /// `true` while connected.
    pub connected: watch::Receiver<bool>,
}

/// Wait before reconnect attempt `attempt` (1, 2, …): 100 ms doubling up to
/// `max`, with full jitter in the upper half so many clients do not
/// reconnect in step.
pub fn reconnect_delay(attempt: usize, max: Duration) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let exp = (attempt - 1).min(20) as u32;
    let base = Duration::from_millis(100).saturating_mul(1 << exp).min(max);
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Connects as client `name`. With `wait_for_server` the call returns at once
/// even if no server is up yet and the client keeps trying in the background
/// (what a long-running stage wants); without it, an unreachable server is an
/// error (what a command-line tool wants).
pub async fn connect(config: &NatsConfig, name: &str, wait_for_server: bool) -> Result<Connection, Error> {
    let (tx, rx) = watch::channel(false);
    let max_delay = config.reconnect_max_delay;
    let events_tx = tx.clone();
    let inbox = config.inbox();
    if !inbox.split('.').all(is_token) {
        return Err(Error::Config(format!(
            "nats.inbox_prefix {inbox:?} is not a subject without wildcards"
        )));
    }
    let urls = config.urls.join(",");
    // A server that stays away is said once a minute, with what to do.
    let said_unreachable = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let event_urls = urls.clone();
    let mut options = ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(inbox)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, max_delay))
        .event_callback(move |event| {
            let tx = events_tx.clone();
            let said = said_unreachable.clone();
            let urls = event_urls.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("Connected to NATS.");
                        *said.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        let _ = tx.send(true);
                    }
                    Event::Disconnected => {
                        tracing::warn!("Disconnected from NATS; reconnecting.");
                        let _ = tx.send(false);
                    }
                    Event::ClientError(error) => {
                        let mut said = said.lock().unwrap_or_else(|p| p.into_inner());
                        if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                            *said = Some(std::time::Instant::now());
                            tracing::warn!(
                                urls,
                                %error,
                                "Cannot reach NATS; trying again. Is a server running there? Start one with \
                                 `nats-server -js`, or point at yours with --nats-url (PAS_NATS__URLS)."
                            );
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS client event."),
                }
            }
        });
    if wait_for_server {
        options = options.retry_on_initial_connect();
    }
    match (&config.user, &config.password) {
        (Some(user), password) => {
            let password = password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            options = options.user_and_password(user.clone(), password);
        }
        (None, Some(_)) => tracing::warn!("nats.password is set without nats.user; ignoring it."),
        (None, None) => {}
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &config.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|source| Error::File {
            what: "nats.nkey_seed_file",
            path: path.clone(),
            source,
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| Error::File {
                what: "nats.creds_file",
                path: path.clone(),
                source,
            })?;
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        check_readable("nats.tls.ca_file", ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            check_readable("nats.tls.cert_file", cert)?;
            check_readable("nats.tls.key_file", key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => tracing::warn!("nats.tls.cert_file and key_file go together; ignoring the one given."),
    }

    // Each URL on its own: the client does not split a comma-separated
    // string, so a list of servers (a cluster) must go as a list.
    let client = options
        .connect(config.urls.as_slice())
        .await
        .map_err(|source| Error::Connect {
            urls: urls.clone(),
            source,
        })?;
    if client.connection_state() == async_nats::connection::State::Connected {
        let _ = tx.send(true);
    }
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        .build(client.clone());
    Ok(Connection {
        client,
        jetstream,
        connected: rx,
    })
}

fn check_readable(what: &'static str, path: &PathBuf) -> Result<(), Error> {
    std::fs::metadata(path).map(|_| ()).map_err(|source| Error::File {
        what,
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(30);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        for attempt in 1..40 {
            let d = reconnect_delay(attempt, max);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(max);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        let samples: std::collections::BTreeSet<_> = (0..20).map(|_| reconnect_delay(10, max)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    #[test]
    fn each_user_gets_its_own_inbox_prefix() {
        let mut config = NatsConfig::default();
        assert_eq!(config.inbox(), "_INBOX");
        config.user = Some("scaler".into());
        assert_eq!(config.inbox(), "_INBOX_scaler");
        // A user name that cannot be a token falls back rather than
        // becoming a wildcard.
        config.user = Some("a.>".into());
        assert_eq!(config.inbox(), "_INBOX");
        config.inbox_prefix = Some("_R.team".into());
        assert_eq!(config.inbox(), "_R.team");
    }
}
