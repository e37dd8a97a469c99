//! `pas replay`, `pas record` and `pas loadgen`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use pas_nats::NatsConfig;
use pas_replay::{loadgen, record, replay};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A `timestamp,cpu` CSV trace, or JSON lines of pod samples (.jsonl).
    #[arg(long, conflicts_with = "since")]
    trace: Option<PathBuf>,
    /// Re-publish what PAS_SAMPLES holds on the live subjects from this
    /// time (RFC 3339) ...
    #[arg(long, requires = "until")]
    since: Option<DateTime<Utc>>,
    /// ... to this time.
    #[arg(long, requires = "since")]
    until: Option<DateTime<Utc>>,
    /// Run name: samples go to replay.<RUN>.pas.cpu.…
    #[arg(long)]
    run: String,
    /// Namespace of the replayed workload.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// StatefulSet name of the replayed workload.
    #[arg(long, default_value = "replayed")]
    workload: String,
    /// A trace's 100 % is this many pods' worth of CPU (and the replicas).
    #[arg(long, default_value_t = 4)]
    pods: u32,
    /// CPU request (and most use) of one pod, millicores.
    #[arg(long, default_value_t = 1000.0)]
    pod_cpu: f64,
    /// Trace time runs this many times faster than the wall clock (1 = real
    /// time), or `max` to publish as fast as acks allow.
    #[arg(long, default_value = "1")]
    speed: String,
    /// Keep the trace's own timestamps instead of compressing them by the
    /// speed and moving them to now.
    #[arg(long)]
    original_timestamps: bool,
    /// Publish this share of the rows at once (dated before now), then pace the rest.
    #[arg(long, default_value_t = 0.0)]
    backfill: f64,
    /// Close the loop: run the demand through a simulated StatefulSet that
    /// follows the scaler's applied decisions on this run; its pods are
    /// ready after STARTUP (e.g. 10s).
    #[arg(long, value_name = "STARTUP")]
    simulate: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// File to write: .csv (the trace format) or .jsonl (every sample).
    #[arg(long)]
    out: PathBuf,
    /// Record a replay run's subjects instead of the live ones.
    #[arg(long)]
    run: Option<String>,
    /// Only this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only this StatefulSet.
    #[arg(long)]
    workload: Option<String>,
    /// Stop after this many samples.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long, e.g. 10m.
    #[arg(long)]
    duration: Option<String>,
    /// Read PAS_SAMPLES from this time (RFC 3339) instead of listening ...
    #[arg(long, requires = "until", conflicts_with_all = ["count", "duration"])]
    since: Option<DateTime<Utc>>,
    /// ... to this time.
    #[arg(long, requires = "since")]
    until: Option<DateTime<Utc>>,
    /// Step of the CSV rows, whole seconds (as the pipeline's).
    #[arg(long, default_value = "5s")]
    step: String,
    /// Write demand as a percentage of this many pods' worth (pas replay's
    /// rule) instead of utilisation.
    #[arg(long)]
    pods: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// The `timestamp,cpu` CSV trace to follow.
    #[arg(long)]
    trace: PathBuf,
    /// Threads, each burning up to one core; the trace's 100 % is all of them.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Trace time runs this many times faster than the wall clock.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Multiply every value (2 = twice the trace's load).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Start again at the end of the trace.
    #[arg(long = "loop")]
    repeat: bool,
}

fn duration(s: &str, what: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(s).with_context(|| format!("--{what} {s}: expected a duration such as 10s"))
}

fn bar(done: usize, total: usize) -> String {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), " ".repeat(width - filled))
}

/// The replay `args` ask for, checked (the trace readable too) before
/// anything connects.
pub fn replay_config(args: &ReplayArgs) -> anyhow::Result<replay::Config> {
    let source = match (&args.trace, args.since, args.until) {
        (Some(p), _, _) if p.extension().is_some_and(|e| e == "jsonl") => replay::Source::Jsonl(p.clone()),
        (Some(p), _, _) => replay::Source::Trace(p.clone()),
        (None, Some(since), Some(until)) => replay::Source::Stream { since, until },
        _ => anyhow::bail!("give --trace FILE, or --since and --until for a range of PAS_SAMPLES"),
    };
    let config = replay::Config {
        run: args.run.clone(),
        source,
        namespace: args.namespace.clone(),
        workload: args.workload.clone(),
        pods: args.pods,
        pod_cpu: args.pod_cpu,
        speed: args
            .speed
            .parse()
            .map_err(|e| anyhow::anyhow!("--speed {}: {e}", args.speed))?,
        timestamps: if args.original_timestamps {
            replay::Timestamps::Original
        } else {
            replay::Timestamps::Shifted
        },
        backfill: args.backfill,
        simulate: args
            .simulate
            .as_deref()
            .map(|s| duration(s, "simulate"))
            .transpose()?,
        in_flight: 512,
    };
    config.check()?;
    Ok(config)
}

