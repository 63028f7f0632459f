//! [`GpuModels`]: K networks of one shape resident side by side on one device and trained in
//! the same dispatches (the model is each dispatch's z; `GpuEngine` is the pack of one). Every
//! per-model buffer holds K equal slices; hyperparameters, shuffling and stopping are per model.
//! The dispatches are the [`StepPlan`]'s. The images are resident once, as bytes of the file
//! they came from (the "pool"), and each model's splits are index lists into it, so models split
//! with different seeds share one copy. A whole epoch (every step, then the validation split) is
//! recorded at once with one read-back (submitted in parts where `Tuning::submit_every` says);
//! no float atomics, so a rerun repeats bit for bit; every buffer is allocated when the pack is
//! built or the data uploaded.

use std::sync::Arc;

use super::buffers::{staging, storage_init, storage_zeroed, submit_for_read};
use super::context::{GpuContext, GpuError};
use super::kernels::Kernels;
use super::plan::StepPlan;
use super::uniforms::{ModelHyper, activation_code};
use crate::engine::{EngineError, TrainingState};
use crate::model::{Activation, Network, Params};

mod dispatch;
mod epoch;
mod profile;
mod resident;

pub use epoch::{EpochJob, PackSharing};
pub use profile::{FamilyTime, StepProfile};
use resident::Resident;

pub struct GpuModels {
    ctx: GpuContext,
    kernels: Kernels,
    /// The network the pack was planned for, and per model the network its parameters came
    /// with (a fused plan's models may differ in their hidden activation).
    net: Arc<Network>,
    nets: Vec<Arc<Network>>,
    plan: StepPlan,
    models: usize,
    /// Parameters per model.
    count: usize,
    /// The most rows a training step takes.
    batch_size: usize,
    /// Every model's parameters and per-step operands: (models, layout.per_model) f32. The
    /// layout's capacity is also the evaluation chunk.
    work: wgpu::Buffer,
    /// Per model: (models, count) f32 each.
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    /// (models) ModelHyper, and what was last written to it.
    hyper: wgpu::Buffer,
    hyper_host: Vec<ModelHyper>,
    resident: Option<Resident>,
    /// Optimiser steps taken, per model.
    steps_taken: Vec<u64>,
    /// Command buffers the last training epoch was submitted in (Tuning::submit_every).
    submissions: usize,
}

impl GpuModels {
    /// How many models of `net` trained at `batch_size` fit the adapter's limits on one buffer
    /// and one binding (the workspace, every model's slice in one buffer, decides), capped at
    /// `cap`.
    pub fn max_models(ctx: &GpuContext, net: &Network, batch_size: usize, cap: usize) -> usize {
        let plan = StepPlan::new(net, batch_size, ctx.tuning.fuse_gather);
        let per_model = (4 * plan.layout.per_model as u64).max(1);
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        ((limit / per_model) as usize).clamp(1, cap.max(1))
    }

