//! Tracing set-up for every stage.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Starts logging to stderr. `RUST_LOG` filters (default `default`, e.g.
/// `info` for a stage, `warn` for a command-line tool); `json` selects one
/// JSON object per line, for log collectors. Colours only on a terminal.
pub fn init(json: bool, default: &str) {
    // The NATS client's own reconnect chatter is left out: PAS says what
    // matters about the connection itself (pas_nats::connect).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},async_nats=warn")));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests that run several stages) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
