//! The one trait every model implements, and the registry of model kinds.

use std::fmt;
use std::str::FromStr;

use crate::holt_winters::HoltWinters;
use crate::lstm::{Lstm, LstmConfig};
use crate::naive::{Naive, SeasonalNaive, SeasonalPeak};
use crate::{Error, Series};

/// What a model predicts for the next `horizon` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Point forecast, one value per future step.
    pub values: Vec<f64>,
    /// An upper quantile per step (see [`Forecaster::quantile`]), where the
    /// model gives one.
    pub upper: Option<Vec<f64>>,
}

impl Prediction {
    /// As PAS publishes it: CPU is never negative, and the upper bound is
    /// never below the point.
    pub fn clamped(self) -> Prediction {
        let values: Vec<f64> = self.values.iter().map(|v| v.max(0.0)).collect();
        let upper = self
            .upper
            .map(|u| u.iter().zip(&values).map(|(u, v)| u.max(*v)).collect());
        Prediction { values, upper }
    }
}

/// One epoch of training, reported to progress callbacks.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Epoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Most epochs the run may take.
    pub max_epochs: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Validation loss, where the model holds data back.
    pub validation_loss: Option<f64>,
    /// Wall-clock seconds of the epoch's training pass (without validation).
    pub seconds: f64,
}

/// How a fit went.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FitReport {
    /// Epochs run (0 for models fitted in closed form or by search).
    pub epochs: usize,
    /// Loss before the first update, where the model trains by gradient.
    pub initial_loss: Option<f64>,
    /// Final (best) training-side loss.
    pub final_loss: Option<f64>,
    /// Best validation loss, where the model holds data back.
    pub validation_loss: Option<f64>,
    /// Training examples the model saw.
    pub examples: usize,
    /// True when the loss became NaN or infinite; the model is then unusable.
    pub diverged: bool,
    /// Fitted parameters worth reporting (period, smoothing constants, …).
    pub parameters: Vec<(String, f64)>,
    /// Mean seconds per epoch, where the model trains in epochs.
    pub seconds_per_epoch: Option<f64>,
}

/// A forecasting model: fitted once on a series, then asked for the next
/// `horizon` steps from the last `window` steps of any history.
pub trait Forecaster: Send {
    /// Which model this is.
    fn kind(&self) -> ModelKind;
    /// Steps of history [`Forecaster::predict`] looks at.
    fn window(&self) -> usize;
    /// Steps predicted.
    fn horizon(&self) -> usize;
    /// The quantile the upper forecast estimates.
    fn quantile(&self) -> f64;
    /// Fits the model on `train` (missing steps are `NaN`), reporting each
    /// epoch to `progress` where the model trains in epochs.
    fn fit(&mut self, train: &Series, progress: &mut dyn FnMut(&Epoch)) -> Result<FitReport, Error>;
    /// Predicts the next `horizon` steps after `history`, of which the model
    /// reads the last [`Forecaster::window`] steps. Missing steps are `NaN`;
    /// the last step must be observed.
    fn predict(&self, history: &[f64]) -> Result<Prediction, Error>;
    /// Predicts for many histories at once; models that batch override it.
    fn predict_many(&self, histories: &[&[f64]]) -> Result<Vec<Prediction>, Error> {
        histories.iter().map(|h| self.predict(h)).collect()
    }
    /// Whether the model reads the seasonal context ([`crate::seasonal`]).
    fn seasonal(&self) -> bool {
        false
    }
    /// [`Forecaster::predict_many`] with each history's seasonal lags
    /// ([`crate::seasonal::lags`], for the model's horizon; missing or
    /// empty where unknown). Models without seasonal inputs ignore them.
    fn predict_seasonal(&self, histories: &[&[f64]], _lags: &[Vec<f64>]) -> Result<Vec<Prediction>, Error> {
        self.predict_many(histories)
    }
}

