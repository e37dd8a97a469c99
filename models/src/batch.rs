//! Batched inference of many LSTMs that share a shape but not their weights.
//!
//! The trainer fits one model per workload, so a forecaster serving 10,000
//! workloads holds 10,000 sets of weights. Running them one by one costs a
//! libtorch call per layer per step per workload; here they run together:
//! each tick's windows are encoded into one input tensor `[n, window, 2]`,
//! the weights of the same models are stacked into `[n, in, 4·hidden]`, and
//! every LSTM step is one batched matrix product (`bmm`) over all of them.
//! The batch is cut into chunks of `chunk` models so that a chunk's weights
//! stay in the CPU cache for all the steps of the window. Windows that
//! share one model (the global model serves every workload without its
//! own) run in passes of their own with its weights once (`matmul`
//! broadcasts them), not stacked per window.
//!
//! [`LstmWeights`] holds a model's weights as plain numbers (shareable between
//! threads, unlike libtorch tensors); [`predict_batch`] runs any mix of models.
//! The result is the same as [`crate::lstm::Lstm`]'s own `predict`, which a
//! test checks.

use std::collections::BTreeMap;

use pas_schemas::Normalisation;
use tch::{Device, Kind, Tensor};

use crate::lstm::{Architecture, Lstm, encode_window};
use crate::{Error, Prediction};

/// What models must share to run in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// Input steps.
    pub window: usize,
    /// Output steps.
    pub horizon: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// Stacked LSTM layers.
    pub layers: usize,
    /// Seasonal inputs of the output layer (0: none).
    pub seasonal: usize,
}

/// One layer's weights, transposed for `x · W`: `[in, 4·hidden]`,
/// `[hidden, 4·hidden]`, and the two biases summed.
#[derive(Debug, Clone)]
struct Layer {
    input: Vec<f32>,
    recurrent: Vec<f32>,
    bias: Vec<f32>,
}

/// The weights of one direct LSTM (PAS's `lstm`) as plain numbers.
#[derive(Debug, Clone)]
pub struct LstmWeights {
    shape: Shape,
    layers: Vec<Layer>,
    /// `[hidden + seasonal, 2·horizon]`: the change from the last value,
    /// then the margin.
    head: Vec<f32>,
    head_bias: Vec<f32>,
    /// `(a, b)`: values are scaled as `(x - a) / b`; `None`: each window
    /// by its own ([`crate::lstm::window_scale`]).
    scale: Option<(f64, f64)>,
}

/// `[rows, cols]` row-major into `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

impl LstmWeights {
    /// Copies a fitted or loaded direct LSTM's weights.
    pub fn from_lstm(model: &Lstm) -> Result<LstmWeights, Error> {
        let c = model.config();
        if c.architecture != Architecture::Direct {
            return Err(Error::Input(
                "batched inference serves the direct LSTM (`lstm`), not the encoder-decoder".into(),
            ));
        }
        let scale = match model.normalisation() {
            Normalisation::Standard { mean, std } => Some((mean, std)),
            Normalisation::MinMax { min, max } => Some((min, max - min)),
            Normalisation::Window => None,
            Normalisation::None => return Err(Error::NotFitted),
        };
        let shape = Shape {
            window: c.window,
            horizon: c.horizon,
            hidden: c.hidden,
            layers: c.layers,
            seasonal: c.seasonal_features(),
        };
        let weights: BTreeMap<String, Vec<f32>> = model.weights().into_iter().collect();
        let take = |name: &str, len: usize| -> Result<&Vec<f32>, Error> {
            match weights.get(name) {
                Some(w) if w.len() == len => Ok(w),
                Some(w) => Err(Error::Weights(format!(
                    "{name} has {} numbers, expected {len}",
                    w.len()
                ))),
                None => Err(Error::Weights(format!("{name} is missing"))),
            }
        };
        let (h, gates) = (c.hidden, 4 * c.hidden);
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let input = if l == 0 { 2 } else { h };
            let w_ih = take(&format!("lstm.weight_ih_l{l}"), gates * input)?;
            let w_hh = take(&format!("lstm.weight_hh_l{l}"), gates * h)?;
            let b_ih = take(&format!("lstm.bias_ih_l{l}"), gates)?;
            let b_hh = take(&format!("lstm.bias_hh_l{l}"), gates)?;
            layers.push(Layer {
                input: transpose(w_ih, gates, input),
                recurrent: transpose(w_hh, gates, h),
                bias: b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect(),
            });
        }
        let out = 2 * c.horizon;
        let head_in = h + shape.seasonal;
        let head = transpose(take("head.weight", out * head_in)?, out, head_in);
        let head_bias = take("head.bias", out)?.clone();
        Ok(LstmWeights {
            shape,
            layers,
            head,
            head_bias,
            scale,
        })
    }

    /// The shape, which decides what it can be batched with.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Bytes held by the weights.
    pub fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.input.len() + l.recurrent.len() + l.bias.len())
            .sum();
        (layers + self.head.len() + self.head_bias.len()) * std::mem::size_of::<f32>()
    }
}

