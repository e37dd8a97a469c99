//! `pas`: the PAS command line. `pas bus init` provisions the streams and
//! buckets; `pas bus status` shows them. The pipeline's stages and the
//! experiment tools join it as they are built.

mod models;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pas_nats::NatsConfig;
use pas_nats::provision::{self, Action};
use serde::{Deserialize, Serialize};

/// Predictive autoscaler for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "pas", version)]
struct Cli {
    /// Configuration file (TOML, or JSON by extension); its [nats] table is used.
    #[arg(long, short = 'c', global = true, env = "PAS_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL; repeat for several [default: nats://127.0.0.1:4222].
    #[arg(long = "nats-url", global = true)]
    nats_urls: Vec<String>,
    /// NATS user (the password comes from the file or PAS_NATS__PASSWORD).
    #[arg(long, global = true)]
    nats_user: Option<String>,
    /// NATS credentials file (.creds).
    #[arg(long, global = true)]
    nats_creds: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The NATS side: streams, buckets.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Forecasting models: backtest them on recorded traces, train offline.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Create or update the streams PAS_SAMPLES, PAS_FORECASTS, PAS_DECISIONS,
    /// PAS_DLQ, the key-value bucket pas-scaler and the object store
    /// pas-models. Safe to run again: it changes only what differs.
    Init {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show each stream's messages, size and consumers, and any drift from
    /// the definitions. Exits 1 when something is missing or drifted.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print messages as they arrive, one `subject payload` line each, like
    /// `nats sub` (for machines without the nats CLI).
    Tail {
        /// Subject to subscribe to.
        #[arg(default_value = "pas.>")]
        subject: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// The part of a stage configuration file the CLI reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct CliConfig {
    nats: NatsConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides: Vec<(&str, config::Value)> = Vec::new();
    if !cli.nats_urls.is_empty() {
        overrides.push(("nats.urls", cli.nats_urls.clone().into()));
    }
    if let Some(user) = &cli.nats_user {
        overrides.push(("nats.user", user.clone().into()));
    }
    if let Some(creds) = &cli.nats_creds {
        overrides.push(("nats.creds_file", creds.display().to_string().into()));
    }
    // Stage files have other tables too: read only [nats] from them.
    let config: CliConfig = pas_runtime::config::load(cli.config.as_deref(), std::env::vars(), overrides)
        .context("loading the configuration")?;
    pas_runtime::telemetry::init(false, "warn");
    if let Command::Models { command } = cli.command {
        return models::run(command);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Bus { command } => bus(command, &config.nats).await,
            Command::Models { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}

async fn bus(command: BusCommand, nats: &NatsConfig) -> anyhow::Result<()> {
    let conn = pas_nats::connect(nats, "pas-cli", false).await?;
    match command {
        BusCommand::Tail { subject, count } => {
            let mut sub = conn.client.subscribe(subject.clone()).await?;
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let next = tokio::select! {
                    m = futures::StreamExt::next(&mut sub) => m,
                    _ = tokio::signal::ctrl_c() => None,
                };
                let Some(msg) = next else { break };
                println!("{} {}", msg.subject, String::from_utf8_lossy(&msg.payload));
                seen += 1;
            }
        }
        BusCommand::Init { json } => {
            let done = provision::init(&conn.jetstream).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("{:<16} {:<10} changed", "stream", "action");
                for p in &done {
                    let action = match p.action {
                        Action::Created => "created",
                        Action::Updated => "updated",
                        Action::Unchanged => "unchanged",
                    };
                    println!("{:<16} {:<10} {}", p.stream, action, p.changed.join(","));
                }
            }
        }
        BusCommand::Status { json } => {
            let status = provision::status(&conn.jetstream).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{:<16} {:>10} {:>12} {:>9} {:>10}  drift", "stream", "messages", "bytes", "consumers", "last seq");
                for s in &status {
                    if s.exists {
                        println!(
                            "{:<16} {:>10} {:>12} {:>9} {:>10}  {}",
                            s.stream, s.messages, s.bytes, s.consumers, s.last_sequence, s.drift.join(",")
                        );
                    } else {
                        println!("{:<16} missing: run `pas bus init`", s.stream);
                    }
                }
            }
            conn.client.drain().await.ok();
            if status.iter().any(|s| !s.exists || !s.drift.is_empty()) {
                std::process::exit(1);
            }
            return Ok(());
        }
    }
    conn.client.drain().await.ok();
    Ok(())
}
