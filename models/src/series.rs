//! Time series on a fixed step, with missing steps kept explicit.
//!
//! Recorded traces and live samples arrive at irregular times and with holes.
//! Every model works on a [`Series`]: one value per step from a known start,
//! where a step with no observation is `NaN` (never a shifted neighbour). Short
//! holes can be filled by linear interpolation with [`Series::fill_gaps`];
//! longer ones stay missing and the models skip or mask them.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use crate::Error;

/// A series on a regular grid: `values[i]` is the mean of what was observed in
/// `[start + i·step, start + (i+1)·step)`, or `NaN` where nothing was.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Start of the first step.
    pub start: DateTime<Utc>,
    /// Step length in seconds.
    pub step_seconds: u32,
    /// One value per step; `NaN` marks a missing step.
    pub values: Vec<f64>,
    /// The workload's coarse history, where known: seasonal models read
    /// what the load did a day and a week before ([`crate::seasonal`]).
    pub seasonal: Option<std::sync::Arc<pas_workloads::history::History>>,
}

/// What resampling and gap filling did to a series, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GapReport {
    /// Steps in the series.
    pub steps: usize,
    /// Steps with no observation before filling.
    pub missing: usize,
    /// Missing steps filled by interpolation.
    pub filled: usize,
    /// Holes longer than the fill limit, left missing.
    pub long_gaps: usize,
}

/// The demand series of a workload ([`pas_workloads::Steps`]); its
/// requests and saturation marks are left behind.
impl From<pas_workloads::Steps> for Series {
    fn from(s: pas_workloads::Steps) -> Series {
        Series {
            seasonal: None,
            start: s.start,
            step_seconds: s.step_seconds,
            values: s.values,
        }
    }
}

impl Series {
    /// Marks the steps where `mask` is true as missing (a lower bound that
    /// training must not learn as the value).
    pub fn mask(&mut self, mask: &[bool]) {
        for (v, m) in self.values.iter_mut().zip(mask) {
            if *m {
                *v = f64::NAN;
            }
        }
    }

    /// Puts timestamped points on a grid of `step_seconds`, aligned to whole
    /// multiples of the step since the Unix epoch. Points falling into the same
    /// step are averaged; steps with no point are `NaN`. Points must be sorted.
    pub fn resample(points: &[(DateTime<Utc>, f64)], step_seconds: u32) -> Result<Series, Error> {
        if step_seconds == 0 {
            return Err(Error::Input("the step must be at least one second".into()));
        }
        let step = i64::from(step_seconds);
        let Some(first) = points.first() else {
            return Err(Error::Input("the series has no points".into()));
        };
        if let Some(w) = points.windows(2).find(|w| w[1].0 < w[0].0) {
            return Err(Error::Input(format!(
                "points are not sorted by time: {} after {}",
                w[1].0, w[0].0
            )));
        }
        let origin = first.0.timestamp().div_euclid(step) * step;
        let last = points.last().map(|p| p.0.timestamp()).unwrap_or(origin);
        let len = usize::try_from((last - origin) / step + 1)
            .map_err(|_| Error::Input("the series spans too many steps".into()))?;
        let mut sum = vec![0.0; len];
        let mut count = vec![0u32; len];
        for &(at, value) in points {
            if !value.is_finite() {
                return Err(Error::Input(format!("the value at {at} is not a finite number")));
            }
            let i = usize::try_from((at.timestamp() - origin) / step).expect("sorted points");
            sum[i] += value;
            count[i] += 1;
        }
        let values = sum
            .iter()
            .zip(&count)
            .map(|(s, &c)| if c == 0 { f64::NAN } else { s / f64::from(c) })
            .collect();
        let start = DateTime::from_timestamp(origin, 0).expect("timestamp from a DateTime");
        Ok(Series {
            seasonal: None,
            start,
            step_seconds,
            values,
        })
    }

    /// Fills holes of at most `max_steps` missing steps by linear interpolation
    /// between the observed neighbours; longer holes, and holes at either end,
    /// stay missing.
    pub fn fill_gaps(&mut self, max_steps: usize) -> GapReport {
        let mut report = GapReport {
            steps: self.values.len(),
            ..GapReport::default()
        };
        let mut i = 0;
        while i < self.values.len() {
            if !self.values[i].is_nan() {
                i += 1;
                continue;
            }
            let begin = i;
            while i < self.values.len() && self.values[i].is_nan() {
                i += 1;
            }
            let len = i - begin;
            report.missing += len;
            if begin > 0 && i < self.values.len() && len <= max_steps {
                let (a, b) = (self.values[begin - 1], self.values[i]);
                for k in 0..len {
                    let w = (k + 1) as f64 / (len + 1) as f64;
                    self.values[begin + k] = a + (b - a) * w;
                }
                report.filled += len;
            } else {
                report.long_gaps += 1;
            }
        }
        report
    }

