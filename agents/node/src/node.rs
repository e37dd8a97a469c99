//! Whole-node CPU from one long-lived sysinfo `System`.

use sysinfo::{CpuRefreshKind, RefreshKind, System};

use crate::Error;

/// Samples the node's CPU use. sysinfo computes usage between two refreshes,
/// so the sampler refreshes once when created and on every sample; the
/// first reading of a fresh `System` would otherwise always be 0 %.
pub struct NodeSampler {
    system: System,
}

impl NodeSampler {
    /// Creates the sampler and takes the first (reference) reading.
    pub fn new() -> Result<Self, Error> {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_usage()),
        )
        .map_err(|e| Error::System(e.to_string()))?;
        Ok(NodeSampler { system })
    }

    /// CPU used since the last call and the node's capacity, in millicores.
    pub fn sample(&mut self) -> (f64, f64) {
        self.system.refresh_cpu_usage();
        let cores = self.system.cpus().len().max(1) as f64;
        let percent = f64::from(self.system.global_cpu_usage()).clamp(0.0, 100.0);
        (percent / 100.0 * cores * 1000.0, cores * 1000.0)
    }
}
