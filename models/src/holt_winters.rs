//! Additive Holt-Winters with a damped trend; smoothing constants fitted on
//! the training data by grid search on the multi-step absolute error.

use crate::forecaster::{Epoch, FitReport, Forecaster, ModelKind, Prediction, check_history};
use crate::naive::{calendar_periods, candidate_periods, max_period, residual_margins, with_margins};
use crate::{Error, Series};

/// Smoothing constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    /// Level.
    pub alpha: f64,
    /// Trend.
    pub beta: f64,
    /// Season.
    pub gamma: f64,
    /// Trend damping (1 = undamped).
    pub phi: f64,
}

/// Additive Holt-Winters. Without a season (none configured or detected) it
/// is Holt's damped linear trend method.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    horizon: usize,
    quantile: f64,
    configured: Option<usize>,
    period: usize,
    smoothing: Option<Smoothing>,
    margins: Option<Vec<f64>>,
    /// While fitting: score errors from this step on, the same for every season tried.
    score_from: usize,
}

impl HoltWinters {
    /// A model for `horizon` steps; `period` in steps, or `None` to detect it.
    pub fn new(horizon: usize, period: Option<usize>, quantile: f64) -> HoltWinters {
        HoltWinters {
            horizon,
            quantile,
            configured: period,
            period: period.unwrap_or(0),
            smoothing: None,
            margins: None,
            score_from: 0,
        }
    }

    /// The fitted constants.
    pub fn smoothing(&self) -> Option<Smoothing> {
        self.smoothing
    }

    /// Runs the filter over `values`. With `score`, returns the sum and count
    /// of the absolute 1..=h-step errors made along the way; without, the
    /// forecast from the end of `values`.
    fn run(&self, values: &[f64], s: Smoothing, score: bool) -> (f64, usize, Vec<f64>) {
        let p = self.period;
        let h_max = self.horizon;
        let (mut level, mut trend, mut season) = initial_state(values, p);
        let (mut sum, mut count) = (0.0, 0usize);
        let start = if p > 0 { 2 * p } else { 2 };
        let damp = |h: usize| -> f64 { (1..=h).map(|k| s.phi.powi(k as i32)).sum() };
        let damps: Vec<f64> = (1..=h_max).map(damp).collect();
        for (t, &y) in values.iter().enumerate().skip(start.min(values.len())) {
            let seas = if p > 0 { season[t % p] } else { 0.0 };
            let predicted_level = level + s.phi * trend;
            if y.is_nan() {
                level = predicted_level;
                trend *= s.phi;
            } else {
                let new_level = s.alpha * (y - seas) + (1.0 - s.alpha) * predicted_level;
                trend = s.beta * (new_level - level) + (1.0 - s.beta) * s.phi * trend;
                level = new_level;
                if p > 0 {
                    season[t % p] = s.gamma * (y - level) + (1.0 - s.gamma) * seas;
                }
            }
            if score && t >= self.score_from {
                for h in 0..h_max {
                    let Some(&y_h) = values.get(t + 1 + h) else { break };
                    if y_h.is_nan() {
                        continue;
                    }
                    let seas = if p > 0 { season[(t + 1 + h) % p] } else { 0.0 };
                    sum += (y_h - (level + damps[h] * trend + seas)).abs();
                    count += 1;
                }
            }
        }
        let n = values.len();
        let forecast = if score {
            Vec::new()
        } else {
            (0..h_max)
                .map(|h| level + damps[h] * trend + if p > 0 { season[(n + h) % p] } else { 0.0 })
                .collect()
        };
        (sum, count, forecast)
    }
}

/// Level, trend and season from the first two seasons (or first two steps).
fn initial_state(values: &[f64], p: usize) -> (f64, f64, Vec<f64>) {
    let mean = |s: &[f64]| crate::series::mean_std(s).0;
    if p == 0 {
        let first = values.iter().copied().find(|v| !v.is_nan()).unwrap_or(0.0);
        return (first, 0.0, Vec::new());
    }
    let (m1, m2) = (mean(&values[..p]), mean(&values[p..2 * p]));
    let mut season = vec![0.0; p];
    for (i, s) in season.iter_mut().enumerate() {
        let (a, b) = (values[i] - m1, values[p + i] - m2);
        *s = match (a.is_nan(), b.is_nan()) {
            (false, false) => (a + b) / 2.0,
            (false, true) => a,
            (true, false) => b,
            (true, true) => 0.0,
        };
    }
    // The level at step 2p-1 carries the trend through the second season.
    let trend = (m2 - m1) / p as f64;
    (m2 + trend * (p as f64 - 1.0) / 2.0, trend, season)
}

