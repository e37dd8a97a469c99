//! `pas record`: pod samples from the bus to a trace file.
//!
//! Samples come live from `pas.cpu.pod.>` (or a run's
//! `replay.<run>.pas.cpu.pod.>`) until a count, a duration or a stop, or
//! from a time range of PAS_SAMPLES. A `.jsonl` file gets every sample as it
//! arrived. A `.csv` file gets the trace format of `shared/data/traces`: per
//! workload and step (`step`, 5 s by default), folded as the pipeline folds
//! samples ([`pas_workloads::summarise`]), the utilisation as the HPA
//! defines it, the sum over pods of their mean use over the sum of their
//! mean requests, in percent; or, with `pods`, the demand (the sum of the
//! pods' mean use) as a percentage of that many pods' worth (`pas replay`'s
//! rule, so a recording made while the replicas changed replays as the load
//! it was: use it for traces the models should learn). With several
//! workloads, each gets its own file, `<name>.<namespace>.<workload>.csv`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use pas_nats::Connection;
use pas_schemas::CpuSample;
use pas_schemas::subjects::Prefix;
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
    /// Step of the CSV rows.
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
        if self.step.as_millis() == 0 || self.pods == Some(0) {
            return Err(Error::Input(
                "the step must be above 0 and pods at least 1".into(),
            ));
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
    /// Samples skipped (node samples, other workloads, unreadable).
    pub skipped: u64,
    /// Files written, with their rows.
    pub files: Vec<(PathBuf, usize)>,
}

/// Pod samples per workload and step (ms): (pod, time in ms, used,
/// requested, throttled).
type Steps = BTreeMap<i64, Vec<(String, i64, f64, f64, f64)>>;

#[derive(Default)]
struct Recorder {
    workloads: BTreeMap<(String, String), Steps>,
    raw: Vec<CpuSample>,
    samples: u64,
    skipped: u64,
}

impl Recorder {
    fn add(&mut self, config: &Config, sample: CpuSample, step_ms: i64) {
        let (Some(ns), Some(wl), Some(pod)) = (&sample.namespace, &sample.workload, &sample.pod) else {
            self.skipped += 1;
            return;
        };
        if config.namespace.as_ref().is_some_and(|n| n != ns)
            || config.workload.as_ref().is_some_and(|w| w != wl)
        {
            self.skipped += 1;
            return;
        }
        self.samples += 1;
        // As the pipeline folds them: a pod that requests no CPU has no
        // utilisation and is left out of the step, and a sample seen twice
        // (same pod and time) counts once.
        if let Some(requested) = sample.cpu_requested_millicores.filter(|r| *r > 0.0) {
            let at = sample.timestamp.timestamp_millis();
            let step = at.div_euclid(step_ms) * step_ms;
            let samples = self
                .workloads
                .entry((ns.clone(), wl.clone()))
                .or_default()
                .entry(step)
                .or_default();
            if !samples.iter().any(|(p, t, ..)| p == pod && *t == at) {
                samples.push((
                    pod.clone(),
                    at,
                    sample.cpu_used_millicores,
                    requested,
                    sample.cpu_throttled_ratio.unwrap_or(0.0),
                ));
            }
        }
        if is_jsonl(&config.out) {
            self.raw.push(sample);
        }
    }

    fn rows(steps: &Steps, pods: Option<u32>) -> Vec<(DateTime<Utc>, f64)> {
        steps
            .iter()
            .filter_map(|(ms, samples)| {
                let step =
                    pas_workloads::summarise(samples.iter().map(|(pod, _, used, requested, throttled)| {
                        pas_workloads::PodSample {
                            pod,
                            used: *used,
                            requested: *requested,
                            throttled: *throttled,
                        }
                    }));
                let value = match pods {
                    Some(p) => 100.0 * step.demand / (f64::from(p) * step.request_per_pod()),
                    None => step.utilisation(),
                };
                value
                    .is_finite()
                    .then(|| (DateTime::from_timestamp_millis(*ms).unwrap_or_default(), value))
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
        } else if self.workloads.len() == 1 || self.workloads.is_empty() {
            let rows = self
                .workloads
                .values()
                .next()
                .map(|s| Recorder::rows(s, config.pods))
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
            for ((ns, wl), steps) in &self.workloads {
                let rows = Recorder::rows(steps, config.pods);
                let path = config.out.with_file_name(format!("{stem}.{ns}.{wl}.csv"));
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
    let step_ms = i64::try_from(config.step.as_millis()).unwrap_or(i64::MAX);
    let mut rec = Recorder::default();
    match &config.from {
        From::Stream { since, until } => {
            ready();
            crate::replay::read_range(conn, &config.prefix(), *since, *until, |s| {
                rec.add(config, s, step_ms);
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
                            Ok(s) => rec.add(config, s, step_ms),
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
    let step_ms = i64::try_from(config.step.as_millis()).unwrap_or(i64::MAX);
    let mut rec = Recorder::default();
    for sample in samples {
        rec.add(config, sample, step_ms);
    }
    rec.write(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pod: &str, t: i64, used: f64, requested: f64) -> CpuSample {
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

    #[test]
    fn rows_are_utilisation_or_demand_per_step() {
        let config = Config {
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
        };
        let mut rec = Recorder::default();
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
            rec.add(&config, s, 5000);
        }
        let steps = &rec.workloads[&("shop".to_string(), "web".to_string())];
        let rows = Recorder::rows(steps, None);
        // (500 + 300) / 2000 = 40 %; then 90 %.
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![40.0, 90.0]);
        // As demand of 4 pods' worth: 800 / 4000 = 20 %; 900 / 4000 = 22.5 %.
        let rows = Recorder::rows(steps, Some(4));
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![20.0, 22.5]);
    }
}
