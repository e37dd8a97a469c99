//! The fleet benchmark (issue 19): N workloads of 3 pods end to end over a
//! real local nats-server, on this machine. The node agents are simulated
//! by this process: every 5 s it publishes one sample per pod (3 N samples,
//! JetStream-acked, at most 4,096 acks outstanding); the forecaster and the
//! scaler run as the real `pas` processes (release build), the scaler on its
//! simulated cluster; every workload is served by one stored global model.
//! After a backfill of 60 steps (so every window is full), it measures
//! `ticks` ticks and prints, per tick: samples published and how long that
//! took, forecasts and decisions received for the tick's step, and the
//! latencies (p50/p99) from the forecaster's tick (0.5 s after the step closes) to its
//! forecast, from a workload's last sample to its forecast, and from a
//! forecast to its decision; then each process's CPU (share of one core)
//! and RSS over the measured ticks, and messages per second.
//!
//! cargo build --release -p pas-cli
//! cargo run --release -p pas-integration-tests --example fleet_bench -- 10000 12

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{NatsServer, repo_root};
use pas_models::lstm::LstmConfig;
use pas_nats::model_store::{self as store, Layout};
use pas_nats::provision;
use pas_nats::sizing::Fleet;
use pas_schemas::subjects::{BUCKET_MODELS, Prefix};
use pas_schemas::{CpuSample, Forecast, ModelManifest, SCHEMA_VERSION, ScaleDecision, TrainingRange};

const RUN: &str = "fleet";
const STEP: i64 = 5;
const PODS: usize = 3;
const BACKFILL: i64 = 60;
const MAX_IN_FLIGHT: usize = 4096;

fn sample(at: DateTime<Utc>, workload: usize, pod: usize, round: i64) -> CpuSample {
    let base = 100.0 + (workload % 50) as f64 * 20.0;
    let wave = ((round as f64 / 24.0 + workload as f64 * 0.1) * std::f64::consts::TAU).sin();
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: format!("node-{}", workload % 100),
        namespace: Some("fleet".into()),
        workload: Some(format!("wl-{workload}")),
        pod: Some(format!("wl-{workload}-{pod}")),
        cpu_used_millicores: base * (1.0 + 0.3 * wave)
            + ((workload * 7 + pod * 3 + round as usize) % 11) as f64,
        cpu_requested_millicores: Some(500.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    }
}

/// Publishes every pod's sample of step `round` (stamped `at`); returns each
/// workload's last publish time.
async fn publish_round(
    js: &async_nats::jetstream::Context,
    n: usize,
    at: DateTime<Utc>,
    round: i64,
) -> anyhow::Result<Vec<Instant>> {
    let prefix = Prefix::replay(RUN).map_err(anyhow::Error::msg)?;
    let mut sent = Vec::with_capacity(n);
    let mut acks = std::collections::VecDeque::with_capacity(MAX_IN_FLIGHT);
    for w in 0..n {
        for p in 0..PODS {
            let s = sample(at, w, p, round);
            let out = pas_nats::Outgoing::new(prefix.sample(&s).map_err(anyhow::Error::msg)?, &s)?;
            if acks.len() >= MAX_IN_FLIGHT
                && let Some(ack) = acks.pop_front()
            {
                let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                ack.await?;
            }
            acks.push_back(pas_nats::publish(js, &out).await?);
        }
        sent.push(Instant::now());
    }
    for ack in acks {
        ack.await?;
    }
    Ok(sent)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1]
}

/// CPU seconds (user + system) and RSS bytes of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss * 1024)
}

