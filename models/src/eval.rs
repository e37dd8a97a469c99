//! Rolling-origin backtests and forecast-error metrics.
//!
//! A series is split in time: models are fitted on the head and then, from
//! every origin in the tail where the last input and all `horizon` targets
//! were observed, asked for the next `horizon` steps from the history before
//! the origin. Every model is scored on the same origins:
//!
//! * RMSE and MAE per horizon step and overall (the older system reported
//!   per-step RMSE);
//! * MASE: MAE over the in-sample mean absolute one-step change of the
//!   training part (the naive one-step error), so 1.0 is as good as
//!   yesterday's naive forecast was in sample, and series of any scale can
//!   be averaged;
//! * sMAPE in percent;
//! * under-prediction rate: the share of predicted steps below what happened
//!   (what makes an autoscaler late);
//! * coverage: the share of steps at or below the upper forecast, to compare
//!   with its nominal quantile.

use std::time::Instant;

use serde::Serialize;

use crate::forecaster::{Epoch, FitReport, Forecaster, ModelKind, ModelOptions, build};
use crate::lstm::{Lstm, usable_origins};
use crate::series::GapReport;
use crate::{Error, Series, Trace};

/// How to backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Steps predicted from each origin.
    pub horizon: usize,
    /// Share of the series (its newest part) used for testing.
    pub test_fraction: f64,
    /// Steps between origins.
    pub stride: usize,
    /// Holes of at most this many steps are interpolated; longer ones stay missing.
    pub max_fill: usize,
    /// Grid step in seconds; `None` uses the trace's median spacing.
    pub step_seconds: Option<u32>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            horizon: 10,
            test_fraction: 0.2,
            stride: 1,
            max_fill: 3,
            step_seconds: None,
        }
    }
}

/// One model's scores on one series.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelScore {
    /// Model name.
    pub model: String,
    /// Why the model could not be fitted or run; the scores are then absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Mean absolute scaled error.
    pub mase: f64,
    /// Symmetric mean absolute percentage error, in percent.
    pub smape: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// RMSE of each horizon step.
    pub rmse_per_step: Vec<f64>,
    /// MAE of each horizon step.
    pub mae_per_step: Vec<f64>,
    /// Share of predicted steps below the actual value.
    pub under_rate: f64,
    /// Share of actual values at or below the upper forecast, where there is one.
    pub coverage: Option<f64>,
    /// Per level of [`pas_schemas::QUANTILE_LEVELS`] and horizon step, that
    /// quantile of (actual − point forecast) over the origins: the
    /// split-conformal calibration of the point forecast.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub residual_quantiles: Vec<Vec<f64>>,
    /// Seconds spent fitting.
    pub fit_seconds: f64,
    /// Seconds spent predicting every origin.
    pub predict_seconds: f64,
    /// What fitting reported.
    pub fit: FitReport,
}

/// The backtest of several models on one series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// Name of the series (the trace file stem).
    pub name: String,
    /// Grid step in seconds.
    pub step_seconds: u32,
    /// Steps, missing steps and how they were handled.
    pub gaps: GapReport,
    /// Steps in the training part.
    pub train_steps: usize,
    /// Origins every model was scored on.
    pub origins: usize,
    /// The MASE denominator: mean absolute one-step change in the training part.
    pub scale: f64,
    /// One entry per model, in the order asked for.
    pub models: Vec<ModelScore>,
}

/// Progress of an evaluation.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A model starts fitting on a series.
    Fitting {
        /// The series.
        series: &'a str,
        /// The model.
        model: ModelKind,
    },
    /// An epoch of a model being fitted ended.
    Epoch(&'a Epoch),
}

/// A trace on the evaluation's grid, with its own coarse history (seasonal
/// models read a day and a week back, never past an origin).
pub fn trace_series(trace: &Trace, config: &EvalConfig) -> Result<(Series, GapReport), Error> {
    let step = config.step_seconds.unwrap_or_else(|| trace.median_step_seconds());
    let (series, gaps) = trace.to_series(step, config.max_fill)?;
    Ok((series.with_own_history(), gaps))
}

/// Backtests `kinds` on a recorded trace. [`ModelKind::Global`] is
/// `global`, a model fitted on other series ([`Lstm::fit_many`]), scored
/// as it is.
pub fn evaluate_trace(
    trace: &Trace,
    kinds: &[ModelKind],
    options: &ModelOptions,
    global: Option<&Lstm>,
    config: &EvalConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SeriesReport, Error> {
    let (series, gaps) = trace_series(trace, config)?;
    let mut models: Vec<Box<dyn Forecaster>> = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        models.push(match (kind, global) {
            (ModelKind::Global, Some(global)) => Box::new(global.frozen()?),
            _ => build(
                kind,
                &ModelOptions {
                    horizon: config.horizon,
                    ..options.clone()
                },
            )?,
        });
    }
    let mut refs: Vec<&mut dyn Forecaster> = models
        .iter_mut()
        .map(|m| m.as_mut() as &mut dyn Forecaster)
        .collect();
    backtest(&trace.name, &series, gaps, &mut refs, config, progress)
}

