//! LSTM forecasters on libtorch: PAS's own model and the older system's
//! network as a preset.
//!
//! PAS's `lstm` reads a window of the series, standardised per series, with a
//! second input that marks which steps were observed (missing steps carry the
//! last observed value and a 0 in the mask, so a hole is visible to the
//! network rather than hidden). One LSTM encodes the window; a linear head
//! predicts the change from the last observed value for every future step
//! (so an untrained network starts at the naive forecast), and a second head
//! predicts a non-negative margin above it for the upper quantile. The point
//! head is trained on absolute error, the margin on the pinball loss,
//! with a chronological validation split, early stopping and the best weights
//! kept.
//!
//! `lstm-seed` is the older system's encoder-decoder: 10 steps in, 10 out,
//! min-max scaled, an encoder LSTM of 180 units whose last state is repeated
//! into a decoder LSTM of 180 units, a dense layer of 100 (ReLU) and a linear
//! output per step; Adam at 0.011, 24 epochs, batches of 16, mean squared
//! error, no validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use pas_schemas::Normalisation;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Reduction, Tensor};

use crate::forecaster::{Epoch, FitReport, Forecaster, ModelKind, Prediction, check_history};
use crate::series::mean_std;
use crate::{Error, Series};

/// Network shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// PAS's model: LSTM encoder, direct multi-step heads for the change from
    /// the last value and an upper-quantile margin.
    Direct,
    /// The older system's encoder-decoder.
    EncoderDecoder,
}

/// How the training loss is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Absolute error on the point forecast plus the pinball loss on the upper one.
    AbsolutePinball,
    /// Mean squared error on the point forecast (no upper forecast).
    SquaredError,
}

/// How values are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// Mean 0, standard deviation 1 over the training data of the series.
    Standard,
    /// Minimum 0, maximum 1 over the training data.
    MinMax,
    /// Each window on its own: divided by the larger of its mean absolute
    /// value and its standard deviation ([`window_scale`]), targets in the
    /// same unit. Nothing is fitted to one series, so one network serves
    /// workloads of any size: the global model's scaling.
    Window,
}

