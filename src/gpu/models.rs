//! [`GpuModels`]: the models a GPU engine (a pack of one) or a pack of runs trains, behind the
//! per-model calls both of the GPU's schedules answer: a network of dense layers with one
//! hidden activation on the fused dense kernels ([`PackedModels`]: `matmul_gather`,
//! `matmul_softmax_xent`, `matmul_update`, 3 dispatches a step for the paper's MLP), any other
//! network layer by layer ([`NetworkModels`]).

use std::sync::Arc;

use super::context::{GpuContext, GpuError};
use super::network::NetworkModels;
use super::packed::{EpochJob, PackedModels};
use crate::data::{Dataset, SplitName};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Network, Params};

/// The models a GPU engine or pack trains, on the schedule their network takes.
pub enum GpuModels {
    Dense(Box<PackedModels>),
    Layers(Box<NetworkModels>),
}

/// `$call` on whichever models a pack holds.
macro_rules! on_models {
    ($models:expr, $m:ident => $call:expr) => {
        match $models {
            GpuModels::Dense($m) => $call,
            GpuModels::Layers($m) => $call,
        }
    };
}

impl GpuModels {
    /// `models` models of `model`'s shape trained at up to `batch_size` rows a step.
    pub fn new(
        ctx: GpuContext,
        model: &Arc<Network>,
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        Ok(match model.dense_stack() {
            Some(_) => {
                GpuModels::Dense(Box::new(PackedModels::new(ctx, model, batch_size, models)?))
            }
            None => GpuModels::Layers(Box::new(NetworkModels::new(
                ctx,
                Arc::clone(model),
                batch_size,
                models,
            )?)),
        })
    }

    pub fn describe(&self) -> String {
        on_models!(self, m => m.describe())
    }

    /// The compute dispatches one training step records.
    pub fn dispatches_per_step(&self) -> Option<usize> {
        match self {
            GpuModels::Dense(m) => m.dispatches_per_step().ok(),
            GpuModels::Layers(m) => Some(m.dispatches_per_step()),
        }
    }

    /// How many command buffers the last training epoch was submitted in.
    pub fn submissions_last_epoch(&self) -> usize {
        on_models!(self, m => m.submissions_last_epoch())
    }

    pub fn batch_size(&self) -> usize {
        on_models!(self, m => m.batch_size())
    }

    pub fn init_model(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        on_models!(self, m => m.init_model(model, params))
    }

    /// One epoch of every model with a job, in the same dispatches. The per-model calls that
    /// read back are futures: a native caller waits on them, a page awaits them.
    pub async fn train_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<Vec<Option<Result<EpochStats, EngineError>>>, EngineError> {
        on_models!(self, m => m.train_epoch(jobs).await)
    }

    pub async fn evaluate(
        &mut self,
        model: usize,
        split: SplitName,
    ) -> Result<EvalStats, EngineError> {
        on_models!(self, m => m.evaluate(model, split).await)
    }

    pub async fn params(&self, model: usize) -> Result<Params, EngineError> {
        on_models!(self, m => m.params(model).await)
    }

    pub async fn training_state(&self, model: usize) -> Result<TrainingState, EngineError> {
        on_models!(self, m => m.training_state(model).await)
    }

    pub fn upload(&mut self, model: usize, data: &Dataset) -> Result<(), EngineError> {
        on_models!(self, m => m.upload(model, data))
    }

    pub fn set_params(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        on_models!(self, m => m.set_params(model, params))
    }

    pub fn keep_best(&mut self, model: usize) -> Result<(), EngineError> {
        on_models!(self, m => m.keep_best(model))
    }

    pub fn restore_best(&mut self, model: usize) -> Result<(), EngineError> {
        on_models!(self, m => m.restore_best(model))
    }

    pub fn set_training_state(
        &mut self,
        model: usize,
        state: &TrainingState,
    ) -> Result<(), EngineError> {
        on_models!(self, m => m.set_training_state(model, state))
    }
}