/// Forecasts `windows[i]` with `models[i]`, all in as few batched passes as
/// the shapes allow, `chunk` models per pass. Each window must hold at least
/// its model's `window` steps (the newest are used), the last one observed;
/// holes are carried forward and marked, as in training. `lags[i]` is
/// window `i`'s seasonal context ([`crate::seasonal::lags`]) for models that
/// read it; missing or empty where unknown.
pub fn predict_batch(
    models: &[&LstmWeights],
    windows: &[&[f64]],
    lags: &[Vec<f64>],
    chunk: usize,
) -> Result<Vec<Prediction>, Error> {
    if models.len() != windows.len() {
        return Err(Error::Input(format!(
            "{} models for {} windows",
            models.len(),
            windows.len()
        )));
    }
    let mut groups: BTreeMap<(Shape, usize), Vec<usize>> = BTreeMap::new();
    let mut uses: std::collections::HashMap<*const LstmWeights, usize> = std::collections::HashMap::new();
    for m in models {
        *uses.entry(*m as *const LstmWeights).or_default() += 1;
    }
    for (i, m) in models.iter().enumerate() {
        let w = m.shape.window;
        let history = windows[i];
        if history.len() < w {
            return Err(Error::Input(format!(
                "window {i} has {} steps, its model needs {w}",
                history.len()
            )));
        }
        if history.last().is_none_or(|v| v.is_nan()) {
            return Err(Error::Input(format!("the last step of window {i} is missing")));
        }
        // A model many windows share (the global one) runs them in passes
        // of its own, with its weights once rather than stacked per window.
        let address = *m as *const LstmWeights;
        let shared = if uses[&address] > 1 { address as usize } else { 0 };
        groups.entry((m.shape, shared)).or_default().push(i);
    }
    let mut out: Vec<Option<Prediction>> = vec![None; models.len()];
    tch::no_grad(|| -> Result<(), Error> {
        for ((shape, shared), members) in groups {
            // The tick's input for this shape: one tensor, encoded as in training.
            let mut x = Vec::with_capacity(members.len() * shape.window * 2);
            let mut last = Vec::with_capacity(members.len());
            let mut seasonal = Vec::with_capacity(members.len() * shape.seasonal);
            let mut scales = Vec::with_capacity(members.len());
            for &i in &members {
                let tail = &windows[i][windows[i].len() - shape.window..];
                let scale = models[i].scale.unwrap_or_else(|| crate::lstm::window_scale(tail));
                scales.push(scale);
                last.push(encode_window(Architecture::Direct, scale, tail, &mut x) as f32);
                if shape.seasonal > 0 {
                    let lags = lags.get(i).map_or(&[][..], |l| l.as_slice());
                    crate::seasonal::features(lags, scale, shape.horizon, &mut seasonal);
                }
            }
            let rows = members.len() as i64;
            let x = Tensor::from_slice(&x).view([rows, shape.window as i64, 2]);
            let last = Tensor::from_slice(&last).view([rows, 1]);
            let seasonal = (shape.seasonal > 0)
                .then(|| Tensor::from_slice(&seasonal).view([rows, 1, shape.seasonal as i64]));
            let chunk = if shared != 0 { SHARED_CHUNK } else { chunk.max(1) };
            for (k, part) in members.chunks(chunk).enumerate() {
                let (start, len) = ((k * chunk) as i64, part.len() as i64);
                let items: Vec<&LstmWeights> = part.iter().map(|&i| models[i]).collect();
                let inputs = Inputs {
                    x: x.narrow(0, start, len),
                    last: last.narrow(0, start, len),
                    seasonal: seasonal.as_ref().map(|s| s.narrow(0, start, len)),
                    scales: &scales[start as usize..(start + len) as usize],
                };
                let predictions = run_chunk(shape, &items, inputs)?;
                for (&i, p) in part.iter().zip(predictions) {
                    out[i] = Some(p);
                }
            }
        }
        Ok(())
    })?;
    out.into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Input("a window was left out of every batch".into()))
}

