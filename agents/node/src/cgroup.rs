//! Per-pod CPU from cgroup v2 usage counters.
//!
//! The kubelet puts each pod in a cgroup named after its UID, under
//! `kubepods.slice` (systemd driver: `kubepods-burstable-pod<uid>.slice`, with
//! `_` for `-` in the UID) or `kubepods` (cgroupfs driver: `pod<uid>`), one
//! level deeper for the burstable and best-effort QoS classes. Each holds
//! `cpu.stat` with `usage_usec`, the CPU time used by the pod so far, and,
//! where the pod has a CPU limit, `nr_periods` and `nr_throttled`, the CFS
//! quota periods that ran and those in which the quota ran out; two readings
//! give the pod's CPU use in between and the share of its periods it was
//! throttled in (a pod that sits at its limit wanted more than it used: its
//! use is a lower bound of its demand). Not `throttled_usec`: the kernel sums
//! it over CPUs, so a pod on several CPUs can count more throttled time than
//! the interval had.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Reads pod cgroups and turns their usage counters into millicores.
#[derive(Debug)]
pub struct PodCpuReader {
    root: PathBuf,
    last: HashMap<String, (Counters, Instant)>,
}

/// A pod cgroup's `cpu.stat` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    usage_usec: u64,
    /// CFS periods and throttled periods; absent where the kernel has no
    /// CPU controller for the cgroup, and no period runs without a limit.
    periods: Option<(u64, u64)>,
}

/// One pod's CPU over the interval between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct PodCpu {
    /// The pod's UID.
    pub uid: String,
    /// CPU used, millicores.
    pub millicores: f64,
    /// Share of the interval's CFS periods in which the pod was throttled,
    /// 0 to 1; `None` where no period ran (no CPU limit) or none is counted.
    pub throttled: Option<f64>,
}

