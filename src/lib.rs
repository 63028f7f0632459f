//! wgtrain: a trainer for small neural networks that reproduces the Fashion-MNIST paper.
//!
//! Data flows one way: files → [`data`] (IDX, split, z-score) → [`engine::Engine::upload`] →
//! per epoch [`data::epoch_order`] → `Engine::train_epoch` → [`train`] (early stopping, best
//! weights) → [`metrics`], [`checkpoint`]. `data` knows no engine, engines know no CLI, and
//! `train` knows no hardware.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod device;
pub mod engine;
pub mod error;
pub mod eval;
pub mod files;
pub mod gpu;
pub mod gradcheck;
pub mod host;
pub mod metrics;
pub mod model;
pub mod page;
// Drawing into files and sweeps of run directories are the native program's; in a browser
// the page draws and there is one run.
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod predict;
pub mod report;
pub mod run;
pub mod rundir;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
#[cfg(not(target_arch = "wasm32"))]
pub mod sweep;
pub mod train;
pub mod tune;

pub use error::{Error, Result};
pub mod check;
