//! Forecaster benchmark over a real local nats-server: for N workloads, each
//! with its own stored LSTM version, how long a tick takes, the latency from
//! a sample's publish to the forecast that uses it (without the wait for the
//! tick: the benchmark ticks as soon as the round's samples are folded), and
//! the memory a workload costs.
//!
//! cargo run --release -p pas-integration-tests --example forecaster_bench -- 1000 10000

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_forecaster::{Config, Forecaster};
use pas_integration_tests::{NatsServer, connect_and_provision, rss_bytes};
use pas_models::lstm::{Lstm, LstmConfig};
use pas_nats::NatsConfig;
use pas_nats::model_store::{self as store, Layout};
use pas_schemas::subjects::{BUCKET_MODELS, Prefix};
use pas_schemas::{CpuSample, Forecast, ModelManifest, Normalisation, SCHEMA_VERSION, TrainingRange};
use tokio_util::sync::CancellationToken;

const RUN: &str = "bench";
const STEP: i64 = 5;
const HISTORY: i64 = 60;
const ROUNDS: usize = 20;

fn sample(at: DateTime<Utc>, workload: usize, round: i64) -> CpuSample {
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: "node-1".into(),
        namespace: Some("bench".into()),
        workload: Some(format!("wl-{workload}")),
        pod: Some(format!("wl-{workload}-0")),
        cpu_used_millicores: 200.0 + ((workload as i64 * 7 + round * 13) % 300) as f64,
        cpu_requested_millicores: Some(1000.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    }
}

/// Publishes one sample per workload for step `round`; returns each
/// workload's publish time.
async fn publish_round(
    js: &async_nats::jetstream::Context,
    base: DateTime<Utc>,
    n: usize,
    round: i64,
) -> anyhow::Result<Vec<Instant>> {
    let prefix = Prefix::replay(RUN).map_err(anyhow::Error::msg)?;
    let at = base + TimeDelta::seconds(round * STEP);
    let mut sent = Vec::with_capacity(n);
    // At most 4,096 acks outstanding: the JetStream context lets 5,000 wait
    // and then blocks the next publish until one is awaited, so holding all
    // 10,000 of a round before awaiting any never returned (why the first
    // 10,000-workload run stalled).
    let mut acks = std::collections::VecDeque::with_capacity(4096);
    for w in 0..n {
        let s = sample(at, w, round);
        let out = pas_nats::Outgoing::new(prefix.sample(&s).map_err(anyhow::Error::msg)?, &s)?;
        sent.push(Instant::now());
        if acks.len() >= 4096
            && let Some(ack) = acks.pop_front()
        {
            let ack: async_nats::jetstream::context::PublishAckFuture = ack;
            ack.await?;
        }
        acks.push_back(pas_nats::publish(js, &out).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(sent)
}

/// Forecasts received, by workload and window end, with their arrival time.
type Arrivals = HashMap<(String, DateTime<Utc>), (Instant, Forecast)>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    pas_runtime::telemetry::init(false, "warn");
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .with_context(|| format!("{a:?} is not a workload count"))
        })
        .collect::<anyhow::Result<_>>()?;
    for n in if counts.is_empty() { vec![1000] } else { counts } {
        bench(n).await?;
    }
    Ok(())
}

