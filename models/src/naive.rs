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
        Naive {
            horizon,
            quantile,
            margins: None,
        }
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

/// The forecast served for a workload without a model: naive fitted on its
/// recent `history` (for error margins, where the history is long enough)
/// and predicted from it. The forecaster and `pas experiment` both use it.
pub fn baseline(
    history: Vec<f64>,
    step_seconds: u32,
    horizon: usize,
    quantile: f64,
) -> Result<Prediction, Error> {
    let series = Series {
        seasonal: None,
        start: chrono::DateTime::UNIX_EPOCH,
        step_seconds,
        values: history,
    };
    let mut naive = Naive::new(horizon, quantile);
    // Too short a history for error margins: a point forecast only.
    let _ = naive.fit(&series, &mut |_| {});
    naive.predict(&series.values)
}

/// The baseline's calibration on its own recent `history`: per level of
/// `levels` and step, the quantile of naive's errors there (what
/// [`crate::calibrated`] adds to its point forecast); `None` when the
/// history is too short to have made one forecast.
pub fn baseline_calibration(history: &[f64], horizon: usize, levels: &[f64]) -> Option<Vec<Vec<f64>>> {
    // A quantile of a handful of errors is not calibrated.
    if history.len() < horizon + crate::MIN_CALIBRATION_ORIGINS {
        return None;
    }
    // Naive costs nothing to run: every origin of the history.
    residual_quantiles(&Naive::new(horizon, 0.5), history, levels, history.len()).ok()
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
        SeasonalNaive {
            horizon,
            quantile,
            configured: period,
            period,
            margins: None,
        }
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
            // The candidate season with the lowest in-sample error; with no
            // candidate, a day, the usual season of machine load.
            None => {
                let mut candidates =
                    candidate_periods(&train.values, max_period(train), &calendar_periods(train));
                if candidates.is_empty() {
                    candidates.extend(train.steps_per_day().filter(|&day| day <= train.len() / 2));
                }
                let mut best: Option<(usize, f64)> = None;
                for p in candidates {
                    self.period = Some(p);
                    if let Ok(error) = in_sample_error(self, &train.values)
                        && best.is_none_or(|(_, e)| error < e)
                    {
                        best = Some((p, error));
                    }
                }
                best.map(|(p, _)| p).ok_or_else(|| {
                    Error::NotEnoughData(
                        "no season found and less than two days of data; set the period".into(),
                    )
                })?
            }
        };
        self.period = Some(period);
        self.margins = None;
        self.margins = Some(residual_margins(self, &train.values, self.quantile)?);
        Ok(FitReport {
            parameters: vec![("period".into(), period as f64)],
            ..FitReport::default()
        })
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
                if v.is_nan() {
                    last_observed(&tail[..=h % period]).unwrap_or(last)
                } else {
                    v
                }
            })
            .collect();
        Ok(with_margins(values, self.margins.as_deref()))
    }
}

/// The rule some operators scale by today: plan for the busiest the
/// coming window was one week earlier (a day earlier while there are less
/// than two weeks of data). Every step of the forecast is the highest value
/// of the `horizon` steps exactly one season before the forecast window.
#[derive(Debug, Clone)]
pub struct SeasonalPeak {
    horizon: usize,
    quantile: f64,
    configured: Option<usize>,
    period: Option<usize>,
    margins: Option<Vec<f64>>,
}

impl SeasonalPeak {
    /// A seasonal-peak model; `period` in steps, or `None` for a week (a day
    /// with less than two weeks of training data).
    pub fn new(horizon: usize, period: Option<usize>, quantile: f64) -> SeasonalPeak {
        SeasonalPeak {
            horizon,
            quantile,
            configured: period,
            period,
            margins: None,
        }
    }
}

