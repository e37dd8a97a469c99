//! PAS forecasting models on libtorch (`tch`). This is the only crate that
//! links libtorch; the node agent never depends on it.
//!
//! So far it holds the libtorch runtime set-up every model run starts with
//! ([`runtime::configure`]: thread count and seed, for reproducible training
//! and for one-core inference). The models, training and evaluation build on
//! it.

pub mod runtime;