/// Fits `models` on the head of `series` and scores them on its tail.
pub fn backtest(
    name: &str,
    series: &Series,
    gaps: GapReport,
    models: &mut [&mut dyn Forecaster],
    config: &EvalConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SeriesReport, Error> {
    let h = config.horizon;
    if !(0.0..1.0).contains(&config.test_fraction) || config.test_fraction == 0.0 {
        return Err(Error::Input("the test fraction must be in (0, 1)".into()));
    }
    let train_steps = ((series.len() as f64) * (1.0 - config.test_fraction)) as usize;
    let train = series.slice(0..train_steps);
    let scale = naive_scale(&train.values).ok_or_else(|| {
        Error::NotEnoughData(format!(
            "{name}: the training part has no two consecutive observed steps"
        ))
    })?;
    let origins: Vec<usize> = usable_origins(&series.values, train_steps.max(1), h)
        .into_iter()
        .filter(|t| (t - train_steps).is_multiple_of(config.stride.max(1)))
        .collect();
    if origins.is_empty() {
        return Err(Error::NotEnoughData(format!(
            "{name}: no origin in the test part has {h} observed steps after it"
        )));
    }
    let mut scores = Vec::with_capacity(models.len());
    for model in models.iter_mut() {
        let kind = model.kind();
        progress(Progress::Fitting {
            series: name,
            model: kind,
        });
        let started = Instant::now();
        let fitted = model.fit(&train, &mut |e| progress(Progress::Epoch(e)));
        let fit_seconds = started.elapsed().as_secs_f64();
        let mut score = match fitted {
            Ok(fit) if fit.diverged => ModelScore {
                error: Some("training diverged".into()),
                fit,
                ..ModelScore::default()
            },
            Ok(fit) => {
                let started = Instant::now();
                match predict_all(&**model, series, &origins, train_steps) {
                    Ok(predictions) => {
                        let mut s = score(&series.values, &origins, &predictions, h, scale);
                        s.predict_seconds = started.elapsed().as_secs_f64();
                        s.fit = fit;
                        s
                    }
                    Err(e) => ModelScore {
                        error: Some(e.to_string()),
                        fit,
                        ..ModelScore::default()
                    },
                }
            }
            Err(e) => ModelScore {
                error: Some(e.to_string()),
                ..ModelScore::default()
            },
        };
        score.model = kind.name().to_owned();
        score.fit_seconds = fit_seconds;
        scores.push(score);
    }
    Ok(SeriesReport {
        name: name.to_owned(),
        step_seconds: series.step_seconds,
        gaps,
        train_steps,
        origins: origins.len(),
        scale,
        models: scores,
    })
}

/// Every origin's forecast, from the model's window and, where the model
/// reads it and the series has a history, the seasonal context.
fn predict_all(
    model: &dyn Forecaster,
    series: &Series,
    origins: &[usize],
    train_steps: usize,
) -> Result<Vec<crate::Prediction>, Error> {
    let values = &series.values;
    if model.window() > train_steps {
        return Err(Error::NotEnoughData(format!(
            "the model reads {} steps of history",
            model.window()
        )));
    }
    let mut out = Vec::with_capacity(origins.len());
    for chunk in origins.chunks(512) {
        let histories: Vec<&[f64]> = chunk.iter().map(|&t| &values[t - model.window()..t]).collect();
        let lags: Vec<Vec<f64>> = match series.seasonal.as_deref().filter(|_| model.seasonal()) {
            Some(history) => chunk
                .iter()
                .map(|&t| {
                    crate::seasonal::lags(
                        history,
                        series.time_at(t - 1),
                        series.step_seconds,
                        model.horizon(),
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        out.extend(model.predict_seasonal(&histories, &lags)?);
    }
    Ok(out)
}

/// Mean absolute one-step change over consecutive observed steps.
pub fn naive_scale(values: &[f64]) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for w in values.windows(2) {
        let d = (w[1] - w[0]).abs();
        if !d.is_nan() {
            sum += d;
            n += 1;
        }
    }
    (n > 0).then(|| (sum / n as f64).max(1e-9))
}

fn score(
    values: &[f64],
    origins: &[usize],
    predictions: &[crate::Prediction],
    h: usize,
    scale: f64,
) -> ModelScore {
    let mut sq = vec![0.0; h];
    let mut abs = vec![0.0; h];
    let mut errors = vec![Vec::with_capacity(origins.len()); h];
    let (mut smape, mut under, mut covered, mut with_upper) = (0.0, 0usize, 0usize, 0usize);
    for (&t, p) in origins.iter().zip(predictions) {
        for k in 0..h {
            let (y, f) = (values[t + k], p.values[k]);
            let e = y - f;
            errors[k].push(e);
            sq[k] += e * e;
            abs[k] += e.abs();
            let denominator = y.abs() + f.abs();
            if denominator > 0.0 {
                smape += 200.0 * e.abs() / denominator;
            }
            if f < y {
                under += 1;
            }
            if let Some(upper) = &p.upper {
                with_upper += 1;
                if y <= upper[k] {
                    covered += 1;
                }
            }
        }
    }
    let n = origins.len() as f64;
    let total = n * h as f64;
    let mae = abs.iter().sum::<f64>() / total;
    ModelScore {
        mase: mae / scale,
        smape: smape / total,
        rmse: (sq.iter().sum::<f64>() / total).sqrt(),
        mae,
        rmse_per_step: sq.iter().map(|s| (s / n).sqrt()).collect(),
        mae_per_step: abs.iter().map(|a| a / n).collect(),
        under_rate: under as f64 / total,
        coverage: (with_upper > 0).then(|| covered as f64 / with_upper as f64),
        residual_quantiles: {
            // Each step's errors sorted once, read at every level.
            let levels = pas_schemas::QUANTILE_LEVELS;
            let by_step: Vec<Vec<f64>> = errors
                .into_iter()
                .map(|e| crate::naive::quantiles_of(e, &levels))
                .collect();
            (0..levels.len())
                .map(|l| by_step.iter().map(|q| q[l]).collect())
                .collect()
        },
        ..ModelScore::default()
    }
}

/// Across-series summary of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Model name.
    pub model: String,
    /// Mean MASE over the series the model was scored on.
    pub mean_mase: f64,
    /// Series scored.
    pub series: usize,
    /// Series where it failed.
    pub failed: usize,
    /// Series where it had the lowest MASE of all models.
    pub best: usize,
}

/// Mean MASE per model over `reports`, and how often each was best.
pub fn summarise(reports: &[SeriesReport]) -> Vec<ModelSummary> {
    let mut names: Vec<String> = Vec::new();
    for r in reports {
        for m in &r.models {
            if !names.contains(&m.model) {
                names.push(m.model.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let scored: Vec<&ModelScore> = reports
                .iter()
                .flat_map(|r| r.models.iter().filter(|m| m.model == name && m.error.is_none()))
                .collect();
            let failed = reports
                .iter()
                .flat_map(|r| &r.models)
                .filter(|m| m.model == name && m.error.is_some())
                .count();
            let best = reports
                .iter()
                .filter(|r| {
                    let winner = r
                        .models
                        .iter()
                        .filter(|m| m.error.is_none())
                        .min_by(|a, b| a.mase.total_cmp(&b.mase));
                    winner.is_some_and(|w| w.model == name)
                })
                .count();
            ModelSummary {
                mean_mase: scored.iter().map(|m| m.mase).sum::<f64>() / scored.len().max(1) as f64,
                series: scored.len(),
                failed,
                best,
                model: name,
            }
        })
        .collect()
}

/// On how many series model `a` had a lower MASE than model `b`, of those both were scored on.
pub fn wins(reports: &[SeriesReport], a: &str, b: &str) -> (usize, usize) {
    let mut both = 0;
    let mut won = 0;
    for r in reports {
        let find = |name: &str| r.models.iter().find(|m| m.model == name && m.error.is_none());
        if let (Some(x), Some(y)) = (find(a), find(b)) {
            both += 1;
            if x.mase < y.mase {
                won += 1;
            }
        }
    }
    (won, both)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    #[test]
    fn metrics_are_computed_on_shared_observed_origins() {
        // A ramp: naive is always behind by k+1 steps, so MAE at step k is k+1
        // and MASE (scale 1) is the mean of 1..=h.
        let mut values: Vec<f64> = (0..100).map(|i| i as f64).collect();
        values[90] = f64::NAN;
        let series = Series {
            seasonal: None,
            start: DateTime::from_timestamp(0, 0).unwrap(),
            step_seconds: 60,
            values,
        };
        let mut naive = build(
            ModelKind::Naive,
            &ModelOptions {
                horizon: 3,
                ..ModelOptions::default()
            },
        )
        .unwrap();
        let config = EvalConfig {
            horizon: 3,
            test_fraction: 0.2,
            ..EvalConfig::default()
        };
        let r = backtest(
            "ramp",
            &series,
            GapReport::default(),
            &mut [naive.as_mut()],
            &config,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.train_steps, 80);
        // Origins 80..=97 need t-1 and t..t+2 observed: 88, 89, 90, 91 touch step 90.
        assert_eq!(r.origins, 18 - 4);
        let m = &r.models[0];
        assert_eq!(m.mae_per_step, [1.0, 2.0, 3.0]);
        assert!((m.mase - 2.0).abs() < 1e-12);
        assert_eq!(m.under_rate, 1.0);
        assert!(m.coverage.unwrap() > 0.99, "the naive margin on a ramp covers it");
    }
}