/// The scale of one window under [`Scaling::Window`]: `(0, s)` with `s` the
/// larger of the observed values' mean absolute value and their standard
/// deviation (at least `1e-3`). The direct network reads changes from the
/// last value, so only the unit matters, not an offset.
pub fn window_scale(window: &[f64]) -> (f64, f64) {
    let (mut n, mut sum, mut abs) = (0usize, 0.0, 0.0);
    for v in window.iter().filter(|v| !v.is_nan()) {
        n += 1;
        sum += v;
        abs += v.abs();
    }
    if n == 0 {
        return (0.0, 1.0);
    }
    let mean = sum / n as f64;
    let var = window
        .iter()
        .filter(|v| !v.is_nan())
        .map(|v| (v - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    (0.0, (abs / n as f64).max(var.sqrt()).max(1e-3))
}

/// Settings of an LSTM model. The defaults are PAS's `lstm`;
/// [`LstmConfig::seed`] is the older system's network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LstmConfig {
    /// Network shape.
    pub architecture: Architecture,
    /// Steps of history the network reads.
    pub window: usize,
    /// Steps it predicts.
    pub horizon: usize,
    /// Units per LSTM layer.
    pub hidden: usize,
    /// Stacked LSTM layers (in the encoder).
    pub layers: usize,
    /// Units of the dense layer before the output (encoder-decoder only).
    pub dense: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Most epochs.
    pub max_epochs: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Stop after this many epochs without a better validation loss; 0 never stops early.
    pub patience: usize,
    /// Share of the (newest) training examples held back for validation.
    pub validation_fraction: f64,
    /// Training loss.
    pub loss: Loss,
    /// Value scaling.
    pub scaling: Scaling,
    /// The quantile of the upper forecast.
    pub quantile: f64,
    /// Clip the gradient norm to this; 0 disables clipping.
    pub clip_norm: f64,
    /// Seed for weights and shuffling.
    pub seed: u64,
    /// Most training examples per epoch (a random subset when there are more); 0 uses all.
    pub max_examples: usize,
    /// The direct network's output layer also reads the seasonal context
    /// ([`crate::seasonal`]): what the load did a day and a week before.
    /// Unset in a settings file: on. (A stored manifest without it, from
    /// before it existed, has none: the forecaster reads it so.)
    pub seasonal: bool,
}

impl Default for LstmConfig {
    fn default() -> Self {
        LstmConfig {
            architecture: Architecture::Direct,
            window: 48,
            horizon: 10,
            hidden: 64,
            layers: 1,
            dense: 0,
            learning_rate: 0.003,
            max_epochs: 40,
            batch_size: 64,
            patience: 6,
            validation_fraction: 0.15,
            loss: Loss::AbsolutePinball,
            scaling: Scaling::Standard,
            quantile: 0.9,
            clip_norm: 1.0,
            seed: 42,
            max_examples: 8_000,
            seasonal: true,
        }
    }
}

impl LstmConfig {
    /// The older system's network and training, unchanged.
    pub fn seed() -> LstmConfig {
        LstmConfig {
            architecture: Architecture::EncoderDecoder,
            window: 10,
            horizon: 10,
            hidden: 180,
            layers: 1,
            dense: 100,
            learning_rate: 0.011,
            max_epochs: 24,
            batch_size: 16,
            patience: 0,
            validation_fraction: 0.0,
            loss: Loss::SquaredError,
            scaling: Scaling::MinMax,
            quantile: 0.9,
            clip_norm: 0.0,
            seed: 42,
            max_examples: 0,
            seasonal: false,
        }
    }

    /// The settings as a flat map, for a model manifest.
    pub fn hyper_parameters(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The most units an LSTM layer or the dense layer may have.
    pub const MAX_UNITS: usize = 1024;
    /// The most stacked LSTM layers.
    pub const MAX_LAYERS: usize = 8;

    /// How many weights the network has: what its weights file must hold,
    /// computed without building it.
    pub fn parameter_count(&self) -> usize {
        // One LSTM layer: input and recurrent weights and two biases per gate.
        let lstm = |input: usize, hidden: usize| 4 * hidden * (input + hidden + 2);
        let stack = |input: usize, hidden: usize, layers: usize| {
            lstm(input, hidden) + layers.saturating_sub(1) * lstm(hidden, hidden)
        };
        let linear = |input: usize, output: usize| output * (input + 1);
        let h = self.hidden;
        match self.architecture {
            Architecture::Direct => {
                stack(2, h, self.layers) + linear(h + self.seasonal_features(), 2 * self.horizon)
            }
            Architecture::EncoderDecoder => {
                stack(1, h, self.layers) + lstm(h, h) + linear(h, self.dense) + linear(self.dense, 1)
            }
        }
    }

    /// Seasonal inputs of the output layer: none, or
    /// [`crate::seasonal::features`]' count.
    pub fn seasonal_features(&self) -> usize {
        if self.seasonal && self.architecture == Architecture::Direct {
            crate::seasonal::SEASONS.len() * crate::seasonal::features_per_season(self.horizon)
        } else {
            0
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Input(format!("lstm: {what}")));
        if self.window == 0
            || self.horizon == 0
            || self.hidden == 0
            || self.layers == 0
            || self.batch_size == 0
        {
            return bad("window, horizon, hidden, layers and batch_size must be at least 1");
        }
        if self.hidden > Self::MAX_UNITS || self.dense > Self::MAX_UNITS || self.layers > Self::MAX_LAYERS {
            return bad(&format!(
                "hidden and dense have at most {} units and layers at most {}",
                Self::MAX_UNITS,
                Self::MAX_LAYERS
            ));
        }
        if self.window > pas_schemas::MAX_STEPS || self.horizon > pas_schemas::MAX_STEPS {
            return bad(&format!(
                "window and horizon are at most {} steps",
                pas_schemas::MAX_STEPS
            ));
        }
        if self.architecture == Architecture::EncoderDecoder && self.dense == 0 {
            return bad("the encoder-decoder needs a dense layer");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("the learning rate must be a positive number");
        }
        if !(0.0..0.5).contains(&self.validation_fraction) {
            return bad("validation_fraction must be in [0, 0.5)");
        }
        if !(0.5..1.0).contains(&self.quantile) {
            return bad("the quantile must be in [0.5, 1)");
        }
        Ok(())
    }
}

enum Net {
    Direct {
        lstm: nn::LSTM,
        head: nn::Linear,
    },
    EncoderDecoder {
        encoder: nn::LSTM,
        decoder: nn::LSTM,
        dense: nn::Linear,
        out: nn::Linear,
    },
}

/// The most bytes a weights file may hold besides the weights (its header).
const MAX_SAFETENSORS_HEADER: usize = 64 * 1024;

/// An LSTM forecaster (either architecture).
pub struct Lstm {
    config: LstmConfig,
    vs: nn::VarStore,
    net: Net,
    scale: Option<(f64, f64)>,
    /// Set from outside to end a `fit` at the next batch.
    stop: Option<Arc<AtomicBool>>,
    /// Trained elsewhere (the global model in a backtest): `fit` keeps the
    /// weights, and the model reports itself as [`ModelKind::Global`].
    frozen: bool,
}

impl std::fmt::Debug for Lstm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lstm")
            .field("config", &self.config)
            .field("scale", &self.scale)
            .finish_non_exhaustive()
    }
}

/// Training examples as tensors: inputs `[n, window, features]`, targets
/// `[n, horizon]`, the last observed input `[n, 1]`, all scaled, and the
/// seasonal inputs of the output layer `[n, seasonal features]` where the
/// model reads them.
struct Examples {
    x: Tensor,
    y: Tensor,
    last: Tensor,
    seasonal: Option<Tensor>,
}

impl Examples {
    fn len(&self) -> i64 {
        self.y.size()[0]
    }
    fn select(&self, idx: &Tensor) -> Examples {
        Examples {
            x: self.x.index_select(0, idx),
            y: self.y.index_select(0, idx),
            last: self.last.index_select(0, idx),
            seasonal: self.seasonal.as_ref().map(|s| s.index_select(0, idx)),
        }
    }
}

