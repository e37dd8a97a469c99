//! Stream sizing for a fleet (issue 19) against a real nats-server: `pas
//! bus init` with a fleet sets the growing streams' limits from the
//! formula, `status` with the same fleet finds no drift, and what
//! JetStream stores per sample, forecast and decision (with 63-character
//! names and full-precision numbers, as the stages write them) is within
//! the formula's byte sizes, so a sized stream keeps its retention.

use std::time::Duration;

use pas_integration_tests::{NatsServer, repo_root, stream_info};
use pas_nats::provision::{self, Options};
use pas_nats::sizing::Fleet;
use pas_schemas::subjects::{Prefix, STREAM_DECISIONS, STREAM_FORECASTS, STREAM_SAMPLES};
use pas_schemas::{CpuSample, Forecast, SCHEMA_VERSION, ScaleDecision};

fn name(c: char, len: usize) -> String {
    std::iter::repeat_n(c, len).collect()
}

/// A number with all its digits, as the stages' f64 values are written.
fn noisy(i: usize) -> f64 {
    1234.0 + (i as f64 * 0.618_033_988_749_894_9).fract() * 1000.0 / 3.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sized_bus_keeps_what_the_formula_says() {
    let server = NatsServer::start();
    let conn = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(conn);
    let fleet = Fleet {
        workloads: 200,
        retention: Duration::from_secs(2 * 3600),
        ..Fleet::default()
    };
    let options = Options {
        replicas: None,
        fleet: Some(fleet),
    };
    provision::init(&js, options).await.unwrap();
    for r in fleet.reserve() {
        let info = stream_info(&js, r.stream).await.config.clone();
        assert_eq!(info.max_bytes, r.max_bytes as i64, "{}", r.stream);
        assert_eq!(info.max_age, r.max_age, "{}", r.stream);
    }
    assert!(
        provision::status(&js, options)
            .await
            .unwrap()
            .iter()
            .all(|s| s.exists && s.drift.is_empty())
    );
    // Without the fleet, the file's limits are wanted: the sized streams drift.
    let plain = provision::status(&js, Options::default()).await.unwrap();
    let samples = plain.iter().find(|s| s.stream == STREAM_SAMPLES).unwrap();
    assert_eq!(samples.drift, ["max_age", "max_bytes"]);

    // What a stored message takes, with short and the longest names.
    let prefix = Prefix::live();
    let n = 200;
    let mut before = [(0u64, 0u64); 3];
    for len in [10usize, 63] {
        let (ns, wl, pod, node) = (name('n', len), name('w', len), name('p', len), name('h', len));
        let budgets = Fleet {
            name_length: len as u64,
            ..fleet
        }
        .message_bytes();
        let now = chrono::Utc::now();
        let fixture =
            |f: &str| std::fs::read_to_string(repo_root().join("schemas/fixtures").join(f)).unwrap();
        let mut forecast: Forecast = serde_json::from_str(&fixture("forecast.json")).unwrap();
        let mut decision: ScaleDecision = serde_json::from_str(&fixture("scale-decision.json")).unwrap();
        for i in 0..n {
            let at = now - chrono::TimeDelta::seconds(i as i64);
            let sample = CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: at,
                node: node.clone(),
                namespace: Some(ns.clone()),
                workload: Some(wl.clone()),
                pod: Some(pod.clone()),
                cpu_used_millicores: noisy(i),
                cpu_requested_millicores: Some(500.0),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: Some(noisy(i) / 1e4),
            };
            let out = pas_nats::Outgoing::new(prefix.sample(&sample).unwrap(), &sample).unwrap();
            pas_nats::publish(&js, &out).await.unwrap().await.unwrap();

            let steps = 10;
            let values: Vec<f64> = (0..steps).map(|k| noisy(i * steps + k)).collect();
            forecast.namespace = ns.clone();
            forecast.workload = wl.clone();
            forecast.model.key = format!("{ns}/{wl}");
            forecast.timestamp = at;
            forecast.window_end = at - chrono::TimeDelta::seconds(15);
            forecast.upper = Some(values.iter().map(|v| v * 1.1).collect());
            forecast.quantiles = Some(
                pas_schemas::QUANTILE_LEVELS
                    .iter()
                    .map(|&q| pas_schemas::QuantileForecast {
                        q,
                        values: values.iter().map(|v| v * (0.5 + q)).collect(),
                    })
                    .collect(),
            );
            forecast.values = values;
            let out = pas_nats::Outgoing::new(prefix.forecast(&ns, &wl).unwrap(), &forecast).unwrap();
            pas_nats::publish(&js, &out).await.unwrap().await.unwrap();

            decision.namespace = ns.clone();
            decision.workload = wl.clone();
            decision.timestamp = at;
            decision.utilization_percent = Some(noisy(i) / 30.0);
            decision.predicted_peak_millicores = Some(noisy(i + 1));
            if let Some(f) = decision.forecast.as_mut() {
                f.model.key = format!("{ns}/{wl}");
            }
            let out = pas_nats::Outgoing::new(prefix.scale(&ns, &wl).unwrap(), &decision).unwrap();
            pas_nats::publish(&js, &out).await.unwrap().await.unwrap();
        }
        for (k, stream) in [STREAM_SAMPLES, STREAM_FORECASTS, STREAM_DECISIONS]
            .into_iter()
            .enumerate()
        {
            let budget = budgets[k];
            let state = stream_info(&js, stream).await.state.clone();
            let (bytes, messages) = (state.bytes - before[k].0, state.messages - before[k].1);
            before[k] = (state.bytes, state.messages);
            let per = bytes as f64 / messages as f64;
            println!("{stream}: {per:.0} bytes stored per message with names of {len} (formula {budget})");
            assert_eq!(messages, n as u64);
            assert!(
                per <= budget as f64,
                "{stream}: {per:.0} B a message, the formula assumes {budget}"
            );
            assert!(
                per > 0.9 * budget as f64,
                "{stream}: {per:.0} B a message, below 90 % of the formula's {budget}: lower it"
            );
        }
    }
}