    /// Builds every pipeline and buffer for `models` networks `net` trained at up to
    /// `batch_size` rows a step. Parameters start at zero: load them with
    /// [`GpuModels::init_model`].
    pub fn new(
        ctx: GpuContext,
        net: &Arc<Network>,
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        let k = models.max(1);
        let kernels = Kernels::new(&ctx)?;
        let plan = StepPlan::new(net, batch_size, ctx.tuning.fuse_gather);
        let count = net.param_count;
        let bytes = |n: usize| (4 * k * n) as u64;
        let work = storage_zeroed(&ctx, "workspace", bytes(plan.layout.per_model))?;
        let best = storage_zeroed(&ctx, "best_params", bytes(count))?;
        let first = storage_zeroed(&ctx, "velocity", bytes(count))?;
        let second = storage_zeroed(&ctx, "adam_second_moment", bytes(count))?;
        let hyper_host = vec![ModelHyper::default(); k];
        let hyper = storage_init(&ctx, "model_hyper", bytemuck::cast_slice(&hyper_host))?;
        Ok(GpuModels {
            ctx,
            kernels,
            nets: vec![Arc::clone(net); k],
            net: Arc::clone(net),
            plan,
            models: k,
            count,
            batch_size: batch_size.max(1),
            work,
            best,
            first,
            second,
            hyper,
            hyper_host,
            resident: None,
            steps_taken: vec![0; k],
            submissions: 0,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    /// The compute dispatches one training step records.
    pub fn dispatches_per_step(&self) -> usize {
        self.plan.dispatches_per_step()
    }

    /// How many command buffers the last training epoch was submitted in.
    pub fn submissions_last_epoch(&self) -> usize {
        self.submissions
    }

    /// Fails unless `model` is one of the pack's models.
    fn check_model(&self, model: usize) -> Result<(), EngineError> {
        match model < self.models {
            true => Ok(()),
            false => Err(EngineError::Mismatch(format!(
                "model {model} of a pack of {}",
                self.models
            ))),
        }
    }

    /// The hidden activation model `model`'s hyperparameters carry: its network's in a fused
    /// plan, none where each layer applies its own.
    fn hidden_activation(&self, model: usize) -> Activation {
        match self.plan.activation_per_model {
            true => (self.nets[model].dense_stack()).map_or(Activation::None, |s| s.1),
            false => Activation::None,
        }
    }

    /// Model `model`'s slice of a per-model parameter-sized buffer (best, first, second), in
    /// bytes: (offset, length).
    fn slice_of(&self, model: usize) -> (u64, u64) {
        let bytes = (self.count * 4) as u64;
        (model as u64 * bytes, bytes)
    }

    /// Model `model`'s parameters in the workspace, in bytes: (offset, length).
    fn params_at(&self, model: usize) -> (u64, u64) {
        let layout = &self.plan.layout;
        let at = (model * layout.per_model + layout.params) * 4;
        (at as u64, (self.count * 4) as u64)
    }

    /// Whether parameters of `net` train in this pack: the pack's network, or for a fused plan
    /// one of the same widths (its hidden activation is the model's own).
    fn takes(&self, net: &Network) -> bool {
        match self.plan.activation_per_model {
            true => net.dense_stack().map(|s| s.0) == self.net.dense_stack().map(|s| s.0),
            false => *net == *self.net,
        }
    }

    /// Loads model `model`'s starting parameters (also as its best so far).
    pub fn init_model(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.set_params(model, params)?;
        let (at, _) = self.slice_of(model);
        self.ctx
            .queue
            .write_buffer(&self.best, at, bytemuck::cast_slice(&params.values));
        Ok(())
    }

    /// Replaces model `model`'s parameters (and, for a fused plan, its hidden activation) and
    /// resets its optimiser state.
    pub fn set_params(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.check_model(model)?;
        if !self.takes(&params.model) {
            return Err(EngineError::params_mismatch(&self.nets[model], params));
        }
        self.nets[model] = Arc::clone(&params.model);
        let (at, bytes) = self.slice_of(model);
        let q = &self.ctx.queue;
        let values = bytemuck::cast_slice(&params.values);
        q.write_buffer(&self.work, self.params_at(model).0, values);
        let zeros = vec![0u8; bytes as usize];
        q.write_buffer(&self.first, at, &zeros);
        q.write_buffer(&self.second, at, &zeros);
        self.steps_taken[model] = 0;
        if self.plan.activation_per_model {
            let hidden = self.hidden_activation(model);
            self.hyper_host[model].activation = activation_code(hidden);
            self.ctx.queue.write_buffer(
                &self.hyper,
                (model * std::mem::size_of::<ModelHyper>()) as u64,
                bytemuck::bytes_of(&self.hyper_host[model]),
            );
        }
        Ok(())
    }
}

impl GpuModels {
    /// Reads `parts` (buffer, byte offset, bytes) back through the staging buffer, one after
    /// another.
    async fn read_slices(
        &self,
        parts: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<f32>, EngineError> {
        let total: u64 = parts.iter().map(|p| p.2).sum();
        let fresh;
        let staging_buf = match &self.resident {
            Some(r) => &r.staging,
            None => {
                fresh = staging(&self.ctx, "params_staging", total)?;
                &fresh
            }
        };
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for &(buffer, offset, bytes) in parts {
            encoder.copy_buffer_to_buffer(buffer, offset, staging_buf, at, bytes);
            at += bytes;
        }
        let raw = submit_for_read(&self.ctx, encoder, staging_buf, total)?.await?;
        Ok(bytemuck::cast_slice(&raw).to_vec())
    }

    /// A copy of model `model`'s parameters.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn params(&self, model: usize) -> Result<Params, EngineError> {
        self.check_model(model)?;
        let (at, bytes) = self.params_at(model);
        let values = self.read_slices(&[(&self.work, at, bytes)]).await?;
        Ok(Params {
            model: Arc::clone(&self.nets[model]),
            values,
        })
    }

    /// Copies `bytes` from `from` at `from_at` to `to` at `to_at` (on the device).
    fn copy(
        &self,
        (from, from_at): (&wgpu::Buffer, u64),
        (to, to_at): (&wgpu::Buffer, u64),
        bytes: u64,
    ) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(from, from_at, to, to_at, bytes);
        self.ctx.queue.submit([encoder.finish()]);
    }

    /// Copies model `model`'s parameters aside as its best so far (on the device).
    pub fn keep_best(&mut self, model: usize) -> Result<(), EngineError> {
        self.check_model(model)?;
        let ((params, bytes), (best, _)) = (self.params_at(model), self.slice_of(model));
        self.copy((&self.work, params), (&self.best, best), bytes);
        Ok(())
    }

    /// Makes model `model`'s kept best parameters current again.
    pub fn restore_best(&mut self, model: usize) -> Result<(), EngineError> {
        self.check_model(model)?;
        let ((params, bytes), (best, _)) = (self.params_at(model), self.slice_of(model));
        self.copy((&self.best, best), (&self.work, params), bytes);
        Ok(())
    }

    /// Model `model`'s parameters, best, optimiser moments and step count.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn training_state(&self, model: usize) -> Result<TrainingState, EngineError> {
        self.check_model(model)?;
        let (at, bytes) = self.slice_of(model);
        let values = self
            .read_slices(&[
                (&self.work, self.params_at(model).0, bytes),
                (&self.best, at, bytes),
                (&self.first, at, bytes),
                (&self.second, at, bytes),
            ])
            .await?;
        let n = self.count;
        Ok(TrainingState {
            params: values[..n].to_vec(),
            best: values[n..2 * n].to_vec(),
            first: values[2 * n..3 * n].to_vec(),
            second: values[3 * n..4 * n].to_vec(),
            step: self.steps_taken[model],
        })
    }

    /// Restores what [`GpuModels::training_state`] returned into model `model`.
    pub fn set_training_state(
        &mut self,
        model: usize,
        state: &TrainingState,
    ) -> Result<(), EngineError> {
        self.check_model(model)?;
        state.check_len(self.count)?;
        let (at, _) = self.slice_of(model);
        let params = self.params_at(model).0;
        for (buffer, at, values) in [
            (&self.work, params, &state.params),
            (&self.best, at, &state.best),
            (&self.first, at, &state.first),
            (&self.second, at, &state.second),
        ] {
            self.ctx
                .queue
                .write_buffer(buffer, at, bytemuck::cast_slice(values));
        }
        self.steps_taken[model] = state.step;
        Ok(())
    }
}
