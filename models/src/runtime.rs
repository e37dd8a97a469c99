//! libtorch runtime settings shared by training and inference.

use tch::Device;

/// What libtorch this process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// Intra-op threads libtorch uses.
    pub threads: i32,
    /// Whether a CUDA device is usable.
    pub cuda: bool,
}

/// Why the runtime could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A thread count below one.
    #[error("libtorch needs at least one thread, {0} was asked for")]
    Threads(i32),
}

/// Sets libtorch's intra-op thread count and seeds its random generator.
/// One thread and a fixed seed make training reproducible bit for bit.
pub fn configure(threads: i32, seed: i64) -> Result<RuntimeInfo, Error> {
    let _generator = generator_lock();
    configure_holding_generator(threads, seed)
}

fn configure_holding_generator(threads: i32, seed: i64) -> Result<RuntimeInfo, Error> {
    if threads < 1 {
        return Err(Error::Threads(threads));
    }
    tch::set_num_threads(threads);
    tch::manual_seed(seed);
    Ok(info())
}

/// Holds libtorch's global random generator for a seeded sequence of draws,
/// so that models built on other threads cannot interleave theirs.
pub(crate) fn generator_lock() -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GENERATOR.lock().unwrap_or_else(|p| p.into_inner())
}

/// The current settings.
pub fn info() -> RuntimeInfo {
    RuntimeInfo {
        threads: tch::get_num_threads(),
        cuda: tch::Cuda::is_available(),
    }
}

/// The device models run on: the first CUDA device if there is one, else the CPU.
pub fn device() -> Device {
    Device::cuda_if_available()
}

#[cfg(test)]
mod tests {
    use tch::Tensor;

    use super::*;

    fn tensor(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).reshape(shape)
    }

    #[test]
    fn configure_sets_threads_and_makes_randomness_repeatable() {
        // Hold the generator so that tests on other threads cannot reseed it.
        let _generator = generator_lock();
        let configure = configure_holding_generator;
        let info = configure(1, 42).unwrap();
        assert_eq!(info.threads, 1);
        let a = Tensor::randn([4, 3], (tch::Kind::Float, Device::Cpu));
        configure(1, 42).unwrap();
        let b = Tensor::randn([4, 3], (tch::Kind::Float, Device::Cpu));
        assert!(a.equal(&b), "same seed, same numbers");
        configure(1, 43).unwrap();
        let c = Tensor::randn([4, 3], (tch::Kind::Float, Device::Cpu));
        assert!(!a.equal(&c), "another seed, other numbers");
        assert!(configure(0, 1).is_err());
    }

    #[test]
    fn libtorch_computes_on_this_machine() {
        // [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]]
        let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let y = tensor(&[5.0, 6.0, 7.0, 8.0], &[2, 2]);
        let z: Vec<f32> = x.matmul(&y).flatten(0, -1).try_into().unwrap();
        assert_eq!(z, [19.0, 22.0, 43.0, 50.0]);
        // An LSTM layer runs forward and backward (what training needs).
        let _generator = generator_lock();
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let lstm = tch::nn::lstm(vs.root(), 1, 8, Default::default());
        let input = Tensor::randn([2, 10, 1], (tch::Kind::Float, Device::Cpu)).set_requires_grad(false);
        let (out, _) = tch::nn::RNN::seq(&lstm, &input);
        assert_eq!(out.size(), [2, 10, 8]);
        out.sum(tch::Kind::Float).backward();
        let grads: f64 = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad().abs().sum(tch::Kind::Float).double_value(&[]))
            .sum();
        assert!(grads > 0.0, "gradients flow");
    }
}
