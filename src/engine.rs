//! The one seam between the training loop and the hardware: an [`Engine`] trains an epoch,
//! evaluates a split and exchanges parameters. Granularity is the epoch so a GPU engine can
//! record a whole epoch without host round trips. `device::EngineKind` picks and builds one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::Hyper;
use crate::data::{Dataset, SplitName};
use crate::model::{Network, Params};

/// Errors an engine reports.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("loss became {value} at step {step} of the epoch")]
    NonFiniteLoss { step: usize, value: f64 },
    #[error("no dataset uploaded: call upload() before training or evaluating")]
    NoData,
    #[error("{found} does not fit the engine's model {expected}")]
    ShapeMismatch { expected: String, found: String },
    /// The GPU path's own error, kept whole up to the caller (which may fall back on it).
    #[error(transparent)]
    Gpu(#[from] crate::gpu::error::GpuError),
    /// Work the engine was handed does not fit what it was built for (a pack's batch size,
    /// dataset or schedule; a training state of another length).
    #[error("{0}")]
    Mismatch(String),
    /// The device cannot do what was asked (a profile without timestamp queries).
    #[error("{adapter} cannot {what}")]
    Unsupported { adapter: String, what: &'static str },
    /// A thread doing part of the work panicked (its message is on stderr).
    #[error("{what} panicked")]
    Panicked { what: &'static str },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(
        "{model} ({params} parameters) need at least {needed_gb:.1} GB of memory to train on the {device}, and {available_gb:.1} GB is available (hint: {hint})"
    )]
    OutOfMemory {
        /// `layers [784, 128, 10]`, or `network conv 32 3×3 relu → …`.
        model: String,
        params: u128,
        needed_gb: f64,
        available_gb: f64,
        device: &'static str,
        hint: &'static str,
    },
}

impl EngineError {
    /// Data whose images or classes are not what the engine's `model` takes.
    pub fn data_mismatch(model: &Network, data: &Dataset) -> Self {
        EngineError::ShapeMismatch {
            expected: model.describe(),
            found: format!(
                "data of {} values per image and {} classes",
                data.features, data.classes
            ),
        }
    }

    /// Parameters of another model than the engine's `model`.
    pub fn params_mismatch(model: &Network, params: &Params) -> Self {
        EngineError::ShapeMismatch {
            expected: model.describe(),
            found: format!("parameters of {}", params.model.describe()),
        }
    }
}

/// Sums over the mini-batches of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochStats {
    pub loss_sum: f64,
    pub correct: usize,
    pub samples: usize,
    pub steps: usize,
    /// Validation loss and accuracy after the epoch's last step, measured in the same
    /// submission (a GPU engine reads both back at once).
    pub val: Option<EvalStats>,
    /// On a seat of a GPU pack: this run's share of the packed epoch, its time over the
    /// models it trained. The rest of the wait is the other runs' time, not this one's.
    pub shared_secs: Option<f64>,
}

/// Loss and accuracy over one split.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalStats {
    /// Mean cross-entropy per sample.
    pub loss: f64,
    /// Fraction correct, in [0, 1].
    pub accuracy: f64,
    pub samples: usize,
}

/// What an engine hands back once the device has it: a future, boxed so that an engine of
/// any kind can stand behind one `dyn Engine`. A GPU engine's resolves when its read-back
/// arrives; the CPU engine's are ready when returned. A page awaits it; a native caller
/// waits for it with [`wait`].
pub type Awaited<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + 'a>>;

/// An answer that is already there, as an [`Awaited`].
pub fn ready<'a, T: 'a>(result: Result<T, EngineError>) -> Awaited<'a, T> {
    Box::pin(std::future::ready(result))
}

/// Waits on this thread for what an engine hands back, or any engine-level future (native
/// callers: a page awaits).
pub fn wait<T>(awaited: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
    pollster::block_on(awaited)
}

/// A device that trains one network. The calls that read results back from the device are
/// [`Awaited`]; the others only hand it work or copy on it, and return at once.
pub trait Engine {
    /// One line naming the device, e.g. `cpu (2 threads, avx512f kernels)`.
    fn describe(&self) -> String;
    /// Makes the dataset resident (a GPU engine copies it to the device once).
    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError>;
    /// Takes one step per mini-batch of `order` (indices into the training split), then
    /// evaluates the validation split.
    fn train_epoch<'a>(&'a mut self, order: &'a [u32], hyper: &'a Hyper)
    -> Awaited<'a, EpochStats>;
    /// Loss and accuracy of the current parameters on a split.
    fn evaluate(&mut self, split: SplitName) -> Awaited<'_, EvalStats>;
    /// A copy of the current parameters.
    fn params(&self) -> Awaited<'_, Params>;
    /// Replaces the parameters and resets the optimiser state.
    fn set_params(&mut self, params: &Params) -> Result<(), EngineError>;
    /// Copies the current parameters aside as the best so far (on the device, for a GPU).
    fn keep_best(&mut self) -> Result<(), EngineError>;
    /// Makes the parameters kept by [`Engine::keep_best`] current again.
    fn restore_best(&mut self) -> Result<(), EngineError>;
    /// Everything a checkpoint needs to continue training exactly: parameters, the kept best,
    /// the optimiser's buffers and step count.
    fn training_state(&self) -> Awaited<'_, TrainingState>;
    /// Restores what [`Engine::training_state`] returned.
    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError>;
    /// For reports (`wgtrain bench`): the compute dispatches one training step records, as
    /// the engine's own scheduler counts them; `None` where that means nothing (the CPU).
    fn dispatches_per_step(&self) -> Option<usize> {
        None
    }
}

/// An engine's full training state (flat vectors laid out like the parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    pub params: Vec<f32>,
    pub best: Vec<f32>,
    /// Momentum velocity, or Adam's first moment.
    pub first: Vec<f32>,
    /// Adam's second moment.
    pub second: Vec<f32>,
    /// Optimiser steps taken.
    pub step: u64,
}

impl TrainingState {
    /// Checks every vector has `len` elements.
    pub fn check_len(&self, len: usize) -> Result<(), EngineError> {
        for v in [&self.params, &self.best, &self.first, &self.second] {
            if v.len() != len {
                return Err(EngineError::Mismatch(format!(
                    "training state holds {} values, the network has {len}",
                    v.len()
                )));
            }
        }
        Ok(())
    }
}