impl Forecaster for SeasonalPeak {
    fn kind(&self) -> ModelKind {
        ModelKind::SeasonalPeak
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
            None => {
                let day = train
                    .steps_per_day()
                    .ok_or_else(|| Error::Input("the step does not divide a day".into()))?;
                if train.len() >= 14 * day {
                    7 * day
                } else if train.len() >= 2 * day {
                    day
                } else {
                    return Err(Error::NotEnoughData(
                        "less than two days of data: no day earlier to look at".into(),
                    ));
                }
            }
        };
        self.period = Some(period);
        self.margins = None;
        self.margins = Some(residual_margins(self, &train.values, self.quantile)?);
        Ok(FitReport {
            parameters: vec![("period".into(), period as f64)],
            ..FitReport::default()
        })
    }
    fn predict(&self, history: &[f64]) -> Result<Prediction, Error> {
        let period = self.period.ok_or(Error::NotFitted)?;
        let tail = check_history(history, period)?;
        // tail[h] is one season before forecast step h.
        let window = &tail[..self.horizon.min(period)];
        let peak = window
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f64::NAN, f64::max);
        // Nothing a season before: the last value (observed: checked above).
        let value = if peak.is_nan() {
            tail.last().copied().ok_or(Error::NotFitted)?
        } else {
            peak
        };
        Ok(with_margins(vec![value; self.horizon], self.margins.as_deref()))
    }
}

/// The longest season worth looking for: a week, or a third of the data.
pub(crate) fn max_period(train: &Series) -> usize {
    let week = 7 * 86_400 / train.step_seconds.max(1) as usize;
    week.min(train.len() / 3)
}

/// Finds the season length of a series from its autocorrelation (missing
/// steps skipped). Calendar seasons (`calendar`, in steps: a day, a week) are
/// preferred when the correlation at that lag is at least 0.25; otherwise the
/// lag of the highest prominent peak (at least 0.3, and 0.1 above the lowest
/// correlation between half that lag and it). `None` when nothing stands out.
pub fn detect_period(values: &[f64], max_lag: usize, calendar: &[usize]) -> Option<usize> {
    let acfs = autocorrelation(values, max_lag.min(values.len() / 2));
    if acfs.len() < 5 {
        return None;
    }
    let max_lag = acfs.len() - 1;
    let calendar_best = calendar
        .iter()
        .filter(|&&p| p >= 2 && p <= max_lag)
        .map(|&p| (p, acfs[p]))
        .filter(|&(_, r)| r >= 0.25)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((p, _)) = calendar_best {
        return Some(p);
    }
    let mut best: Option<(usize, f64)> = None;
    for lag in 2..max_lag {
        let (a, b, c) = (acfs[lag - 1], acfs[lag], acfs[lag + 1]);
        if b.is_nan() || !(b >= a && b >= c) || b < 0.3 {
            continue;
        }
        let trough = acfs[lag / 2..lag]
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f64::INFINITY, f64::min);
        if b - trough < 0.1 {
            continue;
        }
        if best.is_none_or(|(_, v)| b > v * 1.05) {
            best = Some((lag, b));
        }
    }
    best.map(|(lag, _)| lag)
}

/// Season lengths worth trying on a series: the calendar seasons whose
/// autocorrelation is at least 0.1, and up to three of the most prominent
/// autocorrelation peaks (see [`detect_period`]), best first.
pub fn candidate_periods(values: &[f64], max_lag: usize, calendar: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let acfs = autocorrelation(values, max_lag.min(values.len() / 2));
    if acfs.len() < 5 {
        return out;
    }
    let max_lag = acfs.len() - 1;
    for &p in calendar.iter().filter(|&&p| p >= 2 && p <= max_lag) {
        if acfs[p] >= 0.1 {
            out.push(p);
        }
    }
    let mut peaks: Vec<(usize, f64)> = (2..max_lag)
        .filter(|&lag| {
            let (a, b, c) = (acfs[lag - 1], acfs[lag], acfs[lag + 1]);
            let trough = acfs[lag / 2..lag]
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .fold(f64::INFINITY, f64::min);
            !b.is_nan() && b >= a && b >= c && b >= 0.2 && b - trough >= 0.05
        })
        .map(|lag| (lag, acfs[lag]))
        .collect();
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (lag, _) in peaks.into_iter().take(3) {
        if !out.contains(&lag) {
            out.push(lag);
        }
    }
    out
}

