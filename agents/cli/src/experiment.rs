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
    /// Trace files: `timestamp,cpu` CSV (as in shared/data/traces), or
    /// JSON lines of one workload's pod samples (`pas import prometheus`,
    /// `pas record`), whose demand is used as it is.
    #[arg(long = "trace", required = true, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// The workload's manifests (YAML, several documents each): its
    /// StatefulSet or Deployment and the HPA that scales it. They set the
    /// pod's CPU request, start-up, target, replica bounds and the HPA's
    /// behavior (for every policy); a flag given as well wins.
    #[arg(long = "manifest", conflicts_with = "from_cluster")]
    manifests: Vec<PathBuf>,
    /// Read those from the cluster instead (kubeconfig or in-cluster), as
    /// namespace/name of the StatefulSet or Deployment.
    #[arg(long)]
    from_cluster: Option<String>,
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
    /// Pod start-up time, e.g. 60s (the middle of the range with a spread)
    /// [default: the manifests', else 60s].
    #[arg(long)]
    startup: Option<String>,
    /// How much each simulated pod's start-up varies: startup × (1 ± this),
    /// drawn per pod, repeatably. 0 makes every pod alike.
    #[arg(long, default_value_t = 0.25)]
    startup_spread: f64,
    /// CPU one pod serves and requests, millicores [default: the
    /// manifests', else 1000].
    #[arg(long)]
    pod_cpu: Option<f64>,
    /// Target utilisation, percent of requests: the reference, where the
    /// HPA's point that every policy is compared with is taken [default:
    /// the manifests', else 70].
    #[arg(long)]
    target: Option<f64>,
    /// More targets to run every policy at, comma-separated (e.g.
    /// 50,60,70,80,90): each policy's curve of cost against violation.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<f64>,
    /// Fewest replicas [default: the HPA's, else 1].
    #[arg(long)]
    min_replicas: Option<u32>,
    /// Most replicas [default: the HPA's, else 20].
    #[arg(long)]
    max_replicas: Option<u32>,
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

/// The workload's settings from `--manifest` files or `--from-cluster`.
fn manifests(args: &ExperimentArgs) -> anyhow::Result<Option<pas_experiment::manifest::Manifests>> {
    let files = if let Some(workload) = &args.from_cluster {
        let (namespace, name) = workload
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .with_context(|| format!("--from-cluster {workload:?}: expected namespace/name"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("--from-cluster: no kubeconfig or in-cluster service account")?;
            Ok::<_, anyhow::Error>(pas_experiment::manifest::from_cluster(client, namespace, name).await?)
        })?
    } else if args.manifests.is_empty() {
        return Ok(None);
    } else {
        args.manifests
            .iter()
            .map(|p| {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("--manifest {}", p.display()))?;
                Ok((p.display().to_string(), text))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    Ok(Some(pas_experiment::manifest::read(&files)?))
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
    config.pod.startup = Duration::from_secs(60);
    config.pod.capacity_millicores = 1000.0;
    config.settings.target_utilization = 70.0;
    config.settings.min_replicas = 1;
    config.settings.max_replicas = 20;
    // The manifests over those defaults, the flags over both.
    if let Some(manifests) = manifests(&args)? {
        manifests.apply(&mut config);
        let mut err = std::io::stderr();
        let _ = writeln!(err, "From the manifests of {}:", manifests.workload);
        for note in &manifests.notes {
            let _ = writeln!(err, "  {note}");
        }
    }
    if let Some(startup) = &args.startup {
        config.pod.startup = duration(startup, "startup")?;
    }
    if let Some(cpu) = args.pod_cpu {
        config.pod.capacity_millicores = cpu;
    }
    config.pod.request_millicores = config.pod.capacity_millicores;
    config.settings.startup = config.pod.startup;
    if let Some(target) = args.target {
        config.settings.target_utilization = target;
    }
    if let Some(min) = args.min_replicas {
        config.settings.min_replicas = min;
    }
    if let Some(max) = args.max_replicas {
        config.settings.max_replicas = max;
    }
    config.targets = args.targets.clone();
    config.pod.startup_spread = args.startup_spread;
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
