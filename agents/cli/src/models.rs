//! `pas models`: offline evaluation and training on recorded traces.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use pas_models::eval::{self, EvalConfig, Progress, SeriesReport};
use pas_models::lstm::{Lstm, LstmConfig};
use pas_models::{Epoch, Forecaster, ModelKind, ModelOptions, Trace};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Backtest models on recorded traces: fit on the head of each trace,
    /// forecast from every origin in its tail, print a table of scores
    /// (MASE, sMAPE, RMSE, MAE, under-prediction, upper-quantile coverage)
    /// and the mean MASE per model, and optionally write everything as JSON.
    Eval(EvalArgs),
    /// Train one model on a trace and write its weights (safetensors) and
    /// manifest to a directory, printing the loss of every epoch.
    Train(TrainArgs),
}

#[derive(Debug, Args)]
pub struct Common {
    /// Steps to forecast.
    #[arg(long, default_value_t = 10)]
    horizon: usize,
    /// Grid step in seconds [default: the trace's median spacing].
    #[arg(long)]
    step: Option<u32>,
    /// Fill holes of at most this many steps by interpolation; longer holes stay missing.
    #[arg(long, default_value_t = 3)]
    max_fill: usize,
    /// Season length in steps for seasonal naive and Holt-Winters [default: detected].
    #[arg(long)]
    period: Option<usize>,
    /// Settings of the `lstm` model, as a TOML file of `LstmConfig` fields.
    #[arg(long)]
    lstm_config: Option<PathBuf>,
    /// libtorch threads [default: the number of cores]. One thread makes training repeatable bit for bit.
    #[arg(long)]
    threads: Option<i32>,
    /// No per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Trace files (`timestamp,cpu` CSV).
    #[arg(long = "trace", required = true, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// Models to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "naive,seasonal-naive,seasonal-peak,holt-winters,lstm-seed,lstm"
    )]
    models: Vec<String>,
    /// Share of each trace (its newest part) to test on.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Steps between forecast origins.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Write the full results (per-step errors, fit reports) to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// What the `global` model (listed in --models) is trained on:
    /// `leave-family-out` trains one per family of traces (the name before
    /// its first `-`: nab, alibaba2018, bitbrains) on the other families'
    /// traces, whole, and scores it on that family's, which it never saw;
    /// `all` trains one on the training part (the head) of every trace.
    #[arg(long, value_enum, default_value_t = GlobalTrain::LeaveFamilyOut)]
    global_train: GlobalTrain,
    /// Most training examples the `global` model draws across its traces.
    #[arg(long, default_value_t = pas_models::global::DEFAULT_POOL)]
    global_pool: usize,
    #[command(flatten)]
    common: Common,
}

/// What the global model is trained on in `pas models eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalTrain {
    /// One per family, on the other families' traces.
    LeaveFamilyOut,
    /// One, on the head of every trace.
    All,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The trace to train on.
    #[arg(long)]
    trace: PathBuf,
    /// Directory for `weights.safetensors` and `manifest.json`.
    #[arg(long)]
    out: PathBuf,
    /// `lstm` or `lstm-seed`.
    #[arg(long, default_value = "lstm")]
    model: String,
    /// Override the number of epochs (for timing runs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Also write the exact training examples to this `.npz` file (x, y,
    /// last), for `scripts/bench_epoch.py` to train the same network on.
    #[arg(long)]
    export_examples: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Eval(args) => evaluate(args),
        ModelsCommand::Train(args) => train(args),
    }
}

fn options(common: &Common) -> anyhow::Result<ModelOptions> {
    let threads = common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    pas_models::runtime::configure(threads, 42)?;
    let lstm = match &common.lstm_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => LstmConfig::default(),
    };
    Ok(ModelOptions {
        horizon: common.horizon,
        period: common.period,
        lstm,
        ..ModelOptions::default()
    })
}