async fn bench(n: usize) -> anyhow::Result<()> {
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await?;
    let layout = Layout::new(&Prefix::replay(RUN).map_err(anyhow::Error::msg)?);

    // One stored version per workload (the same weights, so storing is quick;
    // each is downloaded, checked and held separately).
    let started = Instant::now();
    let lstm_config = LstmConfig::default();
    let normalisation = Normalisation::Standard {
        mean: 40.0,
        std: 10.0,
    };
    let weights = Lstm::new(lstm_config.clone())?.to_safetensors()?;
    for w in 0..n {
        let manifest = ModelManifest {
            schema_version: SCHEMA_VERSION,
            timestamp: Utc::now(),
            key: format!("bench/wl-{w}"),
            version: 1,
            architecture: "lstm".into(),
            hyper_parameters: lstm_config.hyper_parameters(),
            step_seconds: STEP as f64,
            window: lstm_config.window as u32,
            horizon: lstm_config.horizon as u32,
            normalisation: normalisation.clone(),
            training: TrainingRange {
                first_sequence: 1,
                last_sequence: 1,
                from: DateTime::UNIX_EPOCH,
                to: DateTime::UNIX_EPOCH,
            },
            validation: [("lstm".to_owned(), 0.5), ("naive".to_owned(), 1.0)].into(),
            digest: pas_models::digest(&weights),
            accepted: true,
            calibration: None,
            verdict: None,
        };
        store::save(&bucket, &layout, &manifest, &weights).await?;
    }
    eprintln!(
        "{n} workloads: stored {n} model versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rss_start = rss_bytes();
    let config = Config {
        run: Some(RUN.into()),
        step: Duration::from_secs(STEP as u64),
        // 5 s steps for a 5 s tick; the 9 steps after the baseline's first cover a 40 s lead.
        lead: Duration::from_secs(40),
        replica: Some("bench".into()),
        listen: "127.0.0.1:0".parse()?,
        nats: NatsConfig {
            urls: vec![server.url()],
            ..NatsConfig::default()
        },
        ..Config::default()
    };
    let mut forecaster = Forecaster::new(config)?;
    let tick = forecaster.manual_ticks();
    let metrics = forecaster.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn(forecaster.run(stop.clone()));
    let mut waited = 0;
    while metrics.loads() < n as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
        if waited == 300 {
            let log = server.log();
            eprintln!(
                "stuck at {} loads; server log tail:\n{}",
                metrics.loads(),
                &log[log.len().saturating_sub(3000)..]
            );
            std::process::exit(1);
        }
    }
    let rss_models = rss_bytes();
    eprintln!(
        "{n} workloads: models loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // History: a window's worth of steps for every workload, in the past.
    let base = DateTime::from_timestamp((Utc::now().timestamp() - 86_400) / STEP * STEP, 0)
        .context("a time a day ago")?;
    for round in 0..HISTORY {
        publish_round(&js, base, n, round).await?;
    }
    while metrics.samples() < (HISTORY as u64) * n as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_windows = rss_bytes();

    // Forecasts as they arrive, by workload and window end.
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let mut sub = conn
        .client
        .subscribe(format!("replay.{RUN}.pas.forecast.>"))
        .await?;
    let _ = conn.client.request("$JS.API.INFO", "".into()).await;
    {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Ok(f) = pas_schemas::decode::<Forecast>(&msg.payload) else {
                    eprintln!("skipping a forecast that does not decode on {}", msg.subject);
                    continue;
                };
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((f.workload.clone(), f.window_end), (Instant::now(), f));
            }
        });
    }
    // Ticks with the history only, so every workload's first forecast is out.
    tick.send(()).await?;
    while arrivals.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut latencies = Vec::with_capacity(n * ROUNDS);
    let mut ticks = Vec::with_capacity(ROUNDS);
    let mut lstm = 0;
    for r in 0..ROUNDS as i64 {
        let round = HISTORY + r;
        let folded = metrics.samples();
        let sent = publish_round(&js, base, n, round).await?;
        while metrics.samples() < folded + n as u64 {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let ticked = Instant::now();
        tick.send(()).await?;
        let end = base + TimeDelta::seconds(round * STEP);
        let got = loop {
            {
                let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                let got: Vec<(usize, Instant, bool)> = (0..n)
                    .filter_map(|w| {
                        a.get(&(format!("wl-{w}"), end))
                            .map(|(t, f)| (w, *t, f.model.kind == "lstm"))
                    })
                    .collect();
                if got.len() == n {
                    break got;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let last = got
            .iter()
            .map(|(_, t, _)| *t)
            .max()
            .context("no forecast arrived")?;
        ticks.push(last.duration_since(ticked).as_secs_f64());
        for (w, at, is_lstm) in got {
            latencies.push(at.duration_since(sent[w]).as_secs_f64() * 1000.0);
            lstm += usize::from(is_lstm);
        }
    }
    stop.cancel();
    task.await??;
    latencies.sort_by(f64::total_cmp);
    ticks.sort_by(f64::total_cmp);
    let mib = |b: u64| b as f64 / n as f64 / 1024.0;
    println!(
        "| {n} | {:.3} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} |",
        percentile(&ticks, 0.5),
        n as f64 / percentile(&ticks, 0.5),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        mib(rss_windows.saturating_sub(rss_models)),
        mib(rss_models.saturating_sub(rss_start)),
        lstm,
        latencies.len(),
    );
    Ok(())
}
