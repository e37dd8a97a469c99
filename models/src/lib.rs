//! PAS forecasting models on libtorch (`tch`). This is the only crate that
//! links libtorch; the node agent never depends on it.
//!
//! Start with [`Forecaster`], the one trait every model implements, and
//! [`build`], which makes a model by name: the baselines [`naive`]
//! (last value, seasonal naive) and [`holt_winters`], and the LSTMs in
//! [`lstm`] (PAS's own and the older system's). [`Series`] puts recorded or
//! live data on a fixed step with missing steps explicit. [`eval`] backtests
//! models on the tail of a series and scores them; [`runtime`] sets libtorch's
//! threads and seed.

pub mod batch;
pub mod error;
pub mod eval;
pub mod forecaster;
pub mod holt_winters;
pub mod lstm;
pub mod naive;
pub mod runtime;
pub mod series;

pub use error::Error;
pub use forecaster::{Epoch, FitReport, Forecaster, ModelKind, ModelOptions, Prediction, build};
pub use series::{GapReport, Series, Trace};

/// The digest a model manifest records for its weights: `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
