//! The simplest baselines: the last value, and the value one season ago.

use crate::forecaster::{Epoch, FitReport, Forecaster, ModelKind, Prediction, check_history};
use crate::series::last_observed;
use crate::{Error, Series};

/// Forecasts every future step as the last observed value.
#[derive(Debug, Clone)]
pub struct Naive {
    horizon: usize,
    quantile: f64,
    margins: Option<Vec<f64>>,
}

impl Naive {
    /// A naive model for `horizon` steps.
    pub fn new(horizon: usize, quantile: f64) -> Naive {
        Naive { horizon, quantile, margins: None }
    }
}

impl Forecaster for Naive {
    fn kind(&self) -> ModelKind {
        ModelKind::Naive
    }
    fn window(&self) -> usize {
        1
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn quantile(&self) -> f64 {
        self.quantile
    }
    fn fit(&mut self, train: &Series, _: &mut dyn FnMut(&Epoch)) -> Result<FitReport, Error> {
        self.margins = None;
        self.margins = Some(residual_margins(self, &train.values, self.quantile)?);
        Ok(FitReport::default())
    }
    fn predict(&self, history: &[f64]) -> Result<Prediction, Error> {
        let last = *check_history(history, 1)?.last().expect("checked");
        Ok(with_margins(vec![last; self.horizon], self.margins.as_deref()))
    }
}

/// Forecasts step `h` as the value one season before it (repeating the last
/// season when the horizon is longer than the season).
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    horizon: usize,
    quantile: f64,
    configured: Option<usize>,
    period: Option<usize>,
    margins: Option<Vec<f64>>,
}

impl SeasonalNaive {
    /// A seasonal naive model; `period` in steps, or `None` to detect it in `fit`.
    pub fn new(horizon: usize, period: Option<usize>, quantile: f64) -> SeasonalNaive {
        SeasonalNaive { horizon, quantile, configured: period, period, margins: None }
    }

    /// The season length in use.
    pub fn period(&self) -> Option<usize> {
        self.period
    }
}

impl Forecaster for SeasonalNaive {
    fn kind(&self) -> ModelKind {
        ModelKind::SeasonalNaive
    }
    fn window(&self) -> usize {
        self.period.unwrap_or(1)
    }
    fn horizon(&self) -> usize {
        self.horizon
    }
    fn quantile(&self) -> f64 {
        self.quantile
    }
    fn fit(&mut self, train: &Series, _: &mut dyn FnMut(&Epoch)) -> Result<FitReport, Error> {
        let period = match self.configured {
            Some(0) => return Err(Error::Input("the season must be at least one step".into())),
            Some(p) => p,
            // No clear season: a day, the usual one of machine load.
            None => detect_period(&train.values, max_period(train))
                .or_else(|| train.steps_per_day().filter(|&day| day <= train.len() / 2))
                .ok_or_else(|| {
                    Error::NotEnoughData("no season found and less than two days of data; set the period".into())
                })?,
        };
        self.period = Some(period);
        self.margins = None;
        self.margins = Some(residual_margins(self, &train.values, self.quantile)?);
        Ok(FitReport { parameters: vec![("period".into(), period as f64)], ..FitReport::default() })
    }
    fn predict(&self, history: &[f64]) -> Result<Prediction, Error> {
        let period = self.period.ok_or(Error::NotFitted)?;
        let tail = check_history(history, period)?;
        let last = *tail.last().expect("checked");
        let values = (0..self.horizon)
            .map(|h| {
                // The same phase in the last observed season; the newest value
                // where that step is missing.
                let v = tail[h % period];
                if v.is_nan() { last_observed(&tail[..=h % period]).unwrap_or(last) } else { v }
            })
            .collect();
        Ok(with_margins(values, self.margins.as_deref()))
    }
}

/// The longest season worth looking for: a week, or a third of the data.
pub(crate) fn max_period(train: &Series) -> usize {
    let week = 7 * 86_400 / train.step_seconds.max(1) as usize;
    week.min(train.len() / 3)
}

