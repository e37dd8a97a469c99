//! Recorder benchmark over a real local nats-server and VictoriaMetrics
//! (InfluxDB 2's write API): N workloads of 3 pods, R rounds of one 5 s step
//! each (3 pod samples and one 10-step forecast per workload per round)
//! stored in JetStream first, then the recorder started and timed until
//! every message is acked. The rate it drains at is the rate it can keep up
//! with; the goal is 10,000 workloads, 8,000 messages/s (30,000 samples and
//! 10,000 forecasts per 5 s).
//!
//! cargo run --release -p pas-integration-tests --example recorder_bench -- 1000 20

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use pas_integration_tests::{NatsServer, VictoriaMetrics, connect_and_provision, rss_bytes};
use pas_nats::NatsConfig;
use pas_recorder::{Config, InfluxConfig, Recorder};
use pas_schemas::subjects::{Prefix, STREAM_FORECASTS, STREAM_SAMPLES};
use pas_schemas::{CpuSample, Forecast, ModelRef, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

const PODS: usize = 3;
const STEP: i64 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().with_context(|| format!("{a:?} is not a count")))
        .collect::<anyhow::Result<_>>()?;
    let (workloads, rounds) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(20),
    );
    let nats = NatsServer::start();
    let vm = VictoriaMetrics::start();
    let conn = connect_and_provision(&nats).await;
    let js = conn.jetstream.clone();

    let now = Utc::now().timestamp() - 3600;
    let t0 = DateTime::from_timestamp(now - now.rem_euclid(STEP), 0).context("an hour ago")?;
    let prefix = Prefix::live();
    let publishing = Instant::now();
    let mut acks = Vec::new();
    let mut messages = 0usize;
    for round in 0..rounds as i64 {
        let at = t0 + TimeDelta::seconds(round * STEP);
        for w in 0..workloads {
            let workload = format!("w{w}");
            for p in 0..PODS {
                let s = CpuSample {
                    schema_version: SCHEMA_VERSION,
                    timestamp: at + TimeDelta::milliseconds(p as i64 * 100),
                    node: "node-1".into(),
                    namespace: Some("bench".into()),
                    workload: Some(workload.clone()),
                    pod: Some(format!("{workload}-{p}")),
                    cpu_used_millicores: 100.0 + (w % 300) as f64,
                    cpu_requested_millicores: Some(500.0),
                    cpu_capacity_millicores: None,
                    cpu_throttled_ratio: None,
                };
                let out = pas_nats::Outgoing::new(prefix.sample(&s).map_err(anyhow::Error::msg)?, &s)?;
                acks.push(pas_nats::publish(&js, &out).await?);
            }
            let f = Forecast {
                schema_version: SCHEMA_VERSION,
                timestamp: at + TimeDelta::seconds(STEP),
                namespace: "bench".into(),
                workload: workload.clone(),
                model: ModelRef {
                    key: format!("bench/{workload}"),
                    kind: "lstm".into(),
                    version: 1,
                },
                window_end: at,
                step_seconds: STEP as f64,
                pod_request_millicores: 500.0,
                values: vec![1500.0; 10],
                upper: Some(vec![1800.0; 10]),
                quantile: Some(0.9),
                quantiles: None,
            };
            let out = pas_nats::Outgoing::new(
                prefix.forecast("bench", &workload).map_err(anyhow::Error::msg)?,
                &f,
            )?;
            acks.push(pas_nats::publish(&js, &out).await?);
            messages += PODS + 1;
            if acks.len() >= 4096 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    eprintln!(
        "stored {messages} messages in {:.1} s",
        publishing.elapsed().as_secs_f64()
    );

    let rss_before = rss_bytes();
    let config = Config {
        influx: InfluxConfig {
            url: vm.url(),
            token: pas_runtime::Secret::new("bench"),
            ..InfluxConfig::default()
        },
        listen: "127.0.0.1:0".parse()?,
        nats: NatsConfig {
            urls: vec![nats.url()],
            ..NatsConfig::default()
        },
        ..Config::default()
    };
    let recorder = Recorder::new(config)?;
    let metrics = recorder.metrics();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { recorder.run(stop).await }
    });
    let samples = workloads * PODS * rounds;
    let forecasts = workloads * rounds;
    let mut peak_rss = 0;
    loop {
        peak_rss = peak_rss.max(rss_bytes());
        let done = metrics.messages_total(STREAM_SAMPLES, "written") as usize >= samples
            && metrics.messages_total(STREAM_FORECASTS, "written") as usize >= forecasts;
        if done {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not drained in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let points: u64 = ["cpu_usage_current", "cpu_usage_predicted"]
        .iter()
        .map(|m| metrics.points_total(m))
        .sum();
    println!(
        "| {workloads} | {rounds} | {messages} | {took:.1} s | {:.0} | {:.0} | {:.0} MiB |",
        messages as f64 / took,
        points as f64 / took,
        (peak_rss.saturating_sub(rss_before)) as f64 / (1 << 20) as f64,
    );
    stop.cancel();
    task.await??;
    Ok(())
}