/// Windows per pass of one shared model: its weights stay in the cache
/// whatever the count, so only the activations bound it.
const SHARED_CHUNK: usize = 2048;

/// One chunk's inputs: the encoded windows `[n, window, 2]`, the scaled
/// last values `[n, 1]` and the seasonal inputs `[n, 1, seasonal]`.
struct Inputs<'a> {
    x: Tensor,
    last: Tensor,
    seasonal: Option<Tensor>,
    /// Each window's scaling `(a, b)`, to turn the outputs back.
    scales: &'a [(f64, f64)],
}

/// One batched pass over models of one shape.
fn run_chunk(shape: Shape, items: &[&LstmWeights], inputs: Inputs<'_>) -> Result<Vec<Prediction>, Error> {
    let Shape {
        window,
        horizon,
        hidden,
        layers,
        seasonal,
    } = shape;
    let Inputs {
        x,
        last,
        seasonal: extra,
        scales,
    } = inputs;
    let n = items.len() as i64;
    let (h, gates, w) = (hidden as i64, 4 * hidden as i64, window as i64);
    // One set of weights for every item: `[in, out]`, broadcast by
    // `matmul`; else each item's stacked, `[n, in, out]`.
    let one = items.iter().all(|m| std::ptr::eq(*m, items[0]));
    let stack = |part: &dyn Fn(&LstmWeights) -> &[f32], dims: [i64; 3]| -> Tensor {
        if one {
            return Tensor::from_slice(part(items[0])).view([dims[1], dims[2]]);
        }
        let mut flat = Vec::with_capacity(items.len() * (dims[1] * dims[2]) as usize);
        for m in items {
            flat.extend_from_slice(part(m));
        }
        Tensor::from_slice(&flat).view(dims)
    };
    let mut input = x;
    let mut state = Tensor::zeros([n, 1, h], (Kind::Float, Device::Cpu));
    if one {
        // One network for all: libtorch's own fused LSTM over the window,
        // as the model runs it in training.
        let m = items[0];
        let mut params = Vec::with_capacity(4 * layers);
        for (l, layer) in m.layers.iter().enumerate() {
            let features = if l == 0 { 2 } else { h };
            params.push(
                Tensor::from_slice(&layer.input)
                    .view([features, gates])
                    .tr()
                    .contiguous(),
            );
            params.push(
                Tensor::from_slice(&layer.recurrent)
                    .view([h, gates])
                    .tr()
                    .contiguous(),
            );
            params.push(Tensor::from_slice(&layer.bias));
            params.push(Tensor::zeros([gates], (Kind::Float, Device::Cpu)));
        }
        let zeros = Tensor::zeros([layers as i64, n, h], (Kind::Float, Device::Cpu));
        let (out, _, _) = input.lstm(
            &[&zeros, &zeros],
            &params.iter().collect::<Vec<_>>(),
            true,
            layers as i64,
            0.0,
            false,
            false,
            true,
        );
        state = out.narrow(1, w - 1, 1);
    }
    for l in (0..layers).filter(|_| !one) {
        let features = if l == 0 { 2 } else { h };
        let w_in = stack(&|m| &m.layers[l].input, [n, features, gates]);
        let w_rec = stack(&|m| &m.layers[l].recurrent, [n, h, gates]);
        let bias = stack(&|m| &m.layers[l].bias, [n, 1, gates]);
        // The input part of every gate for every step, in one product.
        let projected = input.matmul(&w_in) + bias;
        let mut hidden_state = Tensor::zeros([n, 1, h], (Kind::Float, Device::Cpu));
        let mut cell = Tensor::zeros([n, 1, h], (Kind::Float, Device::Cpu));
        let mut outputs = Vec::with_capacity(if l + 1 < layers { window } else { 0 });
        for t in 0..w {
            // PyTorch's gate order: input, forget, cell, output.
            let g = projected.narrow(1, t, 1) + hidden_state.matmul(&w_rec);
            let s = g.sigmoid();
            let (i, f, o) = (s.narrow(2, 0, h), s.narrow(2, h, h), s.narrow(2, 3 * h, h));
            let candidate = g.narrow(2, 2 * h, h).tanh();
            cell = f * &cell + i * candidate;
            hidden_state = o * cell.tanh();
            if l + 1 < layers {
                outputs.push(hidden_state.shallow_clone());
            }
        }
        if l + 1 < layers {
            input = Tensor::cat(&outputs, 1);
        }
        state = hidden_state;
    }
    let out = 2 * horizon as i64;
    if let Some(extra) = extra {
        state = Tensor::cat(&[state, extra], 2);
    }
    let head = stack(&|m| &m.head, [n, h + seasonal as i64, out]);
    let head_bias = stack(&|m| &m.head_bias, [n, 1, out]);
    let heads = (state.matmul(&head) + head_bias).squeeze_dim(1);
    let point = heads.narrow(1, 0, horizon as i64) + last;
    let upper = &point + heads.narrow(1, horizon as i64, horizon as i64).softplus();
    let point = Vec::<f32>::try_from(point.contiguous().flatten(0, -1))?;
    let upper = Vec::<f32>::try_from(upper.contiguous().flatten(0, -1))?;
    Ok(scales
        .iter()
        .enumerate()
        .map(|(k, &(a, b))| {
            let unscale = |z: &f32| f64::from(*z) * b + a;
            let rows = k * horizon..(k + 1) * horizon;
            Prediction {
                values: point[rows.clone()].iter().map(unscale).collect(),
                upper: Some(upper[rows].iter().map(unscale).collect()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lstm::LstmConfig;
    use crate::{Forecaster, Series};

    fn fitted(seed: u64, layers: usize, hidden: usize) -> Lstm {
        fitted_with(seed, layers, hidden, crate::lstm::Scaling::Standard)
    }

    fn fitted_with(seed: u64, layers: usize, hidden: usize, scaling: crate::lstm::Scaling) -> Lstm {
        let config = LstmConfig {
            scaling,
            window: 12,
            horizon: 4,
            hidden,
            layers,
            max_epochs: 2,
            seed,
            ..LstmConfig::default()
        };
        let mut model = Lstm::new(config).unwrap();
        let values: Vec<f64> = (0..400)
            .map(|i| 50.0 + 20.0 * (i as f64 / (7.0 + seed as f64)).sin())
            .collect();
        // 5-minute steps, so the last third has a day before it: the
        // output layer learns weights for the seasonal inputs too.
        let start = chrono::DateTime::UNIX_EPOCH;
        let history = pas_workloads::history::History::of_series(start, 300, &values, 300);
        let series = Series {
            seasonal: Some(std::sync::Arc::new(history)),
            start,
            step_seconds: 300,
            values,
        };
        model.fit(&series, &mut |_| {}).unwrap();
        model
    }

    #[test]
    fn batched_inference_matches_each_model_on_its_own() {
        crate::runtime::configure(1, 7).unwrap();
        // Two shapes and four sets of weights (one scaling each window on
        // its own, as the global model does), in mixed order, with holes.
        let models = [
            fitted(1, 1, 16),
            fitted(2, 1, 16),
            fitted(3, 2, 8),
            fitted_with(4, 1, 16, crate::lstm::Scaling::Window),
        ];
        let weights: Vec<LstmWeights> = models
            .iter()
            .map(|m| LstmWeights::from_lstm(m).unwrap())
            .collect();
        let mut windows: Vec<Vec<f64>> = (0..8)
            .map(|k| {
                (0..20)
                    .map(|i| (30.0 + (k * 3 + i) as f64) * if k == 7 { 100.0 } else { 1.0 })
                    .collect()
            })
            .collect();
        windows[2][10] = f64::NAN;
        windows[5][15] = f64::NAN;
        let pick = [0, 2, 1, 3, 2, 2, 1, 3];
        let batch_models: Vec<&LstmWeights> = pick.iter().map(|&p| &weights[p]).collect();
        let batch_windows: Vec<&[f64]> = windows.iter().map(|w| w.as_slice()).collect();
        // Seasonal lags for all but one window (and a season unknown in one).
        let mut lags: Vec<Vec<f64>> = (0..8)
            .map(|k| {
                (0..crate::seasonal::lags_len(4))
                    .map(|j| 30.0 + (k * j) as f64)
                    .collect()
            })
            .collect();
        lags[3].clear();
        lags[4][7] = f64::NAN;
        assert!(models[0].seasonal() && weights[0].shape().seasonal > 0);
        for chunk in [1, 2, 16] {
            let batched = predict_batch(&batch_models, &batch_windows, &lags, chunk).unwrap();
            for (k, p) in batched.iter().enumerate() {
                let alone = models[pick[k]]
                    .predict_seasonal(&[&windows[k]], &[lags[k].clone()])
                    .unwrap()
                    .remove(0);
                for (a, b) in p
                    .values
                    .iter()
                    .zip(&alone.values)
                    .chain(p.upper.iter().flatten().zip(alone.upper.iter().flatten()))
                {
                    assert!(
                        (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                        "window {k}, chunk {chunk}: {a} vs {b}"
                    );
                }
            }
        }
        assert_eq!(weights[0].shape(), weights[1].shape());
        assert_ne!(weights[0].shape(), weights[2].shape());
        // The seasonal inputs change the forecast: the network reads them.
        let without = predict_batch(&batch_models, &batch_windows, &[], 16).unwrap();
        let with = predict_batch(&batch_models, &batch_windows, &lags, 16).unwrap();
        assert_ne!(without[0].values, with[0].values);
    }

    #[test]
    fn short_or_unfinished_windows_are_refused() {
        crate::runtime::configure(1, 7).unwrap();
        let model = LstmWeights::from_lstm(&fitted(1, 1, 8)).unwrap();
        let short = vec![1.0; 5];
        assert!(predict_batch(&[&model], &[&short], &[], 8).is_err());
        let mut open = vec![1.0; 20];
        open[19] = f64::NAN;
        assert!(predict_batch(&[&model], &[&open], &[], 8).is_err());
        let unfitted = Lstm::new(LstmConfig::default()).unwrap();
        assert!(LstmWeights::from_lstm(&unfitted).is_err());
    }
}