impl Forecaster for HoltWinters {
    fn kind(&self) -> ModelKind {
        ModelKind::HoltWinters
    }
    fn window(&self) -> usize {
        if self.period > 0 { 3 * self.period } else { 30 }
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn quantile(&self) -> f64 {
        self.quantile
    }
    fn fit(&mut self, train: &Series, _: &mut dyn FnMut(&Epoch)) -> Result<FitReport, Error> {
        // The season is chosen with the constants: every candidate, and none.
        let periods: Vec<usize> = match self.configured {
            Some(p) => vec![p],
            None => {
                let mut c = candidate_periods(&train.values, max_period(train), &calendar_periods(train));
                c.retain(|&p| train.len() >= 3 * p + self.horizon);
                c.push(0);
                c
            }
        };
        if let Some(&p) = periods
            .first()
            .filter(|&&p| p > 0 && train.len() < 3 * p + self.horizon)
        {
            return Err(Error::NotEnoughData(format!(
                "Holt-Winters with a season of {p} steps needs {} steps, the series has {}",
                3 * p + self.horizon,
                train.len()
            )));
        }
        let mut best: (f64, Option<Smoothing>, usize) = (f64::INFINITY, None, 0);
        self.score_from = periods.iter().map(|p| 2 * p).max().unwrap_or(0);
        for period in periods {
            self.period = period;
            let gammas: &[f64] = if period > 0 {
                &[0.0, 0.05, 0.1, 0.3]
            } else {
                &[0.0]
            };
            for &alpha in &[0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9] {
                for &beta in &[0.0, 0.01, 0.05, 0.15] {
                    for &gamma in gammas {
                        for &phi in &[0.8, 0.9, 0.98] {
                            let s = Smoothing {
                                alpha,
                                beta,
                                gamma,
                                phi,
                            };
                            let (sum, count, _) = self.run(&train.values, s, true);
                            if count > 0 && sum / (count as f64) < best.0 {
                                best = (sum / count as f64, Some(s), period);
                            }
                        }
                    }
                }
            }
        }
        self.period = best.2;
        let s = best
            .1
            .ok_or_else(|| Error::NotEnoughData("no observed steps to fit Holt-Winters on".into()))?;
        self.smoothing = Some(s);
        self.margins = None;
        self.margins = Some(residual_margins(self, &train.values, self.quantile)?);
        Ok(FitReport {
            final_loss: Some(best.0),
            parameters: vec![
                ("period".into(), self.period as f64),
                ("alpha".into(), s.alpha),
                ("beta".into(), s.beta),
                ("gamma".into(), s.gamma),
                ("phi".into(), s.phi),
            ],
            ..FitReport::default()
        })
    }
    fn predict(&self, history: &[f64]) -> Result<Prediction, Error> {
        let s = self.smoothing.ok_or(Error::NotFitted)?;
        let tail = check_history(history, self.window())?;
        let (_, _, forecast) = self.run(tail, s, false);
        Ok(with_margins(forecast, self.margins.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    #[test]
    fn fits_a_trending_season_closely() {
        let y: Vec<f64> = (0..400)
            .map(|i| 20.0 + 0.05 * i as f64 + 10.0 * ((i % 12) as f64 / 12.0 * std::f64::consts::TAU).sin())
            .collect();
        let train = Series {
            seasonal: None,
            start: DateTime::from_timestamp(0, 0).unwrap(),
            step_seconds: 60,
            values: y[..360].to_vec(),
        };
        let mut m = HoltWinters::new(6, Some(12), 0.9);
        m.fit(&train, &mut |_| {}).unwrap();
        let p = m.predict(&y[..360]).unwrap();
        for h in 0..6 {
            assert!(
                (p.values[h] - y[360 + h]).abs() < 0.5,
                "step {h}: {} vs {}",
                p.values[h],
                y[360 + h]
            );
        }
    }
}
