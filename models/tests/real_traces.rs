//! Every model on slices of real recorded traces (NAB, copied into
//! `testdata/traces/` under its MIT licence), on a real libtorch.

use std::path::PathBuf;

use pas_models::lstm::{Lstm, LstmConfig};
use pas_models::{Forecaster, ModelKind, ModelOptions, Series, Trace, build};

fn trace(name: &str) -> Trace {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/traces")
        .join(name);
    Trace::read(&path).unwrap()
}

/// The first `steps` steps of a trace on its 300 s grid, short holes filled.
fn slice(name: &str, steps: usize) -> Series {
    let (series, _) = trace(name).to_series(300, 3).unwrap();
    series.slice(0..steps)
}

#[test]
fn every_model_fits_and_predicts_on_real_traces() {
    pas_models::runtime::configure(1, 1).unwrap(); // one thread in every test here: the determinism test needs it
    for name in [
        "nab-ec2_cpu_utilization_53ea38.csv",
        "nab-rds_cpu_utilization_cc0c53.csv",
    ] {
        let series = slice(name, 1200);
        let (train, test) = (series.slice(0..1000), &series.values[..]);
        let observed = || series.values.iter().copied().filter(|v| !v.is_nan());
        let (lo, hi) = (
            observed().fold(f64::INFINITY, f64::min),
            observed().fold(f64::NEG_INFINITY, f64::max),
        );
        // A sane forecast stays within the slice's range, widened by that range.
        let sane = (lo - (hi - lo))..(hi + (hi - lo));
        for kind in ModelKind::ALL {
            // `lstm` trains for at most 5 epochs here; `lstm-seed` is the preset as it is.
            let options = ModelOptions {
                lstm: LstmConfig {
                    max_epochs: 5,
                    ..LstmConfig::default()
                },
                ..ModelOptions::default()
            };
            let mut model = build(kind, &options).unwrap();
            let report = model
                .fit(&train, &mut |_| {})
                .unwrap_or_else(|e| panic!("{kind} on {name}: {e}"));
            assert!(!report.diverged, "{kind} on {name}");
            for origin in [1000, 1100, 1190] {
                let p = model.predict(&test[..origin]).unwrap();
                assert_eq!(p.values.len(), 10, "{kind}");
                assert!(
                    p.values.iter().all(|v| sane.contains(v)),
                    "{kind} on {name}: {p:?} outside {sane:?}"
                );
                if let Some(upper) = &p.upper {
                    assert!(
                        upper.iter().zip(&p.values).all(|(u, v)| u >= v),
                        "{kind}: upper below point"
                    );
                }
            }
        }
    }
}

#[test]
fn lstm_seed_is_the_older_systems_network() {
    let seed = LstmConfig::seed();
    assert_eq!(
        (seed.window, seed.horizon, seed.hidden, seed.dense),
        (10, 10, 180, 100)
    );
    assert_eq!(
        (seed.learning_rate, seed.max_epochs, seed.batch_size),
        (0.011, 24, 16)
    );
    let model = Lstm::new(seed).unwrap();
    let weights = model.weights();
    let shape = |name: &str| {
        weights
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| w.len())
            .unwrap()
    };
    // Encoder LSTM 1 -> 180, decoder LSTM 180 -> 180, dense 180 -> 100, out 100 -> 1.
    assert_eq!(shape("encoder.weight_ih_l0"), 4 * 180);
    assert_eq!(shape("decoder.weight_hh_l0"), 4 * 180 * 180);
    assert_eq!(shape("dense.weight"), 100 * 180);
    assert_eq!(shape("out.weight"), 100);
}

#[test]
fn lstm_training_lowers_the_loss_on_a_real_trace() {
    pas_models::runtime::configure(1, 1).unwrap(); // one thread in every test here: the determinism test needs it
    let series = slice("nab-ec2_cpu_utilization_53ea38.csv", 2000);
    let mut model = Lstm::new(LstmConfig {
        hidden: 32,
        max_epochs: 6,
        patience: 0,
        ..LstmConfig::default()
    })
    .unwrap();
    let mut epochs = Vec::new();
    let report = model.fit(&series, &mut |e| epochs.push(*e)).unwrap();
    assert_eq!(epochs.len(), 6);
    let (initial, last) = (report.initial_loss.unwrap(), epochs.last().unwrap().loss);
    assert!(last < initial, "loss went from {initial} to {last}");
    assert!(report.validation_loss.is_some());
}

#[test]
fn same_seed_and_one_thread_give_the_same_weights() {
    let series = slice("nab-rds_cpu_utilization_cc0c53.csv", 1500);
    let train = |seed: u64| {
        pas_models::runtime::configure(1, 0).unwrap();
        let mut model = Lstm::new(LstmConfig {
            hidden: 16,
            max_epochs: 3,
            patience: 0,
            seed,
            ..LstmConfig::default()
        })
        .unwrap();
        model.fit(&series, &mut |_| {}).unwrap();
        (model.weights(), model.to_safetensors().unwrap())
    };
    let (a, bytes_a) = train(42);
    let (b, bytes_b) = train(42);
    assert_eq!(a, b, "same seed, same weights");
    assert_eq!(
        pas_models::digest(&bytes_a),
        pas_models::digest(&bytes_b),
        "and the same stored bytes"
    );
    let (c, _) = train(43);
    assert_ne!(a, c, "another seed, other weights");
}