/// Autocorrelation of `values` at lags `0..=max_lag`, missing steps skipped;
/// empty when the series is constant. A lag with too few pairs is `NaN`.
fn autocorrelation(values: &[f64], max_lag: usize) -> Vec<f64> {
    let n = values.len();
    let (mean, std) = crate::series::mean_std(values);
    if std == 0.0 {
        return Vec::new();
    }
    let centred: Vec<f64> = values.iter().map(|v| v - mean).collect();
    (0..=max_lag)
        .map(|lag| {
            let (mut sum, mut count) = (0.0, 0usize);
            for i in lag..n {
                let p = centred[i] * centred[i - lag];
                if !p.is_nan() {
                    sum += p;
                    count += 1;
                }
            }
            if lag == 0 {
                1.0
            } else if count < n / 4 {
                f64::NAN
            } else {
                sum / count as f64 / (std * std)
            }
        })
        .collect()
}

/// Calendar seasons of a series: a day and a week, in steps, where whole.
pub(crate) fn calendar_periods(train: &Series) -> Vec<usize> {
    let day = train.steps_per_day();
    day.into_iter().flat_map(|d| [d, 7 * d]).collect()
}

/// Per-step margins so that `point + margin` is the `quantile` of what was
/// observed, from the model's own errors on up to 400 origins of `values`.
pub(crate) fn residual_margins(
    model: &dyn Forecaster,
    values: &[f64],
    quantile: f64,
) -> Result<Vec<f64>, Error> {
    let mut rows = residual_quantiles(model, values, &[quantile], 400)?;
    Ok(rows.remove(0).into_iter().map(|m| m.max(0.0)).collect())
}

/// Per level and step, the level's quantile of the model's errors (actual
/// − point) on up to `most` origins of `values`.
pub(crate) fn residual_quantiles(
    model: &dyn Forecaster,
    values: &[f64],
    levels: &[f64],
    most: usize,
) -> Result<Vec<Vec<f64>>, Error> {
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
    let stride = origins.len().div_ceil(most.max(1));
    let mut errors = vec![Vec::new(); horizon];
    for &t in origins.iter().step_by(stride) {
        let p = model.predict(&values[t - window..t])?;
        for (h, e) in errors.iter_mut().enumerate() {
            e.push(values[t + h] - p.values[h]);
        }
    }
    // Each step's errors sorted once, read at every level.
    let by_step: Vec<Vec<f64>> = errors.into_iter().map(|e| quantiles_of(e, levels)).collect();
    Ok((0..levels.len())
        .map(|l| by_step.iter().map(|q| q[l]).collect())
        .collect())
}