impl Lstm {
    /// Ends a `fit` in progress at its next batch, with [`Error::Stopped`],
    /// once `flag` is set (a stage shutting down does not wait for minutes
    /// of training).
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// A fresh network with weights drawn from the configured seed.
    pub fn new(config: LstmConfig) -> Result<Lstm, Error> {
        config.check()?;
        // libtorch's generator is global: seed and draw under one lock.
        let _generator = crate::runtime::generator_lock();
        tch::manual_seed(config.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let hidden = config.hidden as i64;
        let rnn = |layers: usize| nn::RNNConfig {
            num_layers: layers as i64,
            batch_first: true,
            ..Default::default()
        };
        let net = match config.architecture {
            Architecture::Direct => Net::Direct {
                lstm: nn::lstm(&root / "lstm", 2, hidden, rnn(config.layers)),
                head: nn::linear(
                    &root / "head",
                    hidden + config.seasonal_features() as i64,
                    2 * config.horizon as i64,
                    Default::default(),
                ),
            },
            Architecture::EncoderDecoder => Net::EncoderDecoder {
                encoder: nn::lstm(&root / "encoder", 1, hidden, rnn(config.layers)),
                decoder: nn::lstm(&root / "decoder", hidden, hidden, rnn(1)),
                dense: nn::linear(&root / "dense", hidden, config.dense as i64, Default::default()),
                out: nn::linear(&root / "out", config.dense as i64, 1, Default::default()),
            },
        };
        if let Net::Direct { head, .. } = &net {
            // Start at the naive forecast: no change, a small margin.
            tch::no_grad(|| {
                let _ = head.ws.shallow_clone().fill_(0.0);
                if let Some(bs) = &head.bs {
                    let _ = bs.shallow_clone().fill_(0.0);
                }
            });
        }
        Ok(Lstm {
            config,
            vs,
            net,
            scale: None,
            stop: None,
            frozen: false,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    /// The scaling fitted on the training data, as a manifest records it.
    pub fn normalisation(&self) -> Normalisation {
        match (self.config.scaling, self.scale) {
            (_, None) => Normalisation::None,
            (Scaling::Standard, Some((mean, std))) => Normalisation::Standard { mean, std },
            (Scaling::MinMax, Some((min, range))) => Normalisation::MinMax {
                min,
                max: min + range,
            },
            (Scaling::Window, Some(_)) => Normalisation::Window,
        }
    }

    /// The weights in safetensors format.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: "a temporary directory".into(),
            source: e,
        })?;
        let path = dir.path().join("weights.safetensors");
        self.vs.save(&path)?;
        std::fs::read(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    }

    /// A model from stored weights and the normalisation its manifest records.
    pub fn from_safetensors(
        config: LstmConfig,
        normalisation: &Normalisation,
        weights: &[u8],
    ) -> Result<Lstm, Error> {
        // Check the sizes before anything is allocated: a manifest's
        // hyper-parameters are input, and a network of `hidden = 20000`
        // would take gigabytes before its 210 bytes of weights were found short.
        config.check()?;
        let expected = config.parameter_count() * std::mem::size_of::<f32>();
        if weights.len() < expected || weights.len() > expected + MAX_SAFETENSORS_HEADER {
            return Err(Error::Weights(format!(
                "{} bytes of weights, but the hyper-parameters make a network of {} parameters ({expected} bytes and a header)",
                weights.len(),
                config.parameter_count()
            )));
        }
        let mut model = Lstm::new(config)?;
        model.scale = Some(match (model.config.scaling, normalisation) {
            (Scaling::Standard, Normalisation::Standard { mean, std }) => (*mean, *std),
            (Scaling::MinMax, Normalisation::MinMax { min, max }) => (*min, max - min),
            (Scaling::Window, Normalisation::Window) => (0.0, 1.0),
            (_, other) => {
                return Err(Error::Weights(format!(
                    "normalisation {other:?} does not match the model's scaling"
                )));
            }
        });
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: "a temporary directory".into(),
            source: e,
        })?;
        let path = dir.path().join("weights.safetensors");
        std::fs::write(&path, weights).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        model.vs.load(&path).map_err(|e| Error::Weights(e.to_string()))?;
        Ok(model)
    }

