//! `pas record`: pod samples from the bus to a trace file.
//!
//! Samples come live from `pas.cpu.pod.>` (or a run's
//! `replay.<run>.pas.cpu.pod.>`) until a count, a duration or a stop, or
//! from a time range of PAS_SAMPLES. A `.jsonl` file gets every sample as it
//! arrived. A `.csv` file gets the trace format of `shared/data/traces`: per
//! workload and step (`step`, 5 s by default), folded as the pipeline folds
//! samples ([`pas_workloads::Workloads`]), the utilisation as the HPA
//! defines it, the sum over pods of their mean use over the sum of their
//! mean requests, in percent; or, with `pods`, the demand (the sum of the
//! pods' mean use) as a percentage of that many pods' worth (`pas replay`'s
//! rule, so a recording made while the replicas changed replays as the load
//! it was: use it for traces the models should learn). With several
//! workloads, each gets its own file, `<name>.<namespace>.<workload>.csv`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use pas_nats::Connection;
use pas_schemas::CpuSample;
use pas_schemas::subjects::Prefix;
use pas_workloads::{Fold, WorkloadKey, Workloads};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Where samples come from.
#[derive(Debug, Clone)]
pub enum From {
    /// Live, until `count` samples, `duration`, or a stop.
    Live {
        /// Stop after this many samples.
        count: Option<u64>,
        /// Stop after this long.
        duration: Option<Duration>,
    },
    /// What PAS_SAMPLES holds between two times (on the live subjects, or
    /// the run's with [`Config::run`]).
    Stream {
        /// Start.
        since: DateTime<Utc>,
        /// End.
        until: DateTime<Utc>,
    },
}

/// A recording.
#[derive(Debug, Clone)]
pub struct Config {
    /// Record a replay run's subjects instead of the live ones.
    pub run: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this StatefulSet.
    pub workload: Option<String>,
    /// The source.
    pub from: From,
    /// Step of the CSV rows, whole seconds (as the pipeline's).
    pub step: Duration,
    /// Write demand as a percentage of this many pods instead of utilisation.
    pub pods: Option<u32>,
    /// The file (`.csv` or `.jsonl`).
    pub out: PathBuf,
}

impl Config {
    /// Checks what can be checked before recording: the file's kind, the
    /// step, and that the file can be written where asked (so a recording
    /// is never lost at the end for a missing directory).
    pub fn check(&self) -> Result<(), Error> {
        let ext = self.out.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if ext != "csv" && ext != "jsonl" {
            return Err(Error::Input(format!(
                "{}: the file must end in .csv or .jsonl",
                self.out.display()
            )));
        }
        if self.step.as_secs() == 0 || self.step.subsec_nanos() != 0 || self.pods == Some(0) {
            return Err(Error::Input(format!(
                "the step must be whole seconds, at least 1s (as the pipeline's), and pods at least 1, not {} and {:?}",
                humantime::format_duration(self.step),
                self.pods
            )));
        }
        if let Some(run) = &self.run {
            Prefix::replay(run).map_err(|e| Error::Input(format!("run `{run}`: {e}")))?;
        }
        let dir = match self.out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::Input(format!(
                "{}: the directory {} does not exist; create it first",
                self.out.display(),
                dir.display()
            )));
        }
        // The file is written beside, then renamed: try that name now.
        let probe = self.out.with_extension("partial");
        std::fs::File::create(&probe).map_err(Error::io(&probe))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    fn prefix(&self) -> Prefix {
        match &self.run {
            Some(run) => Prefix::replay(run).unwrap_or_else(|_| Prefix::live()),
            None => Prefix::live(),
        }
    }
}

/// What a recording wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Samples recorded.
    pub samples: u64,
    /// Samples skipped (node samples, other workloads, unreadable, more
    /// than a step holds).
    pub skipped: u64,
    /// Files written, with their rows.
    pub files: Vec<(PathBuf, usize)>,
}

/// Steps a recording (and the import's history) keeps, and keeps open:
/// more than any time span holds (2^40 steps of a second are 34,000
/// years), yet no overflow in [`Workloads`]' step arithmetic.
pub(crate) const ALL_STEPS: usize = 1 << 40;

