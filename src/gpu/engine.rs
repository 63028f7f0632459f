//! `GpuEngine`: one model on the GPU, the [`Engine`] over a pack of one ([`GpuModels`] with
//! K = 1). The dataset is resident on the device as bytes; per epoch the
//! host uploads the shuffled indices and one 256-byte uniform per step, records every step of
//! the epoch and the validation pass into one command buffer, and reads back one small buffer
//! of per-step (loss sum, correct) pairs. Buffers, bind groups and pipelines are made once.

use std::sync::Arc;

use super::context::{GpuContext, GpuError};
use super::models::{EpochJob, GpuModels};
use crate::config::Hyper;
use crate::data::{Dataset, SplitName};
use crate::engine::{AwaitedEngine, Engine, EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::Params;

pub struct GpuEngine {
    models: GpuModels,
}

impl GpuEngine {
    /// Builds every pipeline and workspace buffer for `params` trained at `batch_size`.
    pub fn new(ctx: GpuContext, params: &Params, batch_size: usize) -> Result<Self, GpuError> {
        let mut models = GpuModels::new(ctx, &params.model, batch_size, 1)?;
        models.init_model(0, params).map_err(|e| GpuError::Device {
            what: "loading parameters".into(),
            message: e.to_string(),
        })?;
        Ok(GpuEngine { models })
    }

    /// How many command buffers the last training epoch was submitted in.
    pub fn submissions_last_epoch(&self) -> usize {
        self.models.submissions_last_epoch()
    }
}

/// The training loop's calls, awaited: how a page trains on the GPU without blocking.
impl AwaitedEngine for GpuEngine {
    async fn train_epoch(
        &mut self,
        order: &[u32],
        hyper: &Hyper,
    ) -> Result<EpochStats, EngineError> {
        let job = EpochJob { order, hyper };
        let mut out = self.models.train_epoch(&[Some(job)]).await?;
        out.pop().flatten().unwrap_or(Err(EngineError::NoData))
    }

    async fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        self.models.evaluate(0, split).await
    }

    async fn params(&self) -> Result<Params, EngineError> {
        self.models.params(0).await
    }

    async fn training_state(&self) -> Result<TrainingState, EngineError> {
        self.models.training_state(0).await
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        Engine::keep_best(self)
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        Engine::restore_best(self)
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        self.models.describe()
    }

    fn dispatches_per_step(&self) -> Option<usize> {
        Some(self.models.dispatches_per_step())
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        self.models.upload(0, &data)
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        pollster::block_on(AwaitedEngine::train_epoch(self, order, hyper))
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        pollster::block_on(AwaitedEngine::evaluate(self, split))
    }

    fn params(&self) -> Result<Params, EngineError> {
        pollster::block_on(AwaitedEngine::params(self))
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        self.models.set_params(0, params)
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.models.keep_best(0)
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.models.restore_best(0)
    }

    fn training_state(&self) -> Result<TrainingState, EngineError> {
        pollster::block_on(AwaitedEngine::training_state(self))
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        self.models.set_training_state(0, state)
    }
}