    /// The weights, flattened, in name order (for tests and digests).
    pub fn weights(&self) -> Vec<(String, Vec<f32>)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter()
            .map(|(name, t)| {
                (
                    name,
                    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The scaling `(a, b)` (values as `(x - a) / b`) of a forecast from
    /// `window`: the one fitted on the training data, or under
    /// [`Scaling::Window`] the window's own.
    fn scale_of(&self, window: &[f64]) -> (f64, f64) {
        match self.config.scaling {
            Scaling::Window => window_scale(window),
            _ => self.scale.unwrap_or((0.0, 1.0)),
        }
    }

    fn features(&self) -> i64 {
        match self.config.architecture {
            Architecture::Direct => 2,
            Architecture::EncoderDecoder => 1,
        }
    }

    /// Builds examples at the given origins (index of the first target),
    /// with the seasonal context of `series`' history where it has one.
    fn examples(&self, series: &Series, origins: &[usize]) -> Examples {
        let (w, h) = (self.config.window, self.config.horizon);
        let values = &series.values;
        let mut x = Vec::with_capacity(origins.len() * w * self.features() as usize);
        let mut y = Vec::with_capacity(origins.len() * h);
        let mut last = Vec::with_capacity(origins.len());
        let mut seasonal = Vec::new();
        for &t in origins {
            let window = &values[t - w..t];
            let scale @ (a, b) = self.scale_of(window);
            last.push(encode_window(self.config.architecture, scale, window, &mut x) as f32);
            y.extend(values[t..t + h].iter().map(|v| ((v - a) / b) as f32));
            if self.config.seasonal_features() > 0 {
                let lags = series.seasonal.as_deref().map(|history| {
                    crate::seasonal::lags(history, series.time_at(t - 1), series.step_seconds, h)
                });
                crate::seasonal::features(lags.as_deref().unwrap_or(&[]), scale, h, &mut seasonal);
            }
        }
        let n = origins.len() as i64;
        Examples {
            x: Tensor::from_slice(&x).view([n, w as i64, self.features()]),
            y: Tensor::from_slice(&y).view([n, h as i64]),
            last: Tensor::from_slice(&last).view([n, 1]),
            seasonal: (self.config.seasonal_features() > 0)
                .then(|| Tensor::from_slice(&seasonal).view([n, self.config.seasonal_features() as i64])),
        }
    }

    /// Point and (for the direct model) upper forecasts, scaled.
    fn forward(&self, x: &Tensor, last: &Tensor, seasonal: Option<&Tensor>) -> (Tensor, Option<Tensor>) {
        let h = self.config.horizon as i64;
        match &self.net {
            Net::Direct { lstm, head } => {
                let (out, _) = lstm.seq(x);
                let state = out.select(1, -1);
                let state = match seasonal {
                    Some(s) => Tensor::cat(&[state, s.shallow_clone()], 1),
                    None => state,
                };
                let heads = head.forward(&state);
                let point = heads.narrow(1, 0, h) + last;
                let upper = &point + heads.narrow(1, h, h).softplus();
                (point, Some(upper))
            }
            Net::EncoderDecoder {
                encoder,
                decoder,
                dense,
                out,
            } => {
                let (enc, _) = encoder.seq(x);
                let state = enc.select(1, -1).unsqueeze(1).repeat([1, h, 1]);
                let (dec, _) = decoder.seq(&state);
                let y = out.forward(&dense.forward(&dec).relu()).squeeze_dim(-1);
                (y, None)
            }
        }
    }

    fn loss(&self, batch: &Examples) -> Tensor {
        let (point, upper) = self.forward(&batch.x, &batch.last, batch.seasonal.as_ref());
        match (self.config.loss, upper) {
            (Loss::AbsolutePinball, Some(upper)) => {
                let q = self.config.quantile;
                let diff = &batch.y - upper;
                let pinball = (&diff * q).maximum(&(&diff * (q - 1.0))).mean(Kind::Float);
                (point - &batch.y).abs().mean(Kind::Float) + pinball
            }
            (Loss::AbsolutePinball, None) => (point - &batch.y).abs().mean(Kind::Float),
            (Loss::SquaredError, _) => point.mse_loss(&batch.y, Reduction::Mean),
        }
    }

    fn mean_loss(&self, examples: &Examples) -> f64 {
        tch::no_grad(|| {
            let n = examples.len();
            let chunk = 4096;
            let mut total = 0.0;
            let mut start = 0;
            while start < n {
                let len = chunk.min(n - start);
                let idx = Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu));
                total += self.loss(&examples.select(&idx)).double_value(&[]) * len as f64;
                start += len;
            }
            total / n.max(1) as f64
        })
    }

    /// Fits the scaling on `train` and builds the training and validation
    /// examples exactly as [`Forecaster::fit`] uses them.
    fn prepare(&mut self, train: &Series) -> Result<(Examples, Option<Examples>), Error> {
        let c = self.config.clone();
        let values = &train.values;
        self.scale = Some(match c.scaling {
            Scaling::Standard => {
                let (mean, std) = mean_std(values);
                (mean, std.max(1e-3))
            }
            Scaling::MinMax => {
                let observed = values.iter().copied().filter(|v| !v.is_nan());
                let min = observed.clone().fold(f64::INFINITY, f64::min);
                let max = observed.fold(f64::NEG_INFINITY, f64::max);
                (min, (max - min).max(1e-3))
            }
            // Nothing to fit: each window brings its own.
            Scaling::Window => (0.0, 1.0),
        });
        let (train_origins, val_origins) = self.split_origins(values);
        if train_origins.len() < c.batch_size.min(32)
            || (c.validation_fraction > 0.0 && val_origins.is_empty())
        {
            return Err(Error::NotEnoughData(format!(
                "{} usable windows of {} + {} observed steps; the LSTM needs more",
                train_origins.len() + val_origins.len(),
                c.window,
                c.horizon
            )));
        }
        let train_set = self.examples(train, &train_origins);
        let val_set = (!val_origins.is_empty()).then(|| self.examples(train, &val_origins));
        Ok((train_set, val_set))
    }

    /// A series' training and validation origins: the newest
    /// `validation_fraction` validate, and the training origins whose
    /// targets reach into theirs are dropped.
    fn split_origins(&self, values: &[f64]) -> (Vec<usize>, Vec<usize>) {
        let c = &self.config;
        let origins = usable_origins(values, c.window, c.horizon);
        let n_val = (origins.len() as f64 * c.validation_fraction) as usize;
        let n_train = origins.len() - n_val;
        let first_validation = origins
            .get(n_train)
            .copied()
            .filter(|_| n_val > 0)
            .unwrap_or(usize::MAX);
        let train: Vec<usize> = origins[..n_train]
            .iter()
            .copied()
            .filter(|&t| t + c.horizon <= first_validation)
            .collect();
        (train, origins[n_train..].to_vec())
    }

    /// The global model's examples: from each series its own split
    /// ([`Lstm::split_origins`]), each window scaled on its own, at most
    /// `pool` training examples in all, spread evenly over the series (a
    /// random subset of each series' origins when it has more than its
    /// share; the validation examples in the same proportion).
    fn prepare_many(
        &mut self,
        series: &[Series],
        pool: usize,
    ) -> Result<(Examples, Option<Examples>), Error> {
        if self.config.scaling != Scaling::Window {
            return Err(Error::Input(
                "a model trained across series scales each window on its own (scaling = \"window\")".into(),
            ));
        }
        self.scale = Some((0.0, 1.0));
        let mut rng = fastrand::Rng::with_seed(self.config.seed);
        let share = (pool / series.len().max(1)).max(1);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for s in series {
            let (mut t, mut v) = self.split_origins(&s.values);
            if t.len() > share {
                let keep = v.len() * share / t.len().max(1);
                rng.shuffle(&mut t);
                t.truncate(share);
                t.sort_unstable();
                rng.shuffle(&mut v);
                v.truncate(keep.max(1));
                v.sort_unstable();
            }
            if !t.is_empty() {
                train.push(self.examples(s, &t));
            }
            if !v.is_empty() {
                val.push(self.examples(s, &v));
            }
        }
        let joined = |sets: Vec<Examples>| -> Option<Examples> {
            (!sets.is_empty()).then(|| Examples {
                x: Tensor::cat(&sets.iter().map(|e| &e.x).collect::<Vec<_>>(), 0),
                y: Tensor::cat(&sets.iter().map(|e| &e.y).collect::<Vec<_>>(), 0),
                last: Tensor::cat(&sets.iter().map(|e| &e.last).collect::<Vec<_>>(), 0),
                seasonal: sets
                    .iter()
                    .map(|e| e.seasonal.as_ref())
                    .collect::<Option<Vec<_>>>()
                    .map(|s| Tensor::cat(&s, 0)),
            })
        };
        let train_set = joined(train).filter(|e| e.len() >= self.config.batch_size.min(32) as i64);
        let Some(train_set) = train_set else {
            return Err(Error::NotEnoughData(format!(
                "{} series have too few usable windows of {} + {} observed steps between them",
                series.len(),
                self.config.window,
                self.config.horizon
            )));
        };
        Ok((train_set, joined(val)))
    }

    /// Fits one network across `series` (the global model): each window
    /// scaled on its own, at most `pool` training examples in all, spread
    /// evenly over the series, then trained as [`Forecaster::fit`] trains.
    /// Needs [`Scaling::Window`].
    pub fn fit_many(
        &mut self,
        series: &[Series],
        pool: usize,
        progress: &mut dyn FnMut(&Epoch),
    ) -> Result<FitReport, Error> {
        let (train_set, val_set) = self.prepare_many(series, pool)?;
        self.train_on(train_set, val_set, progress)
    }

    /// A copy of this (fitted) model that keeps its weights when asked to
    /// fit and calls itself [`ModelKind::Global`]: the global model in a
    /// backtest beside models fitted on the series itself.
    pub fn frozen(&self) -> Result<Lstm, Error> {
        let mut copy = self.try_clone()?;
        copy.frozen = true;
        Ok(copy)
    }

    /// A copy with the same settings, scaling and weights: where a
    /// workload's own model is fine-tuned from the global one.
    pub fn try_clone(&self) -> Result<Lstm, Error> {
        let mut copy = Lstm::new(self.config.clone())?;
        copy.vs.copy(&self.vs)?;
        copy.scale = self.scale;
        Ok(copy)
    }

    /// Changes the training settings that do not change the network's
    /// shape or scaling (epochs, examples, learning rate, patience, seed):
    /// for fine-tuning a copy of the global model on one workload.
    pub fn retune(&mut self, max_epochs: usize, max_examples: usize, learning_rate: f64) {
        self.config.max_epochs = max_epochs;
        self.config.max_examples = max_examples;
        self.config.learning_rate = learning_rate;
    }

    /// Writes the training examples [`Forecaster::fit`] would use to an
    /// `.npz` file (`x`: inputs `[n, window, features]`, `y`: targets
    /// `[n, horizon]`, `last`: last input value `[n, 1]`, all scaled, and
    /// where the model reads them `seasonal`: the output layer's seasonal
    /// inputs `[n, seasonal features]`), so another implementation can
    /// train on exactly the same data.
    pub fn export_training_set(&mut self, train: &Series, path: &std::path::Path) -> Result<usize, Error> {
        let (set, _) = self.prepare(train)?;
        let mut arrays = vec![("x", &set.x), ("y", &set.y), ("last", &set.last)];
        if let Some(seasonal) = &set.seasonal {
            arrays.push(("seasonal", seasonal));
        }
        Tensor::write_npz(&arrays, path)?;
        Ok(set.len() as usize)
    }

    fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach().copy()))
            .collect()
    }

    fn restore(&mut self, saved: &[(String, Tensor)]) {
        let vars = self.vs.variables();
        tch::no_grad(|| {
            for (name, value) in saved {
                if let Some(var) = vars.get(name) {
                    var.shallow_clone().copy_(value);
                }
            }
        });
    }
}

