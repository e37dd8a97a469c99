//! `pas`: the PAS command line. Start reading at [`Command`]: `pas bus`
//! provisions and shows the streams and buckets; `pas trainer`,
//! `forecaster`, `scaler` and `recorder` run the stages; `pas replay`,
//! `record` and `loadgen` move recorded load; `pas experiment` and
//! `pas models` work offline (they have no NATS flags). `main` prints an
//! error once, on one line, and exits 1.

mod experiment;
mod import;
mod models;
mod replay;
mod shadow;

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
    #[command(subcommand)]
    command: Command,
}

/// Where NATS is: the flags of every command that talks to the bus (the
/// offline ones, `experiment`, `models` and `loadgen`, have none).
#[derive(Debug, Clone, clap::Args)]
struct BusArgs {
    /// Configuration file (TOML, or JSON by extension): the stage's settings
    /// for `pas trainer`, `pas forecaster`, `pas scaler` and `pas recorder`; for the other commands only its
    /// [nats] table is read.
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
}

impl BusArgs {
    /// The flags as configuration overrides.
    fn overrides(&self) -> Vec<(&'static str, config::Value)> {
        let mut overrides: Vec<(&str, config::Value)> = Vec::new();
        if !self.nats_urls.is_empty() {
            overrides.push(("nats.urls", self.nats_urls.clone().into()));
        }
        if let Some(user) = &self.nats_user {
            overrides.push(("nats.user", user.clone().into()));
        }
        if let Some(creds) = &self.nats_creds {
            overrides.push(("nats.creds_file", creds.display().to_string().into()));
        }
        overrides
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The NATS side: streams, buckets.
    Bus {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Run the trainer stage: build each workload's utilisation series from
    /// PAS_SAMPLES, train and backtest models, store versions in pas-models.
    /// Settings: --config FILE, PAS_* variables (PAS_STEP=5s,
    /// PAS_MODEL__HIDDEN=32), these flags; every key is in README.md, "The trainer".
    Trainer(TrainerArgs),
    /// Run the forecaster stage: keep each workload's recent utilisation from
    /// PAS_SAMPLES and publish its forecast every tick to
    /// pas.forecast.<namespace>.<workload>, with the newest accepted model
    /// from pas-models (or the naive baseline). Replicas share the workloads
    /// through partition leases. Settings: --config FILE, PAS_* variables,
    /// these flags; every key is in README.md, "The forecaster".
    Forecaster(ForecasterArgs),
    /// Run the scaler stage: turn forecasts (and, without them, samples)
    /// into StatefulSet replica changes through the scale subresource, with
    /// HPA-grade guardrails; publish every decision to
    /// pas.scale.<namespace>.<workload>. One scaler acts (a lease in KV
    /// pas-scaler); others stand by. Per-StatefulSet settings come from
    /// pas.io/ annotations. Settings: --config FILE, PAS_* variables
    /// (PAS_DEFAULTS__POLICY=hpa), these flags; every key is in docs/scaler.md.
    Scaler(ScalerArgs),
    /// Run the recorder stage: write samples (cpu_usage_current, per pod and
    /// per workload), forecasts (cpu_usage_predicted) and decisions
    /// (scale_decision) to InfluxDB 2 in batches, acking each message once
    /// its points are written. The token comes from the file or
    /// PAS_INFLUX__TOKEN; every key is in README.md, "The recorder".
    Recorder(RecorderArgs),
    /// Compare scaling policies on recorded traces in virtual time: the
    /// trainer's training on the first part of each trace, the forecaster's
    /// inference and the scaler's policies on a simulated StatefulSet over
    /// the rest, against a perfect-foresight oracle. Writes report.md,
    /// results.json and plots (PNG and SVG) to --report.
    Experiment(experiment::ExperimentArgs),
    /// Publish recorded load as pod samples of one workload under
    /// replay.<RUN>.: a trace (its cpu percent of --pods pods' worth of CPU),
    /// JSON lines of samples, or a time range of PAS_SAMPLES; at real time,
    /// a speed factor or as fast as acks allow; with --simulate, through a
    /// simulated StatefulSet that follows the scaler's decisions.
    Replay {
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        args: replay::ReplayArgs,
    },
    /// Write pod samples from the bus (live, or a range of PAS_SAMPLES) to
    /// a trace file (.csv) or as JSON lines (.jsonl), to replay later.
    Record {
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        args: replay::RecordArgs,
    },
    /// Burn CPU following a trace's profile (per-core duty cycle): the
    /// container of the example target StatefulSet.
    Loadgen(replay::LoadgenArgs),
    /// Import history from elsewhere: `pas import prometheus`.
    Import {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: import::ImportCommand,
    },
    /// Shadow mode: what PAS would have run beside the HPAs that scale
    /// your workloads, against what ran (docs/compare-with-your-hpa.md).
    Shadow {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: shadow::ShadowCommand,
    },
    /// Forecasting models: backtest them on recorded traces, train offline.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

/// The fleet `pas bus init` sizes the growing streams for
/// (`pas_nats::sizing`); without `--workloads`, the definition files' limits.
#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// Size PAS_SAMPLES, PAS_FORECASTS and PAS_DECISIONS for this many
    /// workloads (docs/sizing.md gives the formula); pass the same to `bus
    /// status`. Without it, the definition files' limits (PAS_SAMPLES 4 GiB).
    #[arg(long)]
    workloads: Option<u64>,
    /// Pods per workload, on average.
    #[arg(long, default_value_t = 3, requires = "workloads")]
    pods_per_workload: u64,
    /// How often the node agents sample each pod.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, requires = "workloads")]
    sample_interval: std::time::Duration,
    /// How often each workload is forecast and decided (the forecaster's tick).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, requires = "workloads")]
    forecast_interval: std::time::Duration,
    /// How long samples, forecasts and decisions are kept (at least 1h: the
    /// trainer trains on what the stream holds).
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration, requires = "workloads")]
    retention: std::time::Duration,
    /// Characters in your namespace, workload, pod and node names, on
    /// average: a stored message grows with them [default: 63, the most].
    #[arg(long, default_value_t = 63, requires = "workloads")]
    name_length: u64,
}

