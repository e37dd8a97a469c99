//! `pas import prometheus`: per-pod CPU history from a Prometheus server
//! (`pas_replay::prometheus`) to a trace file, samples under a replay run,
//! or the workloads' coarse history in `pas-history`.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use pas_nats::NatsConfig;
use pas_replay::prometheus::{self, Auth, Imported};
use pas_replay::{record, replay};
use pas_schemas::subjects::{BUCKET_HISTORY, Prefix};
use tokio_util::sync::CancellationToken;

/// `pas import` commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Read per-pod CPU use (cAdvisor's container_cpu_usage_seconds_total,
    /// as a rate over the step) and requests (kube-state-metrics'
    /// kube_pod_container_resource_requests) of StatefulSets and
    /// Deployments (kube_pod_owner) from a Prometheus server, and write them
    /// as a trace file (--out), publish them as samples under a replay run
    /// (--run), and/or store them as the workloads' coarse history the
    /// forecasters and trainers read (--live).
    Prometheus(PrometheusArgs),
}

/// `pas import prometheus`.
#[derive(Debug, clap::Args)]
pub struct PrometheusArgs {
    /// Base URL of the Prometheus server (http:// or https://).
    #[arg(long, env = "PAS_PROMETHEUS_URL")]
    url: String,
    /// Only this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only this workload (a StatefulSet's or Deployment's name).
    #[arg(long)]
    workload: Option<String>,
    /// How long ago the history starts, e.g. 14d.
    #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
    since: Duration,
    /// How long ago the history ends [default: now].
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    until: Duration,
    /// Resolution of the samples.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    step: Duration,
    /// The rate() window, at least twice your scrape interval [default:
    /// the step, at least 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    rate_window: Option<Duration>,
    /// Longest time range of one query.
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    chunk: Duration,
    /// A file holding a bearer token (or set PAS_PROMETHEUS_TOKEN).
    #[arg(long, conflicts_with = "user")]
    bearer_token_file: Option<PathBuf>,
    /// A user for basic authentication; the password comes from PAS_PROMETHEUS_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    /// PEM file of CA certificates to trust (besides Mozilla's roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (a test server only).
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Retries of a failed query (connection errors, timeouts, 429, 5xx).
    #[arg(long, default_value_t = 4)]
    retries: usize,
    /// Time limit of one query.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the samples to this file: .jsonl (every sample: for `pas
    /// experiment --trace`, which uses their demand as it is, and `pas replay
    /// --trace`), or .csv (`pas record`'s trace format, one file per
    /// workload: the utilisation, or with --pods the demand as a share of
    /// that many pods).
    #[arg(long)]
    out: Option<PathBuf>,
    /// In a .csv, write demand as a percentage of this many pods' worth of
    /// CPU (`pas replay`'s rule) instead of the utilisation.
    #[arg(long)]
    pods: Option<u32>,
    /// Publish the samples, with their own times, under replay.<RUN>.
    #[arg(long)]
    run: Option<String>,
    /// Store each workload's demand as its coarse history in pas-history
    /// (the last 14 days, 5-minute slots), where the live forecasters and
    /// trainers read their seasonal features.
    #[arg(long)]
    live: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl PrometheusArgs {
    fn config(&self) -> anyhow::Result<prometheus::Config> {
        let token = match &self.bearer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("--bearer-token-file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("PAS_PROMETHEUS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let auth = match (&self.user, token) {
            (Some(user), _) => Auth::Basic {
                user: user.clone(),
                password: pas_runtime::Secret::new(
                    std::env::var("PAS_PROMETHEUS_PASSWORD")
                        .context("--user needs the password in PAS_PROMETHEUS_PASSWORD")?,
                ),
            },
            (None, Some(token)) => Auth::Bearer(pas_runtime::Secret::new(token)),
            (None, None) => Auth::None,
        };
        let now = Utc::now();
        let ago = |d: Duration, flag: &str| {
            TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .with_context(|| {
                    format!(
                        "--{flag} {} reaches before any history",
                        humantime::format_duration(d)
                    )
                })
        };
        let end = ago(self.until, "until")?;
        Ok(prometheus::Config {
            url: self.url.clone(),
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            start: ago(self.since, "since")?,
            end,
            step: self.step,
            rate_window: self.rate_window,
            chunk: self.chunk,
            auth,
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            retries: self.retries,
            timeout: self.timeout,
        })
    }

    /// The file to write, checked before anything is read.
    fn recording(&self) -> Option<record::Config> {
        Some(self.recording_to(self.out.clone()?))
    }

    /// A recording of what was read to `out`.
    fn recording_to(&self, out: PathBuf) -> record::Config {
        record::Config {
            run: None,
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            from: record::From::Live {
                count: None,
                duration: None,
            },
            step: self.step,
            pods: self.pods,
            out,
        }
    }
}

/// Runs `pas import …`.
pub async fn run(command: ImportCommand, nats: &NatsConfig) -> anyhow::Result<()> {
    let ImportCommand::Prometheus(args) = command;
    if args.out.is_none() && args.run.is_none() && !args.live {
        anyhow::bail!("say where the history goes: --out FILE (.csv or .jsonl), --run RUN, and/or --live");
    }
    let config = args.config()?;
    // What can be refused is refused before a long read.
    let recording = args.recording();
    if let Some(r) = &recording {
        r.check()?;
    }
    if let Some(run) = &args.run {
        Prefix::replay(run).map_err(|e| anyhow::anyhow!("--run {run:?}: {e}"))?;
    }
    if args.live {
        prometheus::check_live_step(args.step)?;
    }
    // The bus before a long read, so a wrong user or a missing bucket is
    // said before anything is read (and nothing read is lost).
    let bus = if args.run.is_some() || args.live {
        let conn = pas_nats::connect(nats, "pas-import", false).await?;
        if args.run.is_some() {
            pas_nats::open_stream(&conn.jetstream, pas_schemas::subjects::STREAM_SAMPLES)
                .await
                .context("--run publishes to PAS_SAMPLES (run `pas bus init` first)")?;
        }
        let kv = if args.live {
            Some(conn.jetstream.get_key_value(BUCKET_HISTORY).await.context(
                "opening the pas-history bucket (run `pas bus init` first; --live needs a user that may write it, such as admin)",
            )?)
        } else {
            None
        };
        Some((conn, kv))
    } else {
        None
    };
    let mut bar = Bar::new(args.json);
    let imported = prometheus::import(&config, &mut |done, total| bar.show(done, total)).await?;
    bar.finish();
    let mut written = Vec::new();
    if let Some(r) = &recording {
        let summary = record::write_samples(r, imported.samples.iter().cloned())?;
        written.extend(
            summary
                .files
                .iter()
                .map(|(p, rows)| format!("{} ({rows} rows)", p.display())),
        );
    }
    let mut published = None;
    let mut blocks = None;
    if let Some((conn, kv)) = bus {
        let sent = async {
            if let Some(run) = &args.run {
                let replay_config = replay::Config {
                    run: run.clone(),
                    source: replay::Source::Samples(Arc::new(imported.samples.clone())),
                    speed: replay::Speed::Max,
                    timestamps: replay::Timestamps::Original,
                    ..replay::Config::default()
                };
                let summary =
                    replay::replay(&conn, &replay_config, CancellationToken::new(), &mut |_| {}).await?;
                published = Some(summary.samples);
            }
            if let Some(kv) = kv {
                let keys = Prefix::live().keys();
                blocks = Some(prometheus::store_history(&kv, &keys, &imported.samples, args.step).await?);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(error) = sent {
            // What was read is not lost: it is in --out, or kept here.
            let kept = match &args.out {
                Some(out) if out.extension().is_some_and(|e| e == "jsonl") => out.clone(),
                _ => {
                    let path = std::env::temp_dir().join(format!(
                        "pas-import-{}.jsonl",
                        Utc::now().format("%Y%m%dT%H%M%SZ")
                    ));
                    let keep = record::Config {
                        out: path.clone(),
                        pods: None,
                        ..args.recording_to(path.clone())
                    };
                    record::write_samples(&keep, imported.samples.iter().cloned())?;
                    path
                }
            };
            anyhow::bail!(
                "{error:#}. What was read is kept in {} (`pas replay --trace` publishes it)",
                kept.display()
            );
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&imported)?;
        value["samples"] = imported.samples.len().into();
        value["files"] = written.clone().into();
        value["published"] = published.into();
        value["history_blocks"] = blocks.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", summary(&imported, &written, published, blocks));
    }
    Ok(())
}

fn summary(imported: &Imported, written: &[String], published: Option<u64>, blocks: Option<usize>) -> String {
    let n = imported.workloads.len();
    let mut out = format!(
        "Imported {} samples of {n} workload{} in {} queries.\n",
        imported.samples.len(),
        if n == 1 { "" } else { "s" },
        imported.queries
    );
    for (workload, n) in &imported.workloads {
        out.push_str(&format!("  {workload}: {n} samples\n"));
    }
    if imported.pods_left_out > 0 {
        out.push_str(&format!(
            "{} pods left out: not of a StatefulSet or Deployment{}.\n",
            imported.pods_left_out, " (or not the workload asked for)"
        ));
    }
    if imported.pods_without_request > 0 {
        out.push_str(&format!(
            "{} pods have no CPU request in kube-state-metrics: their samples carry none, and PAS leaves them out of their workload's demand (in the --live history too).\n",
            imported.pods_without_request
        ));
    }
    for gap in &imported.gaps {
        out.push_str(&format!(
            "Gap in {}: no sample from {} to {} ({}); PAS treats it as missing, not as zero.\n",
            gap.workload,
            gap.after.to_rfc3339(),
            gap.before.to_rfc3339(),
            humantime::format_duration(Duration::from_secs(
                (gap.before - gap.after).num_seconds().max(0) as u64
            ))
        ));
    }
    for w in written {
        out.push_str(&format!("Wrote {w}.\n"));
    }
    if let Some(n) = published {
        out.push_str(&format!("Published {n} samples.\n"));
    }
    if let Some(n) = blocks {
        out.push_str(&format!("Stored {n} blocks of coarse history in pas-history.\n"));
    }
    out
}

/// A progress bar on stderr when it is a terminal; a line per tenth otherwise.
struct Bar {
    quiet: bool,
    tty: bool,
    shown: usize,
}

impl Bar {
    fn new(quiet: bool) -> Bar {
        Bar {
            quiet,
            tty: std::io::stderr().is_terminal(),
            shown: usize::MAX,
        }
    }

    fn show(&mut self, done: usize, total: usize) {
        if self.quiet || total == 0 {
            return;
        }
        let tenth = done * 10 / total;
        let mut err = std::io::stderr();
        if self.tty {
            let width = 30;
            let filled = done * width / total;
            let _ = write!(
                err,
                "\r[{}{}] {done}/{total} queries",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            let _ = err.flush();
        } else if tenth != self.shown {
            let _ = writeln!(err, "{done}/{total} queries");
        }
        self.shown = tenth;
    }

    fn finish(&self) {
        if !self.quiet && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}