/// A stage process, killed when dropped.
struct Stage(std::process::Child);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stage(
    server: &NatsServer,
    args: &[&str],
    env: &[(&str, String)],
    name: &'static str,
) -> anyhow::Result<Stage> {
    let pas = repo_root().join("target/release/pas");
    anyhow::ensure!(
        pas.exists(),
        "build the stages first: cargo build --release -p pas-cli"
    );
    let log = std::fs::File::create(std::env::temp_dir().join(format!("fleet-bench-{name}.log")))?;
    let mut command = std::process::Command::new(pas);
    command
        .args(args)
        .args(["--run", RUN])
        .env("PAS_NATS__URLS", server.url())
        .env("PAS_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in env {
        command.env(k, v);
    }
    Ok(Stage(command.spawn()?))
}

#[derive(Default)]
struct Seen {
    forecasts: HashMap<(String, DateTime<Utc>), (Instant, String)>,
    /// Arrival times of each workload's decisions (a decision names the
    /// forecast only where the forecast decided, so each forecast is matched
    /// with the workload's first decision after it).
    decisions: HashMap<String, Vec<Instant>>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    pas_runtime::telemetry::init(false, "warn");
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let ticks: i64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(12);

    let server = NatsServer::start();
    let conn = async_nats::ConnectOptions::new()
        .connect(server.url())
        .await
        .context("connect")?;
    let js = async_nats::jetstream::new(conn.clone());
    let fleet = Fleet {
        workloads: n as u64,
        pods: PODS as u64,
        sample_interval: Duration::from_secs(STEP as u64),
        forecast_interval: Duration::from_secs(STEP as u64),
        // The run's quarter of an hour: the test server offers 20 GB.
        retention: Duration::from_secs(900),
        name_length: 12,
    };
    provision::init(
        &js,
        provision::Options {
            replicas: None,
            fleet: Some(fleet),
        },
    )
    .await?;

    // One global model serves every workload (each window scaled on its own).
    let config = pas_models::global::config(&LstmConfig::default());
    let series: Vec<pas_models::Series> = (0..4)
        .map(|w| pas_models::Series {
            seasonal: None,
            start: DateTime::UNIX_EPOCH,
            step_seconds: STEP as u32,
            values: (0..1500)
                .map(|r| sample(DateTime::UNIX_EPOCH, w * 13, 0, r).cpu_used_millicores * 3.0)
                .collect(),
        })
        .collect();
    pas_models::runtime::configure(1, 42)?;
    let (global, _) = pas_models::global::train(
        &series,
        &LstmConfig {
            max_epochs: 2,
            ..config.clone()
        },
        5000,
        None,
        &mut |_| {},
    )?;
    let weights = global.to_safetensors()?;
    let manifest = ModelManifest {
        schema_version: SCHEMA_VERSION,
        timestamp: Utc::now(),
        key: "global".into(),
        version: 1,
        architecture: "lstm".into(),
        hyper_parameters: global.config().hyper_parameters(),
        step_seconds: STEP as f64,
        window: config.window as u32,
        horizon: config.horizon as u32,
        normalisation: global.normalisation(),
        training: TrainingRange {
            first_sequence: 1,
            last_sequence: 1,
            from: DateTime::UNIX_EPOCH,
            to: DateTime::UNIX_EPOCH,
        },
        validation: [("global".to_owned(), 0.5), ("naive".to_owned(), 1.0)].into(),
        digest: pas_models::digest(&weights),
        accepted: true,
        calibration: None,
        verdict: None,
    };
    let bucket = js.get_object_store(BUCKET_MODELS).await?;
    store::save(
        &bucket,
        &Layout::new(&Prefix::replay(RUN).map_err(anyhow::Error::msg)?),
        &manifest,
        &weights,
    )
    .await?;

    // History: BACKFILL steps of every pod, in the past, before the stages start.
    let now = Utc::now().timestamp();
    let first = (now / STEP - BACKFILL) * STEP;
    let started = Instant::now();
    for round in 0..BACKFILL {
        let at = DateTime::from_timestamp(first + round * STEP, 0).context("time")?;
        publish_round(&js, n, at, round).await?;
    }
    eprintln!(
        "{n} workloads: backfilled {} samples in {:.1} s",
        BACKFILL as usize * n * PODS,
        started.elapsed().as_secs_f64()
    );

    fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }
    let forecaster = stage(
        &server,
        &["forecaster"],
        &env(&[
            ("PAS_STEP", "5s"),
            ("PAS_LEAD", "15s"),
            ("PAS_HISTORY", "60"),
            ("PAS_THREADS", "1"),
            ("PAS_REPLICA", "f0"),
        ]),
        "forecaster",
    )?;
    let scaler = stage(
        &server,
        &["scaler"],
        &env(&[
            ("PAS_TICK", "5s"),
            ("PAS_CLUSTER", "simulated"),
            ("PAS_SIMULATED_REPLICAS", "3"),
            ("PAS_DEFAULTS__ENABLED", "true"),
            ("PAS_DEFAULTS__STARTUP", "10s"),
            ("PAS_DEFAULTS__MAX_REPLICAS", "10"),
        ]),
        "scaler",
    )?;

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut forecasts = conn.subscribe(format!("replay.{RUN}.pas.forecast.>")).await?;
    let mut decisions = conn.subscribe(format!("replay.{RUN}.pas.scale.>")).await?;
    conn.flush().await?;
    {
        let seen_forecasts = seen.clone();
        tokio::spawn(async move {
            let seen = seen_forecasts;
            while let Some(msg) = forecasts.next().await {
                if let Ok(f) = pas_schemas::decode::<Forecast>(&msg.payload) {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forecasts
                        .insert((f.workload, f.window_end), (Instant::now(), f.model.key));
                }
            }
        });
        let seen_decisions = seen.clone();
        tokio::spawn(async move {
            let seen = seen_decisions;
            while let Some(msg) = decisions.next().await {
                if let Ok(d) = pas_schemas::decode::<ScaleDecision>(&msg.payload) {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .decisions
                        .entry(d.workload)
                        .or_default()
                        .push(Instant::now());
                }
            }
        });
    }

    // Live: a round every STEP seconds on the clock. The first rounds warm up.
    let warmup = 6;
    let mut round = BACKFILL;
    let mut measured = Vec::new();
    let mut cpu_start = None;
    let mut writes_start = 0;
    let mut out = Vec::new();
    loop {
        let next = (Utc::now().timestamp() / STEP + 1) * STEP;
        let at = DateTime::from_timestamp(next, 0).context("time")?;
        tokio::time::sleep(((at - Utc::now()).to_std()).unwrap_or_default()).await;
        if round == BACKFILL + warmup {
            writes_start = state_writes(&js).await;
            cpu_start = Some((
                Instant::now(),
                usage(forecaster.0.id()),
                usage(scaler.0.id()),
                usage(server.pid()),
                usage(std::process::id()),
            ));
        }
        let begun = Instant::now();
        let sent = publish_round(&js, n, at + TimeDelta::milliseconds(100), round).await?;
        let publish_seconds = begun.elapsed().as_secs_f64();
        if round >= BACKFILL + warmup {
            // The step starting at `at` closes at `at + STEP`: its forecasts come after.
            measured.push((at, begun, sent, publish_seconds));
        }
        round += 1;
        if measured.len() as i64 >= ticks {
            break;
        }
    }
    // The last step's forecasts and decisions come a tick later.
    tokio::time::sleep(Duration::from_secs(2 * STEP as u64 + 2)).await;
    let (t0, f0, s0, n0, b0) = cpu_start.context("measured nothing")?;
    let (f1, s1, n1, b1) = (
        usage(forecaster.0.id()),
        usage(scaler.0.id()),
        usage(server.pid()),
        usage(std::process::id()),
    );
    let wall = t0.elapsed().as_secs_f64();
    let writes = state_writes(&js).await.saturating_sub(writes_start);

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "\n{n} workloads × {PODS} pods, samples every {STEP} s; one global model; {ticks} ticks measured\n"
    );
    println!(
        "| tick | samples published in | forecasts | decisions | tick → forecast p50 / p99 | last sample → forecast p50 / p99 | forecast → decision p50 / p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = (Vec::new(), Vec::new(), Vec::new());
    for (k, (at, begun, sent, publish_seconds)) in measured.iter().enumerate() {
        // The step closes when the next begins; its tick starts then.
        let close = *begun + Duration::from_secs(STEP as u64);
        // The forecaster ticks `tick_delay` (0.5 s) after the step closes,
        // so that samples a little late still count.
        let tick = close + Duration::from_millis(500);
        let (mut from_close, mut from_sample, mut to_decision) = (Vec::new(), Vec::new(), Vec::new());
        let (mut forecasts, mut decisions, mut global) = (0, 0, 0);
        for (w, last) in sent.iter().enumerate() {
            let key = (format!("wl-{w}"), *at);
            if let Some((arrived, model)) = seen.forecasts.get(&key) {
                forecasts += 1;
                global += usize::from(model == "global");
                from_close.push(arrived.saturating_duration_since(tick).as_secs_f64() * 1e3);
                from_sample.push(arrived.saturating_duration_since(*last).as_secs_f64() * 1e3);
                let decided = seen.decisions.get(&key.0).and_then(|times| {
                    times
                        .iter()
                        .find(|t| **t >= *arrived && t.duration_since(*arrived).as_secs() < STEP as u64)
                });
                if let Some(decided) = decided {
                    decisions += 1;
                    to_decision.push(decided.duration_since(*arrived).as_secs_f64() * 1e3);
                }
            }
        }
        let row = |v: &mut Vec<f64>| format!("{:.0} / {:.0} ms", percentile(v, 0.5), percentile(v, 0.99));
        out.push(format!(
            "| {} | {:.2} s | {forecasts} ({global} global) | {decisions} | {} | {} | {} |",
            k + 1,
            publish_seconds,
            row(&mut from_close),
            row(&mut from_sample),
            row(&mut to_decision)
        ));
        all.0.extend(from_close);
        all.1.extend(from_sample);
        all.2.extend(to_decision);
    }
    for line in &out {
        println!("{line}");
    }
    let row = |v: &mut Vec<f64>| format!("{:.0} / {:.0} ms", percentile(v, 0.5), percentile(v, 0.99));
    println!(
        "| all | | | | {} | {} | {} |",
        row(&mut all.0),
        row(&mut all.1),
        row(&mut all.2)
    );
    println!("\n| process | CPU (cores) | RSS |");
    println!("|---|---:|---:|");
    for (name, (c0, _), (c1, rss)) in [
        ("forecaster", f0, f1),
        ("scaler", s0, s1),
        ("nats-server", n0, n1),
        ("load generator (this)", b0, b1),
    ] {
        println!(
            "| {name} | {:.2} | {:.0} MiB |",
            (c1 - c0) / wall,
            rss as f64 / f64::from(1 << 20)
        );
    }
    let per_second = |count: usize| count as f64 / (measured.len() as f64 * STEP as f64);
    println!(
        "\nmessages per second: samples {:.0}, forecasts {:.0}, decisions {:.0}",
        per_second(n * PODS * measured.len()),
        per_second(seen.forecasts.len().min(n * measured.len())),
        per_second(
            seen.decisions
                .values()
                .map(Vec::len)
                .sum::<usize>()
                .min(n * measured.len())
        )
    );
    println!(
        "scaler state writes to KV pas-scaler: {writes} in {wall:.0} s ({:.1} a second)",
        writes as f64 / wall
    );
    drop((forecaster, scaler));
    Ok(())
}

/// Messages the key-value bucket `pas-scaler` has taken: the scaler's state
/// writes (and its lease renewals).
async fn state_writes(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("KV_pas-scaler").await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.last_sequence),
        Err(_) => 0,
    }
}