/// Mean absolute error of the model over up to 400 origins in the newer
/// half of `values` (a model selection score on training data).
pub(crate) fn in_sample_error(model: &dyn Forecaster, values: &[f64]) -> Result<f64, Error> {
    let (window, horizon) = (model.window(), model.horizon());
    let from = window.max(values.len() / 2);
    let origins: Vec<usize> = (from..values.len().saturating_sub(horizon - 1))
        .filter(|&t| !values[t - 1].is_nan() && values[t..t + horizon].iter().all(|v| !v.is_nan()))
        .collect();
    if origins.is_empty() {
        return Err(Error::NotEnoughData("no origin to score on".into()));
    }
    let stride = origins.len().div_ceil(400);
    let (mut sum, mut n) = (0.0, 0usize);
    for &t in origins.iter().step_by(stride) {
        let p = model.predict(&values[t - window..t])?;
        for h in 0..horizon {
            sum += (values[t + h] - p.values[h]).abs();
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

/// The quantile of `values` at each of `levels` (nearest rank, `NaN`
/// skipped, 0 when nothing is left), sorting once.
pub(crate) fn quantiles_of(mut values: Vec<f64>, levels: &[f64]) -> Vec<f64> {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    levels
        .iter()
        .map(|q| {
            if values.is_empty() {
                return 0.0;
            }
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            values[i]
        })
        .collect()
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
        Series {
            seasonal: None,
            start: DateTime::from_timestamp(0, 0).unwrap(),
            step_seconds: 300,
            values,
        }
    }

    #[test]
    fn naive_repeats_the_last_value_and_rejects_a_missing_one() {
        let mut m = Naive::new(3, 0.9);
        m.fit(&series((0..50).map(|i| (i % 7) as f64).collect()), &mut |_| {})
            .unwrap();
        let p = m.predict(&[1.0, 2.0, 5.0]).unwrap();
        assert_eq!(p.values, [5.0; 3]);
        let upper = p.upper.unwrap();
        assert!(upper.iter().all(|u| *u >= 5.0));
        assert!(m.predict(&[1.0, f64::NAN]).is_err());
        assert!(m.predict(&[]).is_err());
    }

    #[test]
    fn seasonal_peak_plans_for_the_busiest_of_the_same_window_a_week_or_a_day_before() {
        // Hourly steps: a day is 24 steps. Each day ramps 0..23; day 3 has
        // a burst at hour 5.
        let hourly = |days: usize| -> Series {
            let mut values: Vec<f64> = (0..days * 24).map(|i| (i % 24) as f64).collect();
            if let Some(v) = values.get_mut(3 * 24 + 5) {
                *v = 100.0;
            }
            Series {
                seasonal: None,
                start: DateTime::UNIX_EPOCH,
                step_seconds: 3600,
                values,
            }
        };
        let short = hourly(5);
        let mut m = SeasonalPeak::new(4, None, 0.9);
        let fit = m.fit(&short, &mut |_| {}).unwrap();
        assert_eq!(
            fit.parameters,
            [("period".to_owned(), 24.0)],
            "under two weeks: a day"
        );
        // From the end of day 4, hour 1: the next 4 steps are hours 2..5 of
        // day 4; a day before, hours 2..5 of day 3 held the burst.
        let history = &short.values[..4 * 24 + 2];
        let p = m.predict(history).unwrap();
        assert_eq!(p.values, [100.0; 4]);
        assert!(p.upper.unwrap().iter().all(|u| *u >= 100.0));
        // Without the burst a day before: the highest of hours 2..5.
        let p = m.predict(&short.values[..2 * 24 + 2]).unwrap();
        assert_eq!(p.values, [5.0; 4]);
        // Two weeks of data or more: a week before.
        let mut m = SeasonalPeak::new(4, None, 0.9);
        let fit = m.fit(&hourly(15), &mut |_| {}).unwrap();
        assert_eq!(fit.parameters, [("period".to_owned(), 168.0)]);
        // Too little data: a clear error.
        let mut m = SeasonalPeak::new(4, None, 0.9);
        assert!(m.fit(&hourly(1), &mut |_| {}).is_err());
    }

    #[test]
    fn a_clear_season_is_detected_and_repeated() {
        let wave: Vec<f64> = (0..600)
            .map(|i| 50.0 + 20.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin())
            .collect();
        assert_eq!(detect_period(&wave, 200, &[]), Some(24));
        let noise: Vec<f64> = (0..600).map(|_| fastrand::f64()).collect();
        assert_eq!(detect_period(&noise, 200, &[]), None, "no season in noise");
        // A calendar season wins over a stronger short one when it is there.
        let both: Vec<f64> = (0..2000)
            .map(|i| {
                5.0 * ((i % 6) as f64 / 6.0 * std::f64::consts::TAU).sin()
                    + 3.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
            })
            .collect();
        assert_eq!(detect_period(&both, 700, &[288]), Some(288));
        assert_eq!(detect_period(&both, 700, &[]), Some(6));
        let mut m = SeasonalNaive::new(30, None, 0.9);
        m.fit(&series(wave.clone()), &mut |_| {}).unwrap();
        assert_eq!(m.period(), Some(24));
        let p = m.predict(&wave[..480]).unwrap();
        for h in 0..30 {
            assert!((p.values[h] - wave[480 + h]).abs() < 1e-9, "step {h}");
        }
    }
}