pub async fn run_replay(args: &ReplayArgs, config: replay::Config, nats: &NatsConfig) -> anyhow::Result<()> {
    let conn = pas_nats::connect(nats, "pas-replay", false).await?;
    let shutdown = pas_runtime::shutdown::on_signal();
    let mut err = std::io::stderr();
    let summary = replay::replay(&conn, &config, shutdown, &mut |p| {
        let replicas = p.replicas.map(|r| format!(", {r} replicas")).unwrap_or_default();
        let at =
            p.at.map(|t| format!(", at {}", t.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_default();
        let _ = write!(
            err,
            "\r{} {}/{} rows, {} samples acked{replicas}{at}   ",
            bar(p.done, p.total),
            p.done,
            p.total,
            p.acked
        );
    })
    .await;
    let _ = writeln!(err);
    conn.client.drain().await.ok();
    let s = summary?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "replayed {} rows as {} samples under {} in {:.1}s ({:.0} samples/s); {} duplicates, {} retries; samples dated {} to {}{}",
            s.rows,
            s.samples,
            s.prefix,
            s.seconds,
            s.samples as f64 / s.seconds.max(1e-9),
            s.duplicates,
            s.retries,
            s.first.map_or("-".into(), |t| t
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            s.last.map_or("-".into(), |t| t
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            s.final_replicas
                .map(|r| format!(
                    "; {} decisions applied, {r} replicas at the end",
                    s.decisions_applied
                ))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The recording `args` ask for, checked (the file can be written where
/// asked) before anything connects or records.
pub fn record_config(args: RecordArgs) -> anyhow::Result<record::Config> {
    let from = match (args.since, args.until) {
        (Some(since), Some(until)) => record::From::Stream { since, until },
        _ => record::From::Live {
            count: args.count,
            duration: args
                .duration
                .as_deref()
                .map(|d| duration(d, "duration"))
                .transpose()?,
        },
    };
    let config = record::Config {
        run: args.run,
        namespace: args.namespace,
        workload: args.workload,
        from,
        step: duration(&args.step, "step")?,
        pods: args.pods,
        out: args.out,
    };
    config.check()?;
    Ok(config)
}

pub async fn run_record(config: record::Config, nats: &NatsConfig) -> anyhow::Result<()> {
    let conn = pas_nats::connect(nats, "pas-record", false).await?;
    let shutdown = pas_runtime::shutdown::on_signal();
    let mut err = std::io::stderr();
    let summary = record::record(
        &conn,
        &config,
        shutdown,
        || eprintln!("recording; Ctrl-C writes the file and stops"),
        &mut |n| {
            let _ = write!(err, "\r{n} samples   ");
        },
    )
    .await;
    let _ = writeln!(err);
    conn.client.drain().await.ok();
    let s = summary?;
    for (path, rows) in &s.files {
        println!("wrote {} ({rows} rows)", path.display());
    }
    println!("{} samples recorded, {} skipped", s.samples, s.skipped);
    Ok(())
}

pub fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let config = loadgen::Config {
        cores: args.cores,
        speed: args.speed,
        scale: args.scale,
        repeat: args.repeat,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // SIGTERM or Ctrl-C: stop burning. The signal handler needs a runtime,
    // so it is set up inside this thread's.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(async { pas_runtime::shutdown::on_signal().cancelled().await });
        }
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let cores = args.cores;
    loadgen::run(&args.trace, &config, stop, &mut |t, d| {
        eprintln!("{t:>6.0}s  duty {:>5.1}% of {cores} core(s)", d * 100.0);
    })?;
    Ok(())
}