/// What a recording holds: every sample folded as the pipeline folds it
/// ([`Workloads`]: by pod and time once, pods without a CPU request left
/// out), with every step kept open, since a recording has no "late".
struct Recorder {
    workloads: Workloads,
    raw: Vec<CpuSample>,
    samples: u64,
    skipped: u64,
}

impl Recorder {
    fn new(config: &Config) -> Recorder {
        let step = u32::try_from(config.step.as_secs()).unwrap_or(u32::MAX).max(1);
        Recorder {
            workloads: Workloads::new(step, ALL_STEPS, ALL_STEPS),
            raw: Vec::new(),
            samples: 0,
            skipped: 0,
        }
    }

    fn add(&mut self, config: &Config, sample: CpuSample) {
        let (Some(ns), Some(wl), Some(_)) = (&sample.namespace, &sample.workload, &sample.pod) else {
            self.skipped += 1;
            return;
        };
        if config.namespace.as_ref().is_some_and(|n| n != ns)
            || config.workload.as_ref().is_some_and(|w| w != wl)
        {
            self.skipped += 1;
            return;
        }
        if is_jsonl(&config.out) {
            self.samples += 1;
            self.raw.push(sample);
            return;
        }
        match self.workloads.fold(&sample, 0) {
            // As the pipeline: no request, no utilisation; the sample is
            // recorded, in no step.
            Fold::Folded | Fold::Duplicate | Fold::Ignored("no_cpu_request") => self.samples += 1,
            // More than a step holds (pas_workloads::MAX_SAMPLES_PER_STEP).
            Fold::Ignored(_) => self.skipped += 1,
        }
    }

    /// A workload's rows: per step with a value, its utilisation, or its
    /// demand as a percentage of `pods` pods' requests.
    fn rows(&self, key: &WorkloadKey, pods: Option<u32>) -> Vec<(DateTime<Utc>, f64)> {
        self.workloads
            .held(key)
            .into_iter()
            .filter_map(|at| {
                let step = self.workloads.step(key, at)?;
                let value = match pods {
                    Some(p) => 100.0 * step.demand / (f64::from(p) * step.request_per_pod()),
                    None => step.utilisation(),
                };
                value.is_finite().then_some((at, value))
            })
            .collect()
    }

    fn write(self, config: &Config) -> Result<Summary, Error> {
        let mut files = Vec::new();
        if is_jsonl(&config.out) {
            let mut out = Vec::new();
            for s in &self.raw {
                out.extend(pas_schemas::encode(s).map_err(|e| Error::Input(e.to_string()))?);
                out.push(b'\n');
            }
            write_file(&config.out, &out)?;
            files.push((config.out.clone(), self.raw.len()));
        } else if self.workloads.len() <= 1 {
            let rows = self
                .workloads
                .keys()
                .first()
                .map(|key| self.rows(key, config.pods))
                .unwrap_or_default();
            if rows.is_empty() {
                return Err(Error::Input(
                    "no pod samples with a CPU request arrived; nothing written".into(),
                ));
            }
            write_file(&config.out, pas_schemas::trace::to_csv(&rows).as_bytes())?;
            files.push((config.out.clone(), rows.len()));
        } else {
            let stem = config
                .out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for key in self.workloads.keys() {
                let rows = self.rows(&key, config.pods);
                let path = config
                    .out
                    .with_file_name(format!("{stem}.{}.{}.csv", key.namespace, key.workload));
                write_file(&path, pas_schemas::trace::to_csv(&rows).as_bytes())?;
                files.push((path, rows.len()));
            }
        }
        Ok(Summary {
            samples: self.samples,
            skipped: self.skipped,
            files,
        })
    }
}

fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    // Write beside, then rename: a reader never sees half a file.
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(bytes).map_err(Error::io(&tmp))?;
    f.sync_all().map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// Records until the source ends, the limit is reached, or `shutdown`;
