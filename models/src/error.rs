//! The errors of `pas-models`.

/// Why a model could not be built, fitted, run, saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input (a trace, a series, a history, a setting) is unusable; the
    /// message says what is wrong with it.
    #[error("bad input: {0}")]
    Input(String),
    /// The series is too short or too gappy to fit the model.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// The model was asked to predict before it was fitted or loaded.
    #[error("the model is not fitted")]
    NotFitted,
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// libtorch failed.
    #[error("libtorch failed")]
    Torch(#[from] tch::TchError),
    /// Training was asked to stop.
    #[error("training stopped")]
    Stopped,
    /// Stored weights do not match the model they are loaded into.
    #[error("stored weights do not fit this model: {0}")]
    Weights(String),
}