/// Scaled inputs for one window (see [`Lstm::encode_window`]), with the
/// scaling `(a, b)` meaning `(x - a) / b`. Shared with [`crate::batch`], so
/// batched inference encodes exactly as training did.
pub(crate) fn encode_window(
    architecture: Architecture,
    (a, b): (f64, f64),
    window: &[f64],
    out: &mut Vec<f32>,
) -> f64 {
    let scale = |v: f64| (v - a) / b;
    let first = window.iter().copied().find(|v| !v.is_nan()).unwrap_or(0.0);
    let last = scale(
        window
            .iter()
            .rev()
            .copied()
            .find(|v| !v.is_nan())
            .unwrap_or(first),
    );
    let mut carried = first;
    for &v in window {
        let observed = !v.is_nan();
        if observed {
            carried = v;
        }
        match architecture {
            // Relative to the last value: the shape of the window, not its
            // level, so a level never seen in training does not bias it.
            Architecture::Direct => {
                out.push((scale(carried) - last) as f32);
                out.push(if observed { 1.0 } else { 0.0 });
            }
            Architecture::EncoderDecoder => out.push(scale(carried) as f32),
        }
    }
    last
}

/// Origins (first target step) where the last input step and every target
/// are observed.
pub(crate) fn usable_origins(values: &[f64], window: usize, horizon: usize) -> Vec<usize> {
    (window..values.len().saturating_sub(horizon - 1))
        .filter(|&t| !values[t - 1].is_nan() && values[t..t + horizon].iter().all(|v| !v.is_nan()))
        .collect()
}