impl FleetArgs {
    fn fleet(&self) -> anyhow::Result<Option<pas_nats::sizing::Fleet>> {
        let Some(workloads) = self.workloads else {
            return Ok(None);
        };
        let fleet = pas_nats::sizing::Fleet {
            workloads,
            pods: self.pods_per_workload,
            sample_interval: self.sample_interval,
            forecast_interval: self.forecast_interval,
            retention: self.retention,
            name_length: self.name_length,
        };
        fleet.check().map_err(|e| anyhow::anyhow!("--workloads: {e}"))?;
        Ok(Some(fleet))
    }
}

/// What the streams will reserve, printed before `pas bus init` makes them.
fn print_reservation(fleet: Option<&pas_nats::sizing::Fleet>) {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if let Some(f) = fleet {
        println!(
            "Sized for {} workloads × {} pods, samples every {}, forecasts every {}, kept {}:",
            f.workloads,
            f.pods,
            humantime::format_duration(f.sample_interval),
            humantime::format_duration(f.forecast_interval),
            humantime::format_duration(f.retention)
        );
        println!(
            "{:<17} {:>12} {:>12} {:>9}",
            "stream", "messages/s", "max_bytes", "max_age"
        );
        for r in f.reserve() {
            println!(
                "{:<17} {:>12.1} {:>8.1} GiB {:>9}",
                r.stream,
                r.per_second,
                gib(r.max_bytes),
                humantime::format_duration(r.max_age).to_string()
            );
        }
    }
    println!(
        "The streams and buckets reserve {:.1} GiB of JetStream file storage in all (the server's max_file_store must exceed it).",
        gib(provision::reserved_bytes(fleet))
    );
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Create or update the streams PAS_SAMPLES, PAS_FORECASTS, PAS_DECISIONS,
    /// PAS_DLQ, PAS_TRAINING, the key-value buckets pas-scaler, pas-forecaster and
    /// pas-history, the object store pas-models and the stages' live
    /// consumers (only the admin may). Safe to run again: it changes only
    /// what differs.
    Init {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Replicas of every stream and bucket (3 on a three-node NATS
        /// cluster; the chart passes its NATS replicas). Without it, new
        /// streams get one and existing ones keep theirs.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show each stream's messages, size, consumers and replicas, and any
    /// drift from the definitions (its live consumers' included). Exits 1
    /// when something is missing or drifted.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Report a stream with another number of replicas as drift.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
        #[command(flatten)]
        fleet: FleetArgs,
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

/// The flags every stage takes.
#[derive(Debug, clap::Args)]
struct StageArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Read samples (and store or serve models) under replay.<RUN>. instead
    /// of the live subjects.
    #[arg(long)]
    run: Option<String>,
    /// Step of the utilisation series, e.g. 5s [default: 5s] (trainer, forecaster, recorder).
    #[arg(long)]
    step: Option<String>,
    /// Address for /healthz, /readyz and /metrics [default: 0.0.0.0:9465
    /// for the trainer, 0.0.0.0:9466 for the forecaster, 0.0.0.0:9467 for the scaler,
    /// 0.0.0.0:9468 for the recorder].
    #[arg(long)]
    listen: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print the effective configuration as JSON (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, clap::Args)]
struct TrainerArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// Steps of history before a workload's first model [default: 720].
    #[arg(long)]
    min_history: Option<u64>,
    /// Train again after this much new data, e.g. 1h [default: 1h].
    #[arg(long)]
    retrain_after: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ForecasterArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// Forecast every TICK, e.g. 1s [default: the step].
    #[arg(long)]
    tick: Option<String>,
    /// Steps of history kept per workload [default: 96].
    #[arg(long)]
    history: Option<u64>,
    /// This replica's name, unique among replicas [default: random].
    #[arg(long, env = "POD_NAME")]
    replica: Option<String>,
    /// Partitions the workloads are hashed into; the same on every replica [default: 32].
    #[arg(long)]
    partitions: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ScalerArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// Evaluate workloads without a fresh forecast every TICK [default: 5s].
    #[arg(long)]
    tick: Option<String>,
    /// This scaler's name [default: random].
    #[arg(long, env = "POD_NAME")]
    replica: Option<String>,
    /// auto (Kubernetes if configured, else simulated), kube or simulated [default: auto].
    #[arg(long)]
    cluster: Option<String>,
    /// Default policy: hpa, threshold, predictive or hybrid [default: hybrid].
    #[arg(long)]
    policy: Option<String>,
    /// Manage every StatefulSet unless it says pas.io/enabled: "false".
    #[arg(long)]
    all: bool,
    /// Decide and publish, never change a StatefulSet.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
struct RecorderArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// InfluxDB base URL [default: http://127.0.0.1:8086].
    #[arg(long)]
    influx_url: Option<String>,
    /// InfluxDB organisation [default: pas].
    #[arg(long)]
    influx_org: Option<String>,
    /// InfluxDB bucket [default: pas].
    #[arg(long)]
    influx_bucket: Option<String>,
}

/// The part of a stage configuration file the CLI reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct CliConfig {
    nats: NatsConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The stages set up their own logging from their configuration.
    if !matches!(
        cli.command,
        Command::Trainer(_) | Command::Forecaster(_) | Command::Scaler(_) | Command::Recorder(_)
    ) {
        pas_runtime::telemetry::init(false, "warn");
    }
    pas_runtime::exit_code(run(cli.command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Trainer(args) => trainer(&args),
        Command::Forecaster(args) => forecaster(&args),
        Command::Scaler(args) => scaler(&args),
        Command::Recorder(args) => recorder(&args),
        Command::Models { command } => models::run(command),
        Command::Experiment(args) => experiment::run(args),
        Command::Loadgen(args) => replay::run_loadgen(args),
        Command::Bus { bus: flags, command } => {
            let (runtime, nats) = nats_runtime(&flags)?;
            runtime.block_on(bus(command, &nats))
        }
        Command::Replay { bus, args } => {
            // Inputs first: a missing file is reported before NATS is.
            let config = replay::replay_config(&args)?;
            let (runtime, nats) = nats_runtime(&bus)?;
            runtime.block_on(replay::run_replay(&args, config, &nats))
        }
        Command::Import { bus, command } => {
            let (runtime, nats) = nats_runtime(&bus)?;
            runtime.block_on(import::run(command, &nats))
        }
        Command::Shadow { bus, command } => {
            let (runtime, nats) = nats_runtime(&bus)?;
            runtime.block_on(shadow::run(command, &nats))
        }
        Command::Record { bus, args } => {
            let config = replay::record_config(args)?;
            let (runtime, nats) = nats_runtime(&bus)?;
            runtime.block_on(replay::run_record(config, &nats))
        }
    }
}

/// The NATS settings of a command that only talks to the bus (a stage's file
/// has other tables too: only [nats] is read from it), and a runtime to run it.
fn nats_runtime(flags: &BusArgs) -> anyhow::Result<(tokio::runtime::Runtime, NatsConfig)> {
    let config: CliConfig =
        pas_runtime::config::load(flags.config.as_deref(), std::env::vars(), flags.overrides())
            .context("loading the configuration")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((runtime, config.nats))
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
        BusCommand::Init {
            json,
            replicas,
            fleet,
        } => {
            let options = provision::Options {
                replicas: replicas.map(usize::from),
                fleet: fleet.fleet()?,
            };
            if !json {
                print_reservation(options.fleet.as_ref());
            }
            let done = provision::init(&conn.jetstream, options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("{:<38} {:<10} changed", "stream or stream/consumer", "action");
                for p in &done {
                    let action = match p.action {
                        Action::Created => "created",
                        Action::Updated => "updated",
                        Action::Unchanged => "unchanged",
                    };
                    println!("{:<38} {:<10} {}", p.stream, action, p.changed.join(","));
                }
            }
        }
        BusCommand::Status {
            json,
            replicas,
            fleet,
        } => {
            let options = provision::Options {
                replicas: replicas.map(usize::from),
                fleet: fleet.fleet()?,
            };
            let status = provision::status(&conn.jetstream, options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!(
                    "{:<17} {:>10} {:>12} {:>9} {:>10} {:>8}  drift",
                    "stream", "messages", "bytes", "consumers", "last seq", "replicas"
                );
                for s in &status {
                    if s.exists {
                        println!(
                            "{:<17} {:>10} {:>12} {:>9} {:>10} {:>8}  {}",
                            s.stream,
                            s.messages,
                            s.bytes,
                            s.consumers,
                            s.last_sequence,
                            s.replicas,
                            s.drift.join(",")
                        );
                    } else {
                        println!("{:<17} missing: run `pas bus init`", s.stream);
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

fn trainer(args: &TrainerArgs) -> anyhow::Result<()> {
    let mut overrides = args.stage.bus.overrides();
    push_strings(&mut overrides, [("retrain_after", &args.retrain_after)]);
    if let Some(n) = args.min_history {
        overrides.push(("min_history", n.into()));
    }
    let Some(config) = stage_config("trainer", &args.stage, overrides, |c: &pas_trainer::Config| {
        c.log_json
    })?
    else {
        return Ok(());
    };
    let trainer = pas_trainer::Trainer::new(config)?;
    run_stage(|shutdown| trainer.run(shutdown))
}

fn forecaster(args: &ForecasterArgs) -> anyhow::Result<()> {
    let mut overrides = args.stage.bus.overrides();
    push_strings(&mut overrides, [("tick", &args.tick), ("replica", &args.replica)]);
    if let Some(n) = args.history {
        overrides.push(("history", n.into()));
    }
    if let Some(n) = args.partitions {
        overrides.push(("partitions", n.into()));
    }
    let Some(config) = stage_config(
        "forecaster",
        &args.stage,
        overrides,
        |c: &pas_forecaster::Config| c.log_json,
    )?
    else {
        return Ok(());
    };
    let forecaster = pas_forecaster::Forecaster::new(config)?;
    run_stage(|shutdown| forecaster.run(shutdown))
}

fn scaler(args: &ScalerArgs) -> anyhow::Result<()> {
    let mut overrides = args.stage.bus.overrides();
    push_strings(
        &mut overrides,
        [
            ("tick", &args.tick),
            ("replica", &args.replica),
            ("cluster", &args.cluster),
            ("defaults.policy", &args.policy),
        ],
    );
    if args.all {
        overrides.push(("defaults.enabled", true.into()));
    }
    if args.dry_run {
        overrides.push(("defaults.dry_run", true.into()));
    }
    let Some(config) = stage_config("scaler", &args.stage, overrides, |c: &pas_scaler::Config| {
        c.log_json
    })?
    else {
        return Ok(());
    };
    run_stage(|shutdown| pas_scaler::run(config, shutdown))
}

fn recorder(args: &RecorderArgs) -> anyhow::Result<()> {
    let mut overrides = args.stage.bus.overrides();
    push_strings(
        &mut overrides,
        [
            ("influx.url", &args.influx_url),
            ("influx.org", &args.influx_org),
            ("influx.bucket", &args.influx_bucket),
        ],
    );
    let Some(config) = stage_config("recorder", &args.stage, overrides, |c: &pas_recorder::Config| {
        c.log_json
    })?
    else {
        return Ok(());
    };
    let recorder = pas_recorder::Recorder::new(config)?;
    run_stage(|shutdown| recorder.run(shutdown))
}

fn push_strings<'a, const N: usize>(
    overrides: &mut Vec<(&'a str, config::Value)>,
    flags: [(&'a str, &Option<String>); N],
) {
    for (key, value) in flags {
        if let Some(v) = value {
            overrides.push((key, v.clone().into()));
        }
    }
}

/// A stage's configuration from its layers and the flags every stage takes;
/// `None` after printing it for `--print-config`. Starts logging.
fn stage_config<'a, C: serde::de::DeserializeOwned + Serialize + Default>(
    stage: &str,
    args: &'a StageArgs,
    mut overrides: Vec<(&'a str, config::Value)>,
    log_json: impl Fn(&C) -> bool,
) -> anyhow::Result<Option<C>> {
    push_strings(
        &mut overrides,
        [("run", &args.run), ("step", &args.step), ("listen", &args.listen)],
    );
    if args.log_json {
        overrides.push(("log_json", true.into()));
    }
    let config: C = pas_runtime::config::load(args.bus.config.as_deref(), std::env::vars(), overrides)
        .with_context(|| format!("loading the {stage} configuration"))?;
    let described = pas_runtime::config::describe(&config);
    if args.print_config {
        println!("{described}");
        return Ok(None);
    }
    pas_runtime::telemetry::init(log_json(&config), "info");
    tracing::info!(config = %described, "Starting the {stage}.");
    Ok(Some(config))
}

/// Runs a stage on a two-thread runtime until SIGTERM or SIGINT.
fn run_stage<F, Fut, E>(stage: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let shutdown = pas_runtime::shutdown::on_signal();
        stage(shutdown).await
    });
    // Blocking work (a training job told to stop) gets a moment to end;
    // the process does not wait longer.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    Ok(())
}