impl PodCpuReader {
    /// Reads the hierarchy mounted at `root` (normally `/sys/fs/cgroup`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PodCpuReader {
            root: root.into(),
            last: HashMap::new(),
        }
    }

    /// Every pod cgroup under the root, as (pod UID, directory).
    pub fn pod_cgroups(&self) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        for top in ["kubepods.slice", "kubepods"] {
            let dir = self.root.join(top);
            for entry in read_dirs(&dir) {
                match pod_uid(&entry) {
                    Some(uid) => found.push((uid, entry)),
                    // A QoS class directory: its children are pods.
                    None => found.extend(
                        read_dirs(&entry)
                            .into_iter()
                            .filter_map(|d| pod_uid(&d).map(|u| (u, d))),
                    ),
                }
            }
        }
        found
    }

    /// CPU use of every pod since the previous call, in millicores, and
    /// the share of the interval it was throttled. A pod seen for the first
    /// time has no previous reading and is left out until the next call.
    pub fn sample(&mut self, now: Instant) -> Vec<PodCpu> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (uid, dir) in self.pod_cgroups() {
            let Some(counters) = counters(&dir) else { continue };
            if let Some((before, at)) = self.last.get(&uid) {
                let elapsed = now.saturating_duration_since(*at).as_micros() as f64;
                // A counter that went back means a new cgroup with the same UID.
                if elapsed > 0.0 && counters.usage_usec >= before.usage_usec {
                    let throttled = match (counters.periods, before.periods) {
                        (Some((p, t)), Some((pb, tb))) if p > pb && t >= tb => {
                            Some(((t - tb) as f64 / (p - pb) as f64).clamp(0.0, 1.0))
                        }
                        _ => None,
                    };
                    out.push(PodCpu {
                        uid: uid.clone(),
                        millicores: (counters.usage_usec - before.usage_usec) as f64 / elapsed * 1000.0,
                        throttled,
                    });
                }
            }
            seen.insert(uid, (counters, now));
        }
        self.last = seen;
        out
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The pod UID a cgroup directory is named after, if it is a pod's.
fn pod_uid(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let uid = if let Some(rest) = name.strip_suffix(".slice") {
        // kubepods-pod<uid>, kubepods-burstable-pod<uid>, kubepods-besteffort-pod<uid>
        let (_, uid) = rest.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

fn counters(dir: &Path) -> Option<Counters> {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(Counters {
        usage_usec: field("usage_usec")?,
        periods: field("nr_periods").zip(field("nr_throttled")),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: &str = "0b6f6ad4-3a9c-4e27-9d0e-2b4a1c9f7e01";
    const B: &str = "5c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f";
    const C: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn write_usage(dir: &Path, usec: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            format!("usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n"),
        )
        .unwrap();
    }

    #[test]
    fn finds_pods_of_both_drivers_and_every_qos_class() {
        let root = tempfile::tempdir().unwrap();
        let sd = root.path().join("kubepods.slice");
        write_usage(&sd.join(format!("kubepods-pod{}.slice", A.replace('-', "_"))), 0);
        write_usage(
            &sd.join("kubepods-burstable.slice")
                .join(format!("kubepods-burstable-pod{}.slice", B.replace('-', "_"))),
            0,
        );
        write_usage(
            &root.path().join("kubepods/besteffort").join(format!("pod{C}")),
            0,
        );
        // Not pods: a container scope and a system slice.
        write_usage(&sd.join("kubepods-besteffort.slice/cri-containerd-abc.scope"), 0);
        write_usage(&root.path().join("system.slice/kubelet.service"), 0);

        let mut uids: Vec<_> = PodCpuReader::new(root.path())
            .pod_cgroups()
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        uids.sort();
        assert_eq!(uids, [A, B, C]);
    }

    #[test]
    fn usage_deltas_become_millicores() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kubepods/burstable").join(format!("pod{A}"));
        write_usage(&dir, 1_000_000);
        let mut reader = PodCpuReader::new(root.path());
        let t0 = Instant::now();
        assert!(
            reader.sample(t0).is_empty(),
            "the first reading has nothing to compare with"
        );
        // 2.5 s of CPU in 5 s of wall time: half a core busy.
        write_usage(&dir, 3_500_000);
        let got = reader.sample(t0 + Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uid, A);
        assert!((got[0].millicores - 500.0).abs() < 1e-9, "{got:?}");
        assert_eq!(got[0].throttled, None, "no limit, no throttling counter");
        // A pod that went away is forgotten; a restarted counter gives no sample.
        write_usage(&dir, 10);
        assert!(reader.sample(t0 + Duration::from_secs(10)).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(reader.sample(t0 + Duration::from_secs(15)).is_empty());
        assert!(reader.last.is_empty());
    }

    /// A pod with a CPU limit: the share of its CFS periods in which the
    /// quota ran out, as cgroup v2 counts them (`nr_throttled` over
    /// `nr_periods`), however many CPUs it ran on.
    #[test]
    fn throttled_periods_become_a_share() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kubepods/burstable").join(format!("pod{A}"));
        let write = |usage: u64, periods: u64, throttled: u64| {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("cpu.stat"),
                format!(
                    "usage_usec {usage}\nuser_usec 1\nsystem_usec 2\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {}\n",
                    throttled * 300_000
                ),
            )
            .unwrap();
        };
        write(1_000_000, 100, 10);
        let mut reader = PodCpuReader::new(root.path());
        let t0 = Instant::now();
        reader.sample(t0);
        // 5 s at its limit: 50 periods of 100 ms, throttled in 15 of them
        // (on several CPUs throttled_usec adds up to more than the 5 s).
        write(6_000_000, 150, 25);
        let got = reader.sample(t0 + Duration::from_secs(5));
        assert!((got[0].millicores - 1000.0).abs() < 1e-9);
        assert!((got[0].throttled.unwrap() - 0.3).abs() < 1e-9, "{got:?}");
        // No period ran (no limit, or idle): no share.
        write(7_000_000, 150, 25);
        let got = reader.sample(t0 + Duration::from_secs(10));
        assert_eq!(got[0].throttled, None);
    }
}
