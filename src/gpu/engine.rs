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
use crate::engine::{Awaited, Engine, EngineError, EpochStats, EvalStats, TrainingState};
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

    fn train_epoch<'a>(
        &'a mut self,
        order: &'a [u32],
        hyper: &'a Hyper,
    ) -> Awaited<'a, EpochStats> {
        Box::pin(async move {
            let job = EpochJob { order, hyper };
            let mut out = self.models.train_epoch(&[Some(job)]).await?;
            out.pop().flatten().unwrap_or(Err(EngineError::NoData))
        })
    }

    fn evaluate(&mut self, split: SplitName) -> Awaited<'_, EvalStats> {
        Box::pin(self.models.evaluate(0, split))
    }

    fn params(&self) -> Awaited<'_, Params> {
        Box::pin(self.models.params(0))
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

    fn training_state(&self) -> Awaited<'_, TrainingState> {
        Box::pin(self.models.training_state(0))
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        self.models.set_training_state(0, state)
    }
}
