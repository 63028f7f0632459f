//! [`GpuModels`]: the models a GPU engine (a pack of one) or a pack of runs trains, MLPs
//! ([`PackedModels`]) or networks of layers ([`NetworkModels`]), behind the per-model calls
//! both answer.

use std::sync::Arc;

use super::context::{GpuContext, GpuError};
use super::network::NetworkModels;
use super::packed::{EpochJob, PackedModels};
use crate::data::{Dataset, SplitName};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Model, Params};

/// The models a GPU engine or pack trains: MLPs (`PackedModels`) or networks of layers
/// (`NetworkModels`), which answer the same per-model calls.
pub enum GpuModels {
    Mlp(Box<PackedModels>),
    Network(Box<NetworkModels>),
}

/// `$call` on whichever models a pack holds.
macro_rules! on_models {
    ($models:expr, $m:ident => $call:expr) => {
        match $models {
            GpuModels::Mlp($m) => $call,
            GpuModels::Network($m) => $call,
        }
    };
}

impl GpuModels {
    /// `models` models of `model`'s shape trained at up to `batch_size` rows a step.
    pub fn new(
        ctx: GpuContext,
        model: &Model,
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        Ok(match model {
            Model::Mlp { widths, .. } => GpuModels::Mlp(Box::new(PackedModels::new(
                ctx, widths, batch_size, models,
            )?)),
            Model::Network(net) => GpuModels::Network(Box::new(NetworkModels::new(
                ctx,
                Arc::clone(net),
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
            GpuModels::Mlp(m) => m.dispatches_per_step().ok(),
            GpuModels::Network(m) => Some(m.dispatches_per_step()),
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

    pub fn train_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<Vec<Option<Result<EpochStats, EngineError>>>, EngineError> {
        on_models!(self, m => m.train_epoch(jobs))
    }

    /// [`GpuModels::train_epoch`], awaiting its read-back (in a browser nothing may wait).
    pub async fn train_epoch_async(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<Vec<Option<Result<EpochStats, EngineError>>>, EngineError> {
        on_models!(self, m => m.train_epoch_async(jobs).await)
    }

    /// [`GpuModels::evaluate`], awaiting its read-back.
    pub async fn evaluate_async(
        &mut self,
        model: usize,
        split: SplitName,
    ) -> Result<EvalStats, EngineError> {
        on_models!(self, m => m.evaluate_async(model, split).await)
    }

    /// [`GpuModels::params`], awaiting its read-back.
    pub async fn params_async(&self, model: usize) -> Result<Params, EngineError> {
        on_models!(self, m => m.params_async(model).await)
    }

    /// [`GpuModels::training_state`], awaiting its read-back.
    pub async fn training_state_async(&self, model: usize) -> Result<TrainingState, EngineError> {
        on_models!(self, m => m.training_state_async(model).await)
    }

    pub fn upload(&mut self, model: usize, data: &Dataset) -> Result<(), EngineError> {
        on_models!(self, m => m.upload(model, data))
    }

    pub fn evaluate(&mut self, model: usize, split: SplitName) -> Result<EvalStats, EngineError> {
        on_models!(self, m => m.evaluate(model, split))
    }

    pub fn params(&self, model: usize) -> Result<Params, EngineError> {
        on_models!(self, m => m.params(model))
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

    pub fn training_state(&self, model: usize) -> Result<TrainingState, EngineError> {
        on_models!(self, m => m.training_state(model))
    }

    pub fn set_training_state(
        &mut self,
        model: usize,
        state: &TrainingState,
    ) -> Result<(), EngineError> {
        on_models!(self, m => m.set_training_state(model, state))
    }
}
