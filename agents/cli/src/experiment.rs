//! `pas experiment`: policies head to head on recorded traces, in virtual time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pas_experiment::{Config, Progress};
use pas_scaler::policy::Policy;

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Trace files (`timestamp,cpu` CSV, as in shared/data/traces).
    #[arg(long = "trace", required = true, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// Policies to compare, comma-separated; the oracle is always added.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hpa,threshold,predictive,hybrid"
    )]
    policies: Vec<String>,
    /// Directory for report.md, results.json and the plots.
    #[arg(long)]
    report: PathBuf,
    /// A trace's 100 % is this many pods' worth of CPU.
    #[arg(long, default_value_t = 4)]
    reference_pods: u32,
    /// Pod start-up time, e.g. 60s (the middle of the range with a spread).
    #[arg(long, default_value = "60s")]
    startup: String,
    /// How much each simulated pod's start-up varies: startup × (1 ± this),
    /// drawn per pod, repeatably. 0 makes every pod alike.
    #[arg(long, default_value_t = 0.25)]
    startup_spread: f64,
    /// CPU one pod serves and requests, millicores.
    #[arg(long, default_value_t = 1000.0)]
    pod_cpu: f64,
    /// Target utilisation, percent of requests: the reference, where the
    /// HPA's point that every policy is compared with is taken.
    #[arg(long, default_value_t = 70.0)]
    target: f64,
    /// More targets to run every policy at, comma-separated (e.g.
    /// 50,60,70,80,90): each policy's curve of cost against violation.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<f64>,
    /// Fewest replicas.
    #[arg(long, default_value_t = 1)]
    min_replicas: u32,
    /// Most replicas.
    #[arg(long, default_value_t = 20)]
    max_replicas: u32,
    /// Scaler tick, e.g. 5s.
    #[arg(long, default_value = "5s")]
    tick: String,
    /// How demand moves between a trace's points: linear, or step (each
    /// value held until the next point).
    #[arg(long, default_value = "linear")]
    shape: String,
    /// How often the hpa policy evaluates (the Kubernetes HPA's sync period).
    #[arg(long, default_value = "15s")]
    hpa_sync: String,
    /// The chance of demand above the plan to accept: predictive plans on
    /// the forecast's (1 − risk) quantile (the scaler's risk) [default: the
    /// scaler's].
    #[arg(long)]
    risk: Option<f64>,
    /// Share of each trace to train on; the rest is scored.
    #[arg(long, default_value_t = 0.7)]
    train_fraction: f64,
    /// Most training epochs of the LSTM [default: the trainer's].
    #[arg(long)]
    max_epochs: Option<usize>,
    /// libtorch threads [default: the number of cores]. One thread makes training repeatable bit for bit.
    /// The policies' runs at each target share every core either way (they are independent, so
    /// their results do not depend on how many run at once).
    #[arg(long)]
    threads: Option<i32>,
}

fn duration(s: &str, what: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("--{what} {s}: expected a duration such as 60s"))
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let policies = args
        .policies
        .iter()
        .map(|p| {
            p.parse::<Policy>()
                .map_err(|e| anyhow::anyhow!("--policies: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut config = Config {
        policies,
        ..Config::default()
    };
    config.reference_pods = args.reference_pods;
    config.pod.startup = duration(&args.startup, "startup")?;
    config.pod.capacity_millicores = args.pod_cpu;
    config.pod.request_millicores = args.pod_cpu;
    config.settings.startup = config.pod.startup;
    config.settings.target_utilization = args.target;
    config.targets = args.targets.clone();
    config.pod.startup_spread = args.startup_spread;
    config.settings.min_replicas = args.min_replicas;
    config.settings.max_replicas = args.max_replicas;
    config.tuning.tick = duration(&args.tick, "tick")?;
    config.train_fraction = args.train_fraction;
    config.shape = args.shape.parse()?;
    config.hpa_sync = duration(&args.hpa_sync, "hpa-sync")?;
    if let Some(risk) = args.risk {
        config.settings.risk = risk;
    }
    if let Some(e) = args.max_epochs {
        config.trainer.model.max_epochs = e;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    pas_models::runtime::configure(threads, 42)?;

    let mut err = std::io::stderr();
    let total = args.traces.len();
    let mut done = 0;
    let policies = args.policies.len();
    let mut progress = |p: Progress<'_>| match p {
        Progress::Training { trace, steps } => {
            let _ = writeln!(err, "[{}/{total}] {trace}: training on {steps} steps", done + 1);
        }
        Progress::Scored {
            trace,
            training_seconds,
            simulation_seconds,
        } => {
            done += 1;
            let _ = writeln!(
                err,
                "[{done}/{total}] {trace}: trained in {training_seconds:.1}s, {policies} policies and the oracle simulated in {simulation_seconds:.1}s"
            );
        }
    };
    let paths: Vec<&Path> = args.traces.iter().map(PathBuf::as_path).collect();
    let report = pas_experiment::run(&paths, &config, &mut progress)?;
    let written = pas_experiment::write_report(&report, &args.report)?;
    println!("{}", pas_experiment::summary_table(&report));
    if report.setup.targets.len() > 1 {
        println!("{}", pas_experiment::curve_table(&report.curves));
    }
    println!(
        "training {:.1}s, simulation {:.1}s; {} files in {}: report.md, results.json, {} plots",
        report.training_seconds,
        report.simulation_seconds,
        written.len(),
        args.report.display(),
        written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "svg"))
            .count()
    );
    Ok(())
}
