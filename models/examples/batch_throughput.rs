//! Forecasts per second of batched LSTM inference on one thread, for the
//! default `lstm` shape (with its seasonal inputs), each workload with its
//! own copy of the weights, then every workload served by one shared model
//! (the global model, each window scaled on its own).
//!
//! cargo run --release -p pas-models --example batch_throughput -- 1000 10000

use std::time::Instant;

use pas_models::batch::{LstmWeights, predict_batch};
use pas_models::lstm::{Lstm, LstmConfig};
use pas_schemas::Normalisation;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    pas_models::runtime::configure(1, 42)?;
    let config = LstmConfig::default();
    let bytes = Lstm::new(config.clone())?.to_safetensors()?;
    let model = Lstm::from_safetensors(
        config.clone(),
        &Normalisation::Standard {
            mean: 50.0,
            std: 10.0,
        },
        &bytes,
    )?;
    let weights = LstmWeights::from_lstm(&model)?;
    for n in if counts.is_empty() {
        vec![1000, 10_000]
    } else {
        counts
    } {
        let models: Vec<LstmWeights> = (0..n).map(|_| weights.clone()).collect();
        let windows: Vec<Vec<f64>> = (0..n)
            .map(|k| (0..config.window).map(|i| 40.0 + ((k + i) % 17) as f64).collect())
            .collect();
        // Every workload has its seasonal context, as after a day of history.
        let lags: Vec<Vec<f64>> = (0..n)
            .map(|k| {
                (0..pas_models::seasonal::lags_len(config.horizon))
                    .map(|i| 40.0 + ((k + i) % 13) as f64)
                    .collect()
            })
            .collect();
        let m: Vec<&LstmWeights> = models.iter().collect();
        let w: Vec<&[f64]> = windows.iter().map(|w| w.as_slice()).collect();
        for chunk in [16, 32, 64, 128, n] {
            let started = Instant::now();
            let rounds = 3;
            for _ in 0..rounds {
                predict_batch(&m, &w, &lags, chunk)?;
            }
            let seconds = started.elapsed().as_secs_f64() / rounds as f64;
            println!(
                "workloads {n:>6}  chunk {chunk:>6}  {seconds:.3} s per tick  {:.0} forecasts/s",
                n as f64 / seconds
            );
        }
        let global = LstmWeights::from_lstm(&Lstm::from_safetensors(
            pas_models::global::config(&config),
            &Normalisation::Window,
            &bytes,
        )?)?;
        let shared: Vec<&LstmWeights> = (0..n).map(|_| &global).collect();
        let started = Instant::now();
        let rounds = 3;
        for _ in 0..rounds {
            predict_batch(&shared, &w, &lags, 64)?;
        }
        let seconds = started.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "workloads {n:>6}  one shared model  {seconds:.3} s per tick  {:.0} forecasts/s",
            n as f64 / seconds
        );
    }
    Ok(())
}