/// Finds the season length of a series from its autocorrelation: the lag of
/// the highest peak after the correlation first drops below zero (or its first
/// minimum), if that peak is clearly positive. Missing steps are skipped.
pub fn detect_period(values: &[f64], max_lag: usize) -> Option<usize> {
    let n = values.len();
    if max_lag < 4 || n < 2 * max_lag.min(n / 2) {
        return None;
    }
    let max_lag = max_lag.min(n / 2);
    let (mean, std) = crate::series::mean_std(values);
    if std == 0.0 {
        return None;
    }
    let centred: Vec<f64> = values.iter().map(|v| v - mean).collect();
    let acf = |lag: usize| {
        let (mut sum, mut count) = (0.0, 0usize);
        for i in lag..n {
            let p = centred[i] * centred[i - lag];
            if !p.is_nan() {
                sum += p;
                count += 1;
            }
        }
        if count < n / 4 { f64::NAN } else { sum / count as f64 / (std * std) }
    };
    let acfs: Vec<f64> = (0..=max_lag).map(|l| if l == 0 { 1.0 } else { acf(l) }).collect();
    // Skip the first decay: until the correlation turns up again.
    let mut start = 1;
    while start + 1 <= max_lag && !(acfs[start + 1] > acfs[start]) {
        start += 1;
    }
    let mut best: Option<(usize, f64)> = None;
    for lag in start.max(2)..max_lag {
        let (a, b, c) = (acfs[lag - 1], acfs[lag], acfs[lag + 1]);
        if b.is_nan() || !(b >= a && b >= c) {
            continue;
        }
        if best.is_none_or(|(_, v)| b > v * 1.05) {
            best = Some((lag, b));
        }
    }
    best.filter(|&(_, v)| v > 0.2).map(|(lag, _)| lag)
}

/// Per-step margins so that `point + margin` is the `quantile` of what was
/// observed, from the model's own errors on up to 400 origins of `values`.
pub(crate) fn residual_margins(model: &dyn Forecaster, values: &[f64], quantile: f64) -> Result<Vec<f64>, Error> {
    let (window, horizon) = (model.window(), model.horizon());
    let origins: Vec<usize> = (window..values.len().saturating_sub(horizon - 1))
        .filter(|&t| !values[t - 1].is_nan() && values[t..t + horizon].iter().all(|v| !v.is_nan()))
        .collect();
    if origins.is_empty() {
        return Err(Error::NotEnoughData(format!(
            "no stretch of {} observed steps to estimate errors on",
            window + horizon
        )));
    }
    let stride = origins.len().div_ceil(400);
    let mut errors = vec![Vec::new(); horizon];
    for &t in origins.iter().step_by(stride) {
        let p = model.predict(&values[t - window..t])?;
        for (h, e) in errors.iter_mut().enumerate() {
            e.push(values[t + h] - p.values[h]);
        }
    }
    Ok(errors.into_iter().map(|e| quantile_of(e, quantile).max(0.0)).collect())
}

/// The `q` quantile of `values` (nearest rank).
pub(crate) fn quantile_of(mut values: Vec<f64>, q: f64) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[i]
}

pub(crate) fn with_margins(values: Vec<f64>, margins: Option<&[f64]>) -> Prediction {
    let upper = margins.map(|m| values.iter().zip(m).map(|(v, m)| v + m).collect());
    Prediction { values, upper }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn series(values: Vec<f64>) -> Series {
        Series { start: DateTime::from_timestamp(0, 0).unwrap(), step_seconds: 300, values }
    }

    #[test]
    fn naive_repeats_the_last_value_and_rejects_a_missing_one() {
        let mut m = Naive::new(3, 0.9);
        m.fit(&series((0..50).map(|i| (i % 7) as f64).collect()), &mut |_| {}).unwrap();
        let p = m.predict(&[1.0, 2.0, 5.0]).unwrap();
        assert_eq!(p.values, [5.0; 3]);
        let upper = p.upper.unwrap();
        assert!(upper.iter().all(|u| *u >= 5.0));
        assert!(m.predict(&[1.0, f64::NAN]).is_err());
        assert!(m.predict(&[]).is_err());
    }

    #[test]
    fn a_clear_season_is_detected_and_repeated() {
        let wave: Vec<f64> = (0..600).map(|i| 50.0 + 20.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()).collect();
        assert_eq!(detect_period(&wave, 200), Some(24));
        let noise: Vec<f64> = (0..600).map(|_| fastrand::f64()).collect();
        assert_eq!(detect_period(&noise, 200), None, "no season in noise");
        let mut m = SeasonalNaive::new(30, None, 0.9);
        m.fit(&series(wave.clone()), &mut |_| {}).unwrap();
        assert_eq!(m.period(), Some(24));
        let p = m.predict(&wave[..480]).unwrap();
        for h in 0..30 {
            assert!((p.values[h] - wave[480 + h]).abs() < 1e-9, "step {h}");
        }
    }
}
