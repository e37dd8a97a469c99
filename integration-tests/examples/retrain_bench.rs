//! How long the trainer takes to retrain a fleet (issue 19), on one
//! thread, with the stage's own functions: one global round over every
//! workload (`pas_trainer::train_global_version`: training on the heads,
//! the backtest gate on up to `global_gate` of them), then per workload
//! the check that fine-tunes its own model from the global one and scores
//! both (`pas_trainer::train_version_from`), timed on `sample` workloads
//! spread over the fleet and multiplied out.
//!
//! Each workload holds 1,440 steps (6 hours at the trainer's 15 s step,
//! the retention `pas bus init --workloads` keeps by default): a slice of
//! a shared trace (cycling through them) at its own scale.
//!
//! cargo run --release -p pas-integration-tests --example retrain_bench -- 10000 40

use std::time::Instant;

use anyhow::Context;
use chrono::DateTime;
use pas_models::{Series, Trace};
use pas_schemas::TrainingRange;
use pas_workloads::WorkloadKey;

const STEPS: usize = 1_440;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let sample: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(40);
    let config = pas_trainer::Config {
        min_history: 720,
        max_history: STEPS,
        ..pas_trainer::Config::default()
    };
    pas_models::runtime::configure(config.threads, config.model.seed as i64)?;
    let dir = pas_integration_tests::repo_root().join("../shared/data/traces");
    let mut traces = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "csv") {
            traces.push(
                Trace::read(&path)?
                    .points
                    .iter()
                    .map(|p| p.1)
                    .collect::<Vec<f64>>(),
            );
        }
    }
    traces.sort_by_key(|t| t.len());
    anyhow::ensure!(!traces.is_empty(), "no traces in {}", dir.display());
    let start = DateTime::from_timestamp(1_780_000_000, 0).context("a start")?;
    let series: Vec<Series> = (0..n)
        .map(|w| {
            let trace = &traces[w % traces.len()];
            let offset = (w * 7_919) % (trace.len() - STEPS);
            let scale = 10.0 + (w % 97) as f64 * 25.0;
            Series {
                seasonal: None,
                start,
                step_seconds: 15,
                values: trace[offset..offset + STEPS].iter().map(|v| v * scale).collect(),
            }
        })
        .collect();
    let range = TrainingRange {
        first_sequence: 1,
        last_sequence: (n * STEPS) as u64,
        from: start,
        to: start + chrono::TimeDelta::seconds(15 * STEPS as i64),
    };
    let started = Instant::now();
    let (manifest, _, global) = pas_trainer::train_global_version(1, series.clone(), range.clone(), &config)?;
    let global_seconds = started.elapsed().as_secs_f64();
    println!(
        "global round over {n} workloads: {global_seconds:.1} s ({}; {})",
        if manifest.accepted { "accepted" } else { "rejected" },
        manifest.verdict.unwrap_or_default()
    );
    let mut kept = 0;
    let started = Instant::now();
    for k in 0..sample {
        let w = k * n / sample;
        let key = WorkloadKey {
            namespace: "fleet".into(),
            workload: format!("wl-{w}"),
        };
        let (m, _) = pas_trainer::train_version_from(
            key,
            1,
            series[w].clone(),
            &[],
            range.clone(),
            &config,
            Some((1, &global)),
        )?;
        kept += usize::from(m.accepted);
    }
    let per = started.elapsed().as_secs_f64() / sample as f64;
    println!(
        "per-workload check: {per:.2} s each on {sample} workloads ({kept} kept their own model); all {n}: {:.0} s",
        per * n as f64
    );
    let total = global_seconds + per * n as f64;
    println!(
        "full retrain of {n} workloads on one thread: {:.0} s ({:.2} h); target 1 h",
        total,
        total / 3600.0
    );
    Ok(())
}