impl Forecaster for Lstm {
    fn kind(&self) -> ModelKind {
        if self.frozen {
            return ModelKind::Global;
        }
        match self.config.architecture {
            Architecture::Direct => ModelKind::Lstm,
            Architecture::EncoderDecoder => ModelKind::LstmSeed,
        }
    }
    fn window(&self) -> usize {
        self.config.window
    }
    fn horizon(&self) -> usize {
        self.config.horizon
    }
    fn quantile(&self) -> f64 {
        self.config.quantile
    }

    fn fit(&mut self, train: &Series, progress: &mut dyn FnMut(&Epoch)) -> Result<FitReport, Error> {
        if self.frozen {
            return Ok(FitReport::default());
        }
        let (train_set, val_set) = self.prepare(train)?;
        self.train_on(train_set, val_set, progress)
    }

    fn predict(&self, history: &[f64]) -> Result<Prediction, Error> {
        Ok(self.predict_many(&[history])?.remove(0))
    }

    fn predict_many(&self, histories: &[&[f64]]) -> Result<Vec<Prediction>, Error> {
        self.predict_seasonal(histories, &[])
    }

    fn seasonal(&self) -> bool {
        self.config.seasonal_features() > 0
    }

    fn predict_seasonal(&self, histories: &[&[f64]], lags: &[Vec<f64>]) -> Result<Vec<Prediction>, Error> {
        if self.scale.is_none() {
            return Err(Error::NotFitted);
        }
        let (w, h) = (self.config.window, self.config.horizon);
        let mut x = Vec::with_capacity(histories.len() * w * self.features() as usize);
        let mut last = Vec::with_capacity(histories.len());
        let mut seasonal = Vec::new();
        let mut scales = Vec::with_capacity(histories.len());
        for (i, history) in histories.iter().enumerate() {
            let tail = check_history(history, w)?;
            let scale = self.scale_of(tail);
            scales.push(scale);
            last.push(encode_window(self.config.architecture, scale, tail, &mut x) as f32);
            if self.seasonal() {
                let lags = lags.get(i).map_or(&[][..], |l| l.as_slice());
                crate::seasonal::features(lags, scale, h, &mut seasonal);
            }
        }
        let n = histories.len() as i64;
        let x = Tensor::from_slice(&x).view([n, w as i64, self.features()]);
        let last = Tensor::from_slice(&last).view([n, 1]);
        let seasonal = self
            .seasonal()
            .then(|| Tensor::from_slice(&seasonal).view([n, self.config.seasonal_features() as i64]));
        let (point, upper) = tch::no_grad(|| self.forward(&x, &last, seasonal.as_ref()));
        let to_rows = |t: Tensor| -> Result<Vec<Vec<f64>>, Error> {
            let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?;
            Ok(flat
                .chunks(h)
                .zip(&scales)
                .map(|(r, (a, b))| r.iter().map(|z| f64::from(*z) * b + a).collect())
                .collect())
        };
        let points = to_rows(point)?;
        let mut uppers = match upper {
            Some(u) => to_rows(u)?.into_iter().map(Some).collect(),
            None => vec![None; points.len()],
        };
        Ok(points
            .into_iter()
            .zip(uppers.drain(..))
            .map(|(values, upper)| Prediction { values, upper })
            .collect())
    }
}