/// then writes the file(s). `ready` is called once the subscription is in place.
pub async fn record(
    conn: &Connection,
    config: &Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Summary, Error> {
    config.check()?;
    let mut rec = Recorder::new(config);
    match &config.from {
        From::Stream { since, until } => {
            ready();
            crate::replay::read_range(conn, &config.prefix(), *since, *until, |s| {
                rec.add(config, s);
            })
            .await?;
            progress(rec.samples);
        }
        From::Live { count, duration } => {
            let subject = config.prefix().all_pod_cpu();
            let mut sub = crate::subscribe(conn, subject).await?;
            ready();
            let deadline = duration.map(|d| tokio::time::Instant::now() + d);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                if count.is_some_and(|c| rec.samples >= c) {
                    break;
                }
                tokio::select! {
                    m = sub.next() => {
                        let Some(m) = m else { break };
                        match pas_schemas::decode::<CpuSample>(&m.payload) {
                            Ok(s) => rec.add(config, s),
                            Err(_) => rec.skipped += 1,
                        }
                    }
                    _ = tick.tick() => progress(rec.samples),
                    () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                    () = shutdown.cancelled() => break,
                }
            }
            progress(rec.samples);
        }
    }
    rec.write(config)
}

/// Writes `samples` from elsewhere (`pas import prometheus`) to the file as
/// a recording of them would be: the same folding, filters and formats.
/// `config.from` is not read.
pub fn write_samples(
    config: &Config,
    samples: impl IntoIterator<Item = CpuSample>,
) -> Result<Summary, Error> {
    config.check()?;
    let mut rec = Recorder::new(config);
    for sample in samples {
        rec.add(config, sample);
    }
    rec.write(config)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sample of pod `pod` of shop/web at `t` seconds.
    pub(crate) fn sample(pod: &str, t: i64, used: f64, requested: f64) -> CpuSample {
        CpuSample {
            schema_version: pas_schemas::SCHEMA_VERSION,
            timestamp: DateTime::from_timestamp(t, 0).unwrap(),
            node: "n".into(),
            namespace: Some("shop".into()),
            workload: Some("web".into()),
            pod: Some(pod.into()),
            cpu_used_millicores: used,
            cpu_requested_millicores: Some(requested),
            cpu_capacity_millicores: None,
            cpu_throttled_ratio: None,
        }
    }

    /// A live recording of 5 s steps to `x.csv`.
    fn csv_recording() -> Config {
        Config {
            run: None,
            namespace: None,
            workload: None,
            from: From::Live {
                count: None,
                duration: None,
            },
            step: Duration::from_secs(5),
            pods: None,
            out: "x.csv".into(),
        }
    }

    #[test]
    fn a_step_is_whole_seconds_as_the_pipelines() {
        let config = Config {
            step: Duration::from_millis(1500),
            ..csv_recording()
        };
        let error = config.check().unwrap_err().to_string();
        assert!(
            error.contains("whole seconds") && error.contains("1s 500ms"),
            "{error}"
        );
    }

    #[test]
    fn rows_are_utilisation_or_demand_per_step() {
        let config = csv_recording();
        let mut rec = Recorder::new(&config);
        // Step 0: two pods, one sampled twice; step 5: one pod.
        for s in [
            sample("web-0", 0, 400.0, 1000.0),
            sample("web-0", 3, 600.0, 1000.0),
            sample("web-1", 1, 300.0, 1000.0),
            // Seen twice, and a pod with no request: neither changes the step.
            sample("web-1", 1, 300.0, 1000.0),
            CpuSample {
                cpu_requested_millicores: None,
                ..sample("web-2", 2, 5000.0, 1000.0)
            },
            sample("web-0", 6, 900.0, 1000.0),
        ] {
            rec.add(&config, s);
        }
        // A node whose clock was 50 years off: one more row, not the steps
        // between.
        rec.add(&config, sample("web-0", 5 * 10_i64.pow(9) / 3, 500.0, 1000.0));
        let key = WorkloadKey {
            namespace: "shop".into(),
            workload: "web".into(),
        };
        let rows = rec.rows(&key, None);
        assert_eq!(rows.len(), 3, "{rows:?}");
        let rows = &rows[..2];
        // (500 + 300) / 2000 = 40 %; then 90 %.
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![40.0, 90.0]);
        // As demand of 4 pods' worth: 800 / 4000 = 20 %; 900 / 4000 = 22.5 %.
        let rows = &rec.rows(&key, Some(4))[..2];
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![20.0, 22.5]);
    }
}