/// One line per epoch on stderr, with a bar of the epochs done.
fn epoch_line(e: &Epoch) {
    const WIDTH: usize = 20;
    let done = e.epoch * WIDTH / e.max_epochs.max(1);
    let bar: String = "=".repeat(done) + &" ".repeat(WIDTH - done);
    let validation = e
        .validation_loss
        .map(|v| format!("  validation {v:.4}"))
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "  epoch {:>3}/{:<3} [{bar}] loss {:.4}{validation}  {:.2} s",
        e.epoch, e.max_epochs, e.loss, e.seconds
    );
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let options = options(&args.common)?;
    let kinds = args
        .models
        .iter()
        .map(|m| m.parse::<ModelKind>())
        .collect::<Result<Vec<_>, _>>()?;
    let config = EvalConfig {
        horizon: args.common.horizon,
        test_fraction: args.test_fraction,
        stride: args.stride,
        max_fill: args.common.max_fill,
        step_seconds: args.common.step,
    };
    let quiet = args.common.quiet;
    let globals = if kinds.contains(&ModelKind::Global) {
        train_globals(&args, &options, &config)?
    } else {
        Vec::new()
    };
    let mut reports = Vec::new();
    for (i, path) in args.traces.iter().enumerate() {
        let trace = Trace::read(path)?;
        eprintln!("[{}/{}] {}", i + 1, args.traces.len(), trace.name);
        let family = pas_models::global::family(&trace.name);
        let global = globals
            .iter()
            .find(|(f, _)| f.as_deref().is_none_or(|f| f == family))
            .map(|(_, g)| g);
        let report = eval::evaluate_trace(&trace, &kinds, &options, global, &config, &mut |p| match p {
            Progress::Fitting { model, .. } => eprintln!("  fitting {model}"),
            Progress::Epoch(e) if !quiet => epoch_line(e),
            Progress::Epoch(_) => {}
        })
        .with_context(|| format!("evaluating {}", path.display()))?;
        reports.push(report);
    }
    print_table(&reports);
    if let Some(path) = &args.json {
        let summary = eval::summarise(&reports);
        let (won, of) = eval::wins(&reports, "lstm", "lstm-seed");
        let doc = serde_json::json!({
            "horizon": config.horizon,
            "test_fraction": config.test_fraction,
            "stride": config.stride,
            "max_fill": config.max_fill,
                        "lstm": options.lstm,
            "global_train": kinds.contains(&ModelKind::Global).then_some(args.global_train),
            "global_pool": args.global_pool,
            "summary": summary,
            "lstm_beats_lstm_seed": { "won": won, "of": of },
            "series": reports,
        });
        write_json(path, &doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The global models `evaluate` scores: per family left out (`Some(family)`:
/// for that family's traces), or one for all (`None`).
fn train_globals(
    args: &EvalArgs,
    options: &ModelOptions,
    config: &EvalConfig,
) -> anyhow::Result<Vec<(Option<String>, Lstm)>> {
    let mut traces = Vec::with_capacity(args.traces.len());
    for path in &args.traces {
        let trace = Trace::read(path)?;
        let (series, _) =
            eval::trace_series(&trace, config).with_context(|| format!("reading {}", path.display()))?;
        traces.push((pas_models::global::family(&trace.name).to_owned(), series));
    }
    let lstm = LstmConfig {
        horizon: config.horizon,
        ..options.lstm.clone()
    };
    let train = |label: &str, series: Vec<pas_models::Series>| -> anyhow::Result<Lstm> {
        eprintln!("training the global model {label} ({} traces)", series.len());
        let quiet = args.common.quiet;
        let (model, report) = pas_models::global::train(&series, &lstm, args.global_pool, None, &mut |e| {
            if !quiet {
                epoch_line(e)
            }
        })
        .with_context(|| format!("training the global model {label}"))?;
        if report.diverged {
            anyhow::bail!("the global model {label} diverged (the loss became NaN or infinite)");
        }
        Ok(model)
    };
    match args.global_train {
        GlobalTrain::All => {
            // The head of each trace only, as every other model sees it.
            let heads = traces
                .into_iter()
                .map(|(_, s)| {
                    let n = (s.len() as f64 * (1.0 - config.test_fraction)) as usize;
                    s.slice(0..n)
                })
                .collect();
            Ok(vec![(None, train("on every trace's head", heads)?)])
        }
        GlobalTrain::LeaveFamilyOut => {
            let mut families: Vec<String> = traces.iter().map(|(f, _)| f.clone()).collect();
            families.sort();
            families.dedup();
            if families.len() < 2 {
                anyhow::bail!(
                    "--global-train leave-family-out needs traces of at least two families (the name before the first `-`); these are all `{}`. Use --global-train all",
                    families.join(", ")
                );
            }
            let mut out = Vec::with_capacity(families.len());
            for family in families {
                let others: Vec<_> = traces
                    .iter()
                    .filter(|(f, _)| *f != family)
                    .map(|(_, s)| s.clone())
                    .collect();
                let model = train(&format!("without {family}"), others)?;
                out.push((Some(family), model));
            }
            Ok(out)
        }
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn print_table(reports: &[SeriesReport]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<44} {:<15} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} {:>8}",
        "trace", "model", "MASE", "sMAPE%", "RMSE", "MAE", "under%", "cover%", "fit s"
    );
    for r in reports {
        for m in &r.models {
            if let Some(e) = &m.error {
                let _ = writeln!(out, "{:<44} {:<15} failed: {e}", r.name, m.model);
                continue;
            }
            let cover = m
                .coverage
                .map(|c| format!("{:.1}", 100.0 * c))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<44} {:<15} {:>7.3} {:>7.2} {:>8.3} {:>8.3} {:>6.1} {:>6} {:>8.1}",
                r.name,
                m.model,
                m.mase,
                m.smape,
                m.rmse,
                m.mae,
                100.0 * m.under_rate,
                cover,
                m.fit_seconds
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>7} {:>7} {:>7}",
        "model", "mean MASE", "traces", "best", "failed"
    );
    for s in eval::summarise(reports) {
        let _ = writeln!(
            out,
            "{:<15} {:>10.3} {:>7} {:>7} {:>7}",
            s.model, s.mean_mase, s.series, s.best, s.failed
        );
    }
    let (won, of) = eval::wins(reports, "lstm", "lstm-seed");
    if of > 0 {
        let _ = writeln!(
            out,
            "lstm beats lstm-seed on {won} of {of} traces ({:.0} %)",
            100.0 * won as f64 / of as f64
        );
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let options = options(&args.common)?;
    let kind: ModelKind = args.model.parse()?;
    let mut config = match kind {
        ModelKind::Lstm => LstmConfig {
            horizon: options.horizon,
            ..options.lstm.clone()
        },
        ModelKind::LstmSeed => LstmConfig::seed(),
        other => anyhow::bail!(
            "`pas models train` trains the neural models (lstm, lstm-seed); {other} has no weights to store"
        ),
    };
    if let Some(epochs) = args.epochs {
        config.max_epochs = epochs;
    }
    // Before training, not after: an existing model is never overwritten,
    // and a training run is never lost for a directory that cannot be made.
    if args.out.exists() {
        anyhow::bail!(
            "--out {} already exists; give a new directory (or remove it)",
            args.out.display()
        );
    }
    let trace = Trace::read(&args.trace)?;
    let step = args.common.step.unwrap_or_else(|| trace.median_step_seconds());
    let (series, gaps) = trace.to_series(step, args.common.max_fill)?;
    let series = series.with_own_history();
    eprintln!(
        "training {kind} on {} ({} steps of {step} s, {} missing, {} filled)",
        trace.name, gaps.steps, gaps.missing, gaps.filled
    );
    if let Some(path) = &args.export_examples {
        let n = Lstm::new(config.clone())?.export_training_set(&series, path)?;
        eprintln!("wrote {n} training examples to {}", path.display());
    }
    let mut model = Lstm::new(config.clone())?;
    let quiet = args.common.quiet;
    // Can it be made? Made and removed now, made again once trained: a run
    // stopped mid-training leaves no empty directory that a rerun refuses.
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let _ = std::fs::remove_dir(&args.out);
    let fitted = model.fit(&series, &mut |e| {
        if !quiet {
            epoch_line(e)
        }
    });
    let report = match fitted {
        Ok(report) if !report.diverged => report,
        failed => {
            failed?;
            anyhow::bail!("training diverged (the loss became NaN or infinite); nothing written");
        }
    };
    let weights = model.to_safetensors()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("weights.safetensors"), &weights)?;
    let manifest = pas_schemas::ModelManifest {
        schema_version: pas_schemas::SCHEMA_VERSION,
        timestamp: chrono::Utc::now(),
        key: trace.name.clone(),
        version: 1,
        architecture: kind.name().to_owned(),
        hyper_parameters: config.hyper_parameters(),
        step_seconds: f64::from(step),
        window: config.window as u32,
        horizon: config.horizon as u32,
        normalisation: model.normalisation(),
        // Offline: rows of the trace file stand in for stream sequences.
        training: pas_schemas::TrainingRange {
            first_sequence: 1,
            last_sequence: trace.points.len() as u64,
            from: trace.points[0].0,
            to: trace.points[trace.points.len() - 1].0,
        },
        validation: [(
            "validation_loss".to_owned(),
            report.validation_loss.unwrap_or(f64::NAN),
        )]
        .into_iter()
        .filter(|(_, v)| v.is_finite())
        .collect(),
        digest: pas_models::digest(&weights),
        accepted: true,
        calibration: None,
        verdict: None,
    };
    write_json(&args.out.join("manifest.json"), &serde_json::to_value(&manifest)?)?;
    println!(
        "{} epochs, {:.3} s per epoch, loss {:.4} -> {:.4}; wrote {}",
        report.epochs,
        report.seconds_per_epoch.unwrap_or(0.0),
        report.initial_loss.unwrap_or(f64::NAN),
        report.final_loss.unwrap_or(f64::NAN),
        args.out.display()
    );
    Ok(())
}