impl Lstm {
    /// Trains on prepared examples: Adam, shuffled batches, early stopping
    /// on the validation loss, the best weights kept.
    fn train_on(
        &mut self,
        train_set: Examples,
        val_set: Option<Examples>,
        progress: &mut dyn FnMut(&Epoch),
    ) -> Result<FitReport, Error> {
        let c = self.config.clone();
        let mut opt = nn::Adam::default().build(&self.vs, c.learning_rate)?;
        let mut rng = fastrand::Rng::with_seed(c.seed);
        let mut report = FitReport {
            examples: train_set.len() as usize,
            ..FitReport::default()
        };
        report.initial_loss = Some(self.mean_loss(&train_set));
        let mut best: Option<(f64, Vec<(String, Tensor)>)> = None;
        let mut since_best = 0;
        let mut seconds = 0.0;
        let n = train_set.len() as usize;
        let per_epoch = if c.max_examples > 0 {
            c.max_examples.min(n)
        } else {
            n
        };
        for epoch in 1..=c.max_epochs {
            let started = Instant::now();
            let mut order: Vec<i64> = (0..n as i64).collect();
            rng.shuffle(&mut order);
            order.truncate(per_epoch);
            let (mut total, mut batches) = (0.0, 0usize);
            for chunk in order.chunks(c.batch_size) {
                if self
                    .stop
                    .as_ref()
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
                {
                    return Err(Error::Stopped);
                }
                let batch = train_set.select(&Tensor::from_slice(chunk));
                let loss = self.loss(&batch);
                if c.clip_norm > 0.0 {
                    opt.backward_step_clip_norm(&loss, c.clip_norm);
                } else {
                    opt.backward_step(&loss);
                }
                total += loss.double_value(&[]);
                batches += 1;
            }
            let loss = total / batches.max(1) as f64;
            // Epoch time is the training pass alone, comparable with other loops.
            let took = started.elapsed().as_secs_f64();
            let validation_loss = val_set.as_ref().map(|v| self.mean_loss(v));
            seconds += took;
            report.epochs = epoch;
            report.final_loss = Some(loss);
            progress(&Epoch {
                epoch,
                max_epochs: c.max_epochs,
                loss,
                validation_loss,
                seconds: took,
            });
            if !loss.is_finite() || validation_loss.is_some_and(|v| !v.is_finite()) {
                report.diverged = true;
                break;
            }
            if let Some(v) = validation_loss {
                if best.as_ref().is_none_or(|(b, _)| v < *b) {
                    best = Some((v, self.snapshot()));
                    since_best = 0;
                } else {
                    since_best += 1;
                    if c.patience > 0 && since_best >= c.patience {
                        break;
                    }
                }
            }
        }
        if let Some((v, weights)) = best.filter(|_| !report.diverged) {
            self.restore(&weights);
            report.validation_loss = Some(v);
        }
        report.seconds_per_epoch = Some(seconds / report.epochs.max(1) as f64);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn wave(n: usize) -> Series {
        let values = (0..n)
            .map(|i| {
                40.0 + 15.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
                    + ((i * 7919) % 13) as f64 * 0.3
            })
            .collect();
        Series {
            seasonal: None,
            start: DateTime::from_timestamp(0, 0).unwrap(),
            step_seconds: 300,
            values,
        }
    }

    fn small() -> LstmConfig {
        LstmConfig {
            window: 24,
            horizon: 6,
            hidden: 16,
            max_epochs: 6,
            patience: 0,
            ..LstmConfig::default()
        }
    }

    /// Six days of 5-minute steps at about 100 millicores, except for an
    /// hour a day at 400, at 10:00. The one-hour window cannot see the
    /// burst coming; yesterday can.
    fn bursts() -> Series {
        let day = 288;
        let values = (0..6 * day)
            .map(|i| {
                let base = if (120..132).contains(&(i % day)) {
                    400.0
                } else {
                    100.0
                };
                base + ((i * 7919) % 11) as f64
            })
            .collect();
        Series {
            seasonal: None,
            start: DateTime::from_timestamp(20_000 * 86_400, 0).unwrap(),
            step_seconds: 300,
            values,
        }
    }

    #[test]
    fn the_seasonal_context_forecasts_what_the_window_cannot_see() {
        crate::runtime::configure(1, 7).unwrap();
        let mut series = bursts();
        let history = pas_workloads::history::History::of_series(series.start, 300, &series.values, 300);
        series.seasonal = Some(Arc::new(history));
        let config = LstmConfig {
            window: 12,
            horizon: 6,
            hidden: 16,
            max_epochs: 30,
            ..LstmConfig::default()
        };
        let mut seasonal = Lstm::new(config.clone()).unwrap();
        let mut plain = Lstm::new(LstmConfig {
            seasonal: false,
            ..config
        })
        .unwrap();
        assert!(seasonal.seasonal() && !plain.seasonal());
        let eval = crate::eval::EvalConfig {
            horizon: 6,
            test_fraction: 1.0 / 6.0,
            stride: 1,
            max_fill: 3,
            step_seconds: None,
        };
        let mut models: [&mut dyn Forecaster; 2] = [&mut seasonal, &mut plain];
        let report = crate::eval::backtest(
            "bursts",
            &series,
            Default::default(),
            &mut models,
            &eval,
            &mut |_| {},
        )
        .unwrap();
        let (with, without) = (report.models[0].mase, report.models[1].mase);
        assert!(
            with < 0.5 * without,
            "the last day's burst starts when the day before's did: MASE {with:.3} with the seasonal context, {without:.3} without"
        );
        // Without a history the seasonal inputs are zero: the forecast is
        // the one it makes for an unknown season.
        let window = &series.values[..1000];
        let lags = crate::seasonal::lags(series.seasonal.as_deref().unwrap(), series.time_at(999), 300, 6);
        let known = seasonal.predict_seasonal(&[window], &[lags]).unwrap();
        let unknown = seasonal.predict(window).unwrap();
        assert_ne!(known[0].values, unknown.values);
    }

    /// A daily-like wave of period 24 steps at `level`, swinging by a
    /// third of it, with a phase and some noise.
    fn wave_at(level: f64, phase: usize, n: usize) -> Series {
        let values = (0..n)
            .map(|i| {
                let t = ((i + phase) % 24) as f64 / 24.0 * std::f64::consts::TAU;
                level * (1.0 + t.sin() / 3.0 + ((i * 7919) % 13) as f64 * 0.004)
            })
            .collect();
        Series {
            seasonal: None,
            start: DateTime::from_timestamp(0, 0).unwrap(),
            step_seconds: 300,
            values,
        }
    }

    #[test]
    fn a_global_model_forecasts_a_series_it_never_saw_at_any_scale() {
        crate::runtime::configure(1, 7).unwrap();
        let seen: Vec<Series> = [(1.0, 0), (30.0, 5), (700.0, 11), (9000.0, 17)]
            .iter()
            .map(|&(level, phase)| wave_at(level, phase, 600))
            .collect();
        let config = LstmConfig {
            max_epochs: 8,
            ..small()
        };
        let (global, report) = crate::global::train(&seen, &config, 4000, None, &mut |_| {}).unwrap();
        assert!(!report.diverged && report.examples > 0, "{report:?}");
        assert_eq!(global.normalisation(), Normalisation::Window);
        // Unseen: another level and phase. Scored as it is (frozen), it
        // beats the naive forecast.
        let unseen = wave_at(50_000.0, 8, 600);
        let mut frozen = global.frozen().unwrap();
        assert_eq!(frozen.kind(), ModelKind::Global);
        let mut naive = crate::naive::Naive::new(6, 0.9);
        let eval = crate::eval::EvalConfig {
            horizon: 6,
            test_fraction: 0.3,
            ..Default::default()
        };
        let mut models: [&mut dyn Forecaster; 2] = [&mut naive, &mut frozen];
        let scored = crate::eval::backtest(
            "unseen",
            &unseen,
            Default::default(),
            &mut models,
            &eval,
            &mut |_| {},
        )
        .unwrap();
        let (naive, ours) = (scored.models[0].mase, scored.models[1].mase);
        assert!(ours < 0.7 * naive, "global {ours:.3} against naive {naive:.3}");
        // Fitting a frozen copy keeps its weights.
        assert_eq!(frozen.weights(), global.weights());
        // Scaled input, scaled forecast: nothing was fitted to one level.
        let window = &unseen.values[..100];
        let tenfold: Vec<f64> = window.iter().map(|v| v * 10.0).collect();
        let (one, ten) = (global.predict(window).unwrap(), global.predict(&tenfold).unwrap());
        for (a, b) in one.values.iter().zip(&ten.values) {
            assert!((10.0 * a - b).abs() < 1e-3 * b.abs(), "{a} × 10 vs {b}");
        }
        // Stored and loaded like any other version.
        let bytes = global.to_safetensors().unwrap();
        let loaded = Lstm::from_safetensors(global.config().clone(), &Normalisation::Window, &bytes).unwrap();
        assert_eq!(loaded.predict(window).unwrap(), one);
        // Fitted across series only with each window scaled on its own.
        let mut standard = Lstm::new(config).unwrap();
        assert!(standard.fit_many(&seen, 4000, &mut |_| {}).is_err());
    }

    #[test]
    fn a_settings_file_that_leaves_seasonal_out_keeps_it_on() {
        let partial: LstmConfig = serde_json::from_str(r#"{"window": 24}"#).unwrap();
        assert!(partial.seasonal && partial.window == 24);
        let off: LstmConfig = serde_json::from_str(r#"{"seasonal": false}"#).unwrap();
        assert!(!off.seasonal);
    }

    #[test]
    fn trains_predicts_and_round_trips_through_safetensors() {
        crate::runtime::configure(1, 7).unwrap();
        let series = wave(800);
        let mut m = Lstm::new(small()).unwrap();
        let report = m.fit(&series, &mut |_| {}).unwrap();
        assert!(!report.diverged);
        assert!(
            report.final_loss.unwrap() < report.initial_loss.unwrap(),
            "{report:?}"
        );
        let p = m.predict(&series.values[..700]).unwrap();
        assert_eq!(p.values.len(), 6);
        let upper = p.upper.as_ref().unwrap();
        assert!(
            p.values.iter().zip(upper).all(|(v, u)| u >= v),
            "the upper forecast is above the point"
        );
        let bytes = m.to_safetensors().unwrap();
        let loaded = Lstm::from_safetensors(small(), &m.normalisation(), &bytes).unwrap();
        assert_eq!(loaded.predict(&series.values[..700]).unwrap(), p);
        assert!(
            Lstm::from_safetensors(LstmConfig { hidden: 8, ..small() }, &m.normalisation(), &bytes).is_err()
        );
    }

    #[test]
    fn the_parameter_count_matches_the_network_for_both_architectures() {
        for config in [small(), LstmConfig { layers: 2, ..small() }, LstmConfig::seed()] {
            let m = Lstm::new(config.clone()).unwrap();
            let counted: usize = m.vs.variables().values().map(|t| t.numel()).sum();
            assert_eq!(config.parameter_count(), counted, "{config:?}");
        }
    }

    #[test]
    fn a_manifest_claiming_a_huge_network_is_refused_before_allocating() {
        // hidden = 20000 with 210 bytes of weights OOM-killed the forecaster.
        let huge = LstmConfig {
            hidden: 20_000,
            ..small()
        };
        let e = Lstm::from_safetensors(
            huge,
            &Normalisation::Standard { mean: 0.0, std: 1.0 },
            &[0u8; 210],
        )
        .unwrap_err();
        assert!(e.to_string().contains("at most 1024 units"), "{e}");
        // Within bounds, but the weights are far fewer than the shape needs.
        let wide = LstmConfig {
            hidden: 1024,
            layers: 8,
            ..small()
        };
        let e = Lstm::from_safetensors(
            wide,
            &Normalisation::Standard { mean: 0.0, std: 1.0 },
            &[0u8; 210],
        )
        .unwrap_err();
        assert!(e.to_string().contains("210 bytes of weights"), "{e}");
    }

    #[test]
    fn a_huge_learning_rate_is_reported_as_divergence() {
        crate::runtime::configure(1, 7).unwrap();
        let mut m = Lstm::new(LstmConfig {
            learning_rate: 1e30,
            clip_norm: 0.0,
            ..small()
        })
        .unwrap();
        let report = m.fit(&wave(400), &mut |_| {}).unwrap();
        assert!(report.diverged, "{report:?}");
    }

    #[test]
    fn gaps_are_masked_not_skipped() {
        crate::runtime::configure(1, 7).unwrap();
        let mut series = wave(800);
        for v in &mut series.values[300..340] {
            *v = f64::NAN;
        }
        let mut m = Lstm::new(small()).unwrap();
        m.fit(&series, &mut |_| {}).unwrap();
        // A window with a hole still predicts; a missing last step is refused.
        let mut history = series.values[..700].to_vec();
        history[690] = f64::NAN;
        assert!(m.predict(&history).unwrap().values.iter().all(|v| v.is_finite()));
        history[699] = f64::NAN;
        assert!(m.predict(&history).is_err());
    }
}
