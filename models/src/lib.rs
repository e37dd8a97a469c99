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
pub mod global;
pub mod holt_winters;
pub mod lstm;
pub mod naive;
pub mod runtime;
pub mod seasonal;
pub mod series;

pub use error::Error;
pub use forecaster::{Epoch, FitReport, Forecaster, ModelKind, ModelOptions, Prediction, build};
pub use series::{GapReport, Series, Trace};

/// Fewest forecast errors a calibration is made from.
pub const MIN_CALIBRATION_ORIGINS: usize = 20;

/// Calibrated quantiles of a point forecast: for each level, `point +
/// offset` per step (offsets per level and step, as
/// [`pas_schemas::Calibration`] keeps them), never below 0 nor below the
/// level beneath it.
pub fn calibrated(point: &[f64], levels: &[f64], offsets: &[Vec<f64>]) -> Vec<pas_schemas::QuantileForecast> {
    let mut out: Vec<pas_schemas::QuantileForecast> = Vec::with_capacity(levels.len());
    for (&q, row) in levels.iter().zip(offsets) {
        let values = point
            .iter()
            .enumerate()
            .map(|(h, p)| {
                let v = (p + row.get(h).copied().unwrap_or(0.0)).clamp(0.0, pas_schemas::MAX_FORECAST_VALUE);
                out.last().map_or(v, |below| v.max(below.values[h]))
            })
            .collect();
        out.push(pas_schemas::QuantileForecast { q, values });
    }
    out
}

/// Share of `(actual, bound)` pairs with the actual at or below the bound
/// (pairs with a missing actual left out): how often a quantile held.
pub fn coverage(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let (mut n, mut below) = (0usize, 0usize);
    for (actual, bound) in pairs {
        if actual.is_nan() || bound.is_nan() {
            continue;
        }
        n += 1;
        below += usize::from(actual <= bound);
    }
    (n > 0).then(|| below as f64 / n as f64)
}

/// The digest a model manifest records for its weights: `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod calibration_tests {
    use super::*;

    /// Uniform draws in [-1, 1) from a fixed-seed generator.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    /// Demand of 1000m plus uniform noise of ±100m: naive's error h steps
    /// ahead is the difference of two such draws, triangular on ±200m, whose
    /// q-quantile is known. The calibration finds it, and on fresh draws each
    /// level holds as often as it says.
    #[test]
    fn calibrated_quantiles_cover_a_known_distribution_as_often_as_their_level() {
        let levels = [0.5, 0.9, 0.95];
        let train: Vec<f64> = noise(3000, 1).iter().map(|e| 1000.0 + 100.0 * e).collect();
        let offsets = naive::baseline_calibration(&train, 3, &levels).unwrap();
        // Triangular on [-a, a]: F(x) = 1 - (a - x)^2 / (2 a^2) for x >= 0.
        let a = 200.0;
        for (q, row) in levels.iter().zip(&offsets) {
            let exact = a * (1.0 - (2.0 * (1.0 - q)).sqrt());
            for o in row {
                assert!((o - exact).abs() < 0.06 * a, "q {q}: {o} against {exact}");
            }
        }
        // Fresh data: forecast each step from the one before.
        let test: Vec<f64> = noise(4000, 2).iter().map(|e| 1000.0 + 100.0 * e).collect();
        for (i, q) in levels.iter().enumerate() {
            let pairs = test.windows(2).map(|w| {
                let quantiles = calibrated(&[w[0]], &levels, &offsets);
                (w[1], quantiles[i].values[0])
            });
            let c = coverage(pairs).unwrap();
            assert!((c - q).abs() < 0.03, "level {q} covered {c}");
        }
        // Levels never cross, and demand is never below 0.
        let q = calibrated(
            &[10.0, 10.0],
            &levels,
            &[vec![-50.0, 0.0], vec![-60.0, 5.0], vec![1.0, 4.0]],
        );
        assert_eq!(q[0].values, [0.0, 10.0]);
        assert_eq!(q[1].values, [0.0, 15.0]);
        assert_eq!(q[2].values, [11.0, 15.0]);
        assert_eq!(coverage([(1.0, 2.0), (3.0, 2.0), (f64::NAN, 1.0)]), Some(0.5));
        assert_eq!(coverage([]), None);
    }
}