/// The models PAS knows, by the names the CLI and manifests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKind {
    /// Last observed value.
    Naive,
    /// The value one season ago.
    SeasonalNaive,
    /// The highest value of the same window one week (or a day) ago.
    SeasonalPeak,
    /// Additive Holt-Winters, damped trend.
    HoltWinters,
    /// The older system's encoder-decoder LSTM, as it was.
    LstmSeed,
    /// PAS's own LSTM.
    Lstm,
    /// PAS's LSTM trained across many series, each window scaled on its
    /// own ([`crate::lstm::Lstm::fit_many`]): it forecasts series it never
    /// saw. Not in [`ModelKind::ALL`]: it is trained on other series, not
    /// on the one it is scored on, so [`build`] cannot make one.
    Global,
}

impl ModelKind {
    /// Every model, baselines first.
    pub const ALL: [ModelKind; 6] = [
        ModelKind::Naive,
        ModelKind::SeasonalNaive,
        ModelKind::SeasonalPeak,
        ModelKind::HoltWinters,
        ModelKind::LstmSeed,
        ModelKind::Lstm,
    ];

    /// The model's name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Naive => "naive",
            ModelKind::SeasonalNaive => "seasonal-naive",
            ModelKind::SeasonalPeak => "seasonal-peak",
            ModelKind::HoltWinters => "holt-winters",
            ModelKind::LstmSeed => "lstm-seed",
            ModelKind::Lstm => "lstm",
            ModelKind::Global => "global",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let known = ModelKind::ALL.into_iter().chain([ModelKind::Global]);
        known.clone().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = known.map(|k| k.name()).collect();
            Error::Input(format!("unknown model `{s}`; known: {}", names.join(", ")))
        })
    }
}

/// Settings shared by every model when building one by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// Steps to predict.
    pub horizon: usize,
    /// Season length in steps; `None` detects it from the data.
    pub period: Option<usize>,
    /// The upper quantile to estimate.
    pub quantile: f64,
    /// Settings of the `lstm` model (its horizon and quantile are overridden by the above).
    pub lstm: LstmConfig,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            horizon: 10,
            period: None,
            quantile: 0.9,
            lstm: LstmConfig::default(),
        }
    }
}

/// Builds an unfitted model of `kind`.
pub fn build(kind: ModelKind, options: &ModelOptions) -> Result<Box<dyn Forecaster>, Error> {
    if options.horizon == 0 {
        return Err(Error::Input("the horizon must be at least one step".into()));
    }
    if !(0.5..1.0).contains(&options.quantile) {
        return Err(Error::Input(format!(
            "the upper quantile must be in [0.5, 1), not {}",
            options.quantile
        )));
    }
    Ok(match kind {
        ModelKind::Naive => Box::new(Naive::new(options.horizon, options.quantile)),
        ModelKind::SeasonalNaive => Box::new(SeasonalNaive::new(
            options.horizon,
            options.period,
            options.quantile,
        )),
        ModelKind::SeasonalPeak => Box::new(SeasonalPeak::new(
            options.horizon,
            options.period,
            options.quantile,
        )),
        ModelKind::HoltWinters => Box::new(HoltWinters::new(
            options.horizon,
            options.period,
            options.quantile,
        )),
        ModelKind::LstmSeed => {
            if options.horizon != 10 {
                return Err(Error::Input(format!(
                    "lstm-seed predicts exactly 10 steps, as the older system did; the horizon is {}",
                    options.horizon
                )));
            }
            Box::new(Lstm::new(LstmConfig::seed())?)
        }
        ModelKind::Lstm => Box::new(Lstm::new(LstmConfig {
            horizon: options.horizon,
            quantile: options.quantile,
            ..options.lstm.clone()
        })?),
        ModelKind::Global => {
            return Err(Error::Input(
                "the global model is trained across series, not built for one: see Lstm::fit_many".into(),
            ));
        }
    })
}

/// Checks a history handed to `predict`: long enough, last step observed.
pub(crate) fn check_history(history: &[f64], window: usize) -> Result<&[f64], Error> {
    if history.len() < window.max(1) {
        return Err(Error::Input(format!(
            "the history has {} steps, the model needs {window}",
            history.len()
        )));
    }
    let tail = &history[history.len() - window.max(1)..];
    if tail.last().is_none_or(|v| v.is_nan()) {
        return Err(Error::Input("the last step of the history is missing".into()));
    }
    Ok(tail)
}