    /// Time at the start of step `i`.
    pub fn time_at(&self, i: usize) -> DateTime<Utc> {
        self.start + TimeDelta::seconds(i as i64 * i64::from(self.step_seconds))
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the series has no steps.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The steps `range`, as a series of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Series {
        Series {
            seasonal: self.seasonal.clone(),
            start: self.time_at(range.start),
            step_seconds: self.step_seconds,
            values: self.values[range].to_vec(),
        }
    }

    /// The series with the coarse history a forecaster would have kept of
    /// it ([`pas_workloads::history::History::of_series`], 5-minute slots or
    /// the nearest whole number of steps above): what seasonal models read
    /// when the series is a recorded trace (`pas models`, `pas experiment`).
    pub fn with_own_history(mut self) -> Series {
        let coarse = pas_workloads::history::coarse_step_for(self.step_seconds);
        self.seasonal = Some(std::sync::Arc::new(pas_workloads::history::History::of_series(
            self.start,
            self.step_seconds,
            &self.values,
            coarse,
        )));
        self
    }

    /// Steps per day, when a day is a whole number of steps.
    pub fn steps_per_day(&self) -> Option<usize> {
        (86_400 % self.step_seconds == 0).then(|| (86_400 / self.step_seconds) as usize)
    }
}

/// Mean and standard deviation of the observed values (`NaN` skipped).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let (mut n, mut sum, mut sq) = (0.0, 0.0, 0.0);
    for &v in values.iter().filter(|v| !v.is_nan()) {
        n += 1.0;
        sum += v;
        sq += v * v;
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    (mean, (sq / n - mean * mean).max(0.0).sqrt())
}

/// The last observed value in `values`, if any.
pub fn last_observed(values: &[f64]) -> Option<f64> {
    values.iter().rev().copied().find(|v| !v.is_nan())
}

/// A recorded CPU trace: `timestamp,cpu` CSV as in `shared/data/traces`.
#[derive(Debug, Clone)]
pub struct Trace {
    /// File stem, used as the trace's name in reports.
    pub name: String,
    /// Points in time order: when, and CPU utilisation in percent.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

impl Trace {
    /// Reads a trace file. The header must be `timestamp,cpu`; every row an
    /// RFC 3339 time and a finite number, in time order. Errors name the line.
    pub fn read(path: &Path) -> Result<Trace, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Trace::parse(&name, &text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
    }

    /// Parses trace text (see [`Trace::read`]).
    pub fn parse(name: &str, text: &str) -> Result<Trace, String> {
        let points = pas_schemas::trace::parse(text)?;
        Ok(Trace {
            name: name.to_owned(),
            points,
        })
    }

    /// The median spacing between rows in seconds (at least 1): the natural step.
    pub fn median_step_seconds(&self) -> u32 {
        let mut gaps: Vec<i64> = self
            .points
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).num_seconds())
            .collect();
        if gaps.is_empty() {
            return 1;
        }
        gaps.sort_unstable();
        u32::try_from(gaps[gaps.len() / 2].max(1)).unwrap_or(u32::MAX)
    }

    /// The trace on a grid of `step_seconds` with holes of up to `max_fill`
    /// steps interpolated.
    pub fn to_series(&self, step_seconds: u32, max_fill: usize) -> Result<(Series, GapReport), Error> {
        let mut series = Series::resample(&self.points, step_seconds)?;
        let report = series.fill_gaps(max_fill);
        Ok((series, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn resampling_averages_bins_and_keeps_holes() {
        // Steps of 300 s; a jittered point (605 s) lands in its own step, the
        // step from 900 s has nothing, and two points share the step at 1200 s.
        let points = [
            (at(0), 1.0),
            (at(305), 2.0),
            (at(605), 3.0),
            (at(1200), 4.0),
            (at(1250), 6.0),
        ];
        let s = Series::resample(&points, 300).unwrap();
        assert_eq!(s.start, at(0));
        assert_eq!(s.values.len(), 5);
        assert_eq!(&s.values[..3], &[1.0, 2.0, 3.0]);
        assert!(s.values[3].is_nan(), "an empty step is missing, not shifted");
        assert_eq!(s.values[4], 5.0);
        assert!(Series::resample(&[(at(10), 1.0), (at(5), 1.0)], 5).is_err());
        assert!(Series::resample(&[(at(10), f64::NAN)], 5).is_err());
    }

    #[test]
    fn only_short_inner_gaps_are_filled() {
        let nan = f64::NAN;
        let mut s = Series {
            seasonal: None,
            start: at(0),
            step_seconds: 5,
            values: vec![nan, 1.0, nan, 3.0, nan, nan, nan, 7.0, nan],
        };
        let report = s.fill_gaps(2);
        assert_eq!(
            report,
            GapReport {
                steps: 9,
                missing: 6,
                filled: 1,
                long_gaps: 3
            }
        );
        assert_eq!(s.values[2], 2.0);
        assert!(s.values[0].is_nan() && s.values[4].is_nan() && s.values[8].is_nan());
    }

    #[test]
    fn traces_parse_with_errors_that_name_the_line() {
        let t = Trace::parse(
            "t",
            "timestamp,cpu\n2014-02-14T14:30:00Z,1.5\n2014-02-14T14:35:00Z,2\n",
        )
        .unwrap();
        assert_eq!(t.points.len(), 2);
        assert_eq!(t.median_step_seconds(), 300);
        let e = Trace::parse("t", "timestamp,cpu\n2014-02-14T14:30:00Z,x\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = Trace::parse(
            "t",
            "timestamp,cpu\n2014-02-14T14:30:00Z,1\n2014-02-14T14:30:00Z,1\n",
        )
        .unwrap_err();
        assert!(e.contains("line 3") && e.contains("not after"), "{e}");
        assert!(Trace::parse("t", "time,value\n").is_err());
    }
}
