//! The global model: one direct LSTM trained across many workloads' demand
//! series, each window scaled on its own ([`Scaling::Window`]), so it
//! forecasts a workload from its first full window, also one it never saw.
//! The trainer fits it on every workload it holds; `pas models eval` fits
//! it on other traces (leave one family out) to measure the cold start.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::lstm::{Lstm, LstmConfig, Scaling};
use crate::{Epoch, Error, FitReport, Series};

/// Most training examples drawn across all series by default: about 60
/// MB of examples for the default network, whatever the fleet's size.
pub const DEFAULT_POOL: usize = 100_000;

/// The global model's settings: `base` with each window scaled on its own.
pub fn config(base: &LstmConfig) -> LstmConfig {
    LstmConfig {
        scaling: Scaling::Window,
        ..base.clone()
    }
}

/// Fits the global model on `series` (at most `pool` examples, spread
/// evenly over them). `stop` ends it at the next batch.
pub fn train(
    series: &[Series],
    base: &LstmConfig,
    pool: usize,
    stop: Option<Arc<AtomicBool>>,
    progress: &mut dyn FnMut(&Epoch),
) -> Result<(Lstm, FitReport), Error> {
    let mut model = Lstm::new(config(base))?;
    if let Some(flag) = stop {
        model.stop_when(flag);
    }
    let report = model.fit_many(series, pool, progress)?;
    Ok((model, report))
}

/// The family of a trace, from its name: what comes before the first `-`
/// (`nab`, `alibaba2018`, `bitbrains` for the shared traces).
pub fn family(name: &str) -> &str {
    name.split_once('-').map_or(name, |(f, _)| f)
}
