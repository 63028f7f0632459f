//! Recording and reading back a [`GpuModels`] epoch or evaluation: which models may take their
//! steps together, the step uniforms, the dispatches of a step, the stats.

use super::GpuModels;
use super::resident::{Resident, SplitOnDevice};
use crate::config::{GradientReduction, Hyper, Optimizer};
use crate::data::SplitName;
use crate::engine::{EngineError, EpochStats, EvalStats};
use crate::gpu::buffers::submit_for_read;
use crate::gpu::context::GpuError;
use crate::gpu::kernels::Family;
use crate::gpu::uniforms::{DropoutParams, ModelHyper, STEP_STRIDE, StepUniform};

/// One model's epoch: its order over the training split and its hyperparameters.
#[derive(Debug, Clone, Copy)]
pub struct EpochJob<'a> {
    pub order: &'a [u32],
    pub hyper: &'a Hyper,
}

/// What the models of a pack share beyond the step schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackSharing {
    /// Each model its own order and seed.
    OwnOrder,
    /// One dropout seed and one step count for all: the masks are drawn from the step
    /// uniforms, which hold them once for the pack.
    OneDropoutStream,
}

impl EpochJob<'_> {
    /// Whether this job, of a model that has taken `steps` optimiser steps, can take its steps
    /// in the same dispatches as `lead`'s (of a model at `lead_steps`): the pack's one rule.
    /// The same batch size and gradient reduction (one schedule), the same optimiser, for Adam
    /// the same β1, β2 and step count (its bias correction is one per step for the whole
    /// pack), and with [`PackSharing::OneDropoutStream`] the same seed and step count.
    pub fn shares_steps_with(
        &self,
        lead: &EpochJob<'_>,
        (steps, lead_steps): (u64, u64),
        sharing: PackSharing,
    ) -> bool {
        let (h, l) = (self.hyper, lead.hyper);
        let adam = l.optimizer == Optimizer::Adam;
        let schedule = h.batch_size == l.batch_size && h.gradient == l.gradient;
        let optimiser = h.optimizer == l.optimizer
            && (!adam
                || (h.adam_beta1, h.adam_beta2, steps) == (l.adam_beta1, l.adam_beta2, lead_steps));
        let stream = sharing == PackSharing::OwnOrder || (h.seed == l.seed && steps == lead_steps);
        schedule && optimiser && stream
    }
}

/// Called after every recorded dispatch with its kernel family.
pub(super) type Mark<'a> = &'a mut dyn FnMut(&mut wgpu::ComputePass<'_>, Family);

/// The mark of an ordinary (unprofiled) epoch.
pub(super) fn no_marks(_: &mut wgpu::ComputePass<'_>, _: Family) {}

/// An epoch's step schedule, as [`GpuModels::prepare_epoch`] wrote it.
#[derive(Default)]
pub(super) struct EpochPlan {
    /// Dispatch z: models 0..models (the last one with a job, plus one).
    pub models: usize,
    /// Models with a job.
    pub active: Vec<usize>,
    /// (slot, uniform) per training step.
    pub uniforms: Vec<(usize, StepUniform)>,
}

fn split_index(split: SplitName) -> usize {
    match split {
        SplitName::Train => 0,
        SplitName::Val => 1,
        SplitName::Test => 2,
    }
}

fn eval_stats(pairs: &[(f64, f64)], len: usize) -> EvalStats {
    let (loss, correct) = pairs
        .iter()
        .fold((0.0, 0.0), |(l, c), p| (l + p.0, c + p.1));
    let n = len.max(1) as f64;
    EvalStats {
        loss: loss / n,
        accuracy: correct / n,
        samples: len,
    }
}

impl GpuModels {
    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    pub(super) fn resident(&self) -> Result<&Resident, EngineError> {
        self.resident.as_ref().ok_or(EngineError::NoData)
    }

    /// What the pack's models share beyond the step schedule, as its plan needs.
    fn sharing(&self) -> PackSharing {
        match self.plan.draws_dropout() {
            true => PackSharing::OneDropoutStream,
            false => PackSharing::OwnOrder,
        }
    }

    /// Records one step or evaluation chunk of `split` (of `r`) at `step` over `rows` rows: the
    /// forward pass and the loss, the batch's sums (a training step's may be the update's),
    /// and while `training` the backward pass and the updates. `mark` runs after every
    /// dispatch with its kernel family (a profile writes a timestamp there).
    fn encode_step(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        r: &Resident,
        (split, step): (&SplitOnDevice, crate::gpu::kernels::StepRef<'_>),
        (rows, training): (u32, bool),
        mark: Mark<'_>,
    ) {
        let k = &self.kernels;
        for d in &split.forward {
            d.encode(k, pass, step, rows, training);
            mark(pass, d.family());
        }
        if !(training && self.plan.stats_in_update) {
            k.encode_batch_stats(pass, &split.xent, step);
            mark(pass, Family::BatchStats);
        }
        if training {
            for d in &r.backward {
                d.encode(k, pass, step, rows, true);
                mark(pass, d.family());
            }
        }
    }

    /// Records training steps `steps` of a prepared epoch.
    pub(super) fn encode_steps(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        plan: &EpochPlan,
        steps: std::ops::Range<usize>,
        mark: Mark<'_>,
    ) -> Result<(), EngineError> {
        let r = self.resident()?;
        let mut recorded = 0;
        let mut counted = |pass: &mut wgpu::ComputePass<'_>, family: Family| {
            recorded += 1;
            mark(pass, family)
        };
        let count = steps.len();
        for (slot, u) in &plan.uniforms[steps] {
            let at = (&r.splits[0], r.step(*slot, plan.models));
            self.encode_step(pass, r, at, (u.rows, true), &mut counted);
        }
        debug_assert_eq!(recorded, count * self.dispatches_per_step());
        Ok(())
    }

    /// Step uniforms for evaluating `split` in chunks of the workspace's capacity, from
    /// `first_model`.
    fn eval_uniforms(
        &self,
        split: &SplitOnDevice,
        first_model: usize,
    ) -> Vec<(usize, StepUniform)> {
        let capacity = self.plan.layout.capacity;
        (0..split.len.div_ceil(capacity))
            .map(|c| {
                let offset = c * capacity;
                let slot = split.first_slot + c;
                let uniform = StepUniform {
                    offset: offset as u32,
                    rows: capacity.min(split.len - offset) as u32,
                    scale: 1.0,
                    stat_slot: slot as u32,
                    first_model: first_model as u32,
                    ..Default::default()
                };
                (slot, uniform)
            })
            .collect()
    }

    fn write_uniforms(&self, r: &Resident, uniforms: &[(usize, StepUniform)]) {
        let (Some(lo), Some(hi)) = (
            uniforms.iter().map(|u| u.0).min(),
            uniforms.iter().map(|u| u.0).max(),
        ) else {
            return;
        };
        let mut bytes = vec![0u8; (hi - lo + 1) * STEP_STRIDE as usize];
        for (slot, u) in uniforms {
            let at = (slot - lo) * STEP_STRIDE as usize;
            bytes[at..at + std::mem::size_of::<StepUniform>()]
                .copy_from_slice(bytemuck::bytes_of(u));
        }
        self.ctx
            .queue
            .write_buffer(&r.uniforms, lo as u64 * STEP_STRIDE, &bytes);
    }

    /// Submits `encoder` after copying the stats of models `0..models`, and returns them as
    /// (loss sum, correct) pairs, `slots` per model.
    async fn read_stats(
        &self,
        r: &Resident,
        mut encoder: wgpu::CommandEncoder,
        models: usize,
    ) -> Result<Vec<(f64, f64)>, GpuError> {
        let bytes = (models * r.slots * 8) as u64;
        encoder.copy_buffer_to_buffer(&r.stats, 0, &r.staging, 0, bytes);
        let raw = self
            .ctx
            .scoped("an epoch", || {
                submit_for_read(&self.ctx, encoder, &r.staging, bytes)
            })??
            .await?;
        let values: &[f32] = bytemuck::cast_slice(&raw);
        Ok(values
            .chunks_exact(2)
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect())
    }

    /// Checks that `jobs` can share their steps (see [`EpochJob::shares_steps_with`]) and fit
    /// the pack, and returns the models with a job.
    fn check_jobs<'j>(
        &self,
        jobs: &'j [Option<EpochJob<'j>>],
    ) -> Result<Vec<(usize, &'j EpochJob<'j>)>, EngineError> {
        let r = self.resident()?;
        let train = &r.splits[0];
        if jobs.len() > self.models {
            return Err(EngineError::Mismatch(format!(
                "{} jobs for a pack of {} models",
                jobs.len(),
                self.models
            )));
        }
        let active: Vec<(usize, &EpochJob<'_>)> = jobs
            .iter()
            .enumerate()
            .filter_map(|(m, j)| j.as_ref().map(|j| (m, j)))
            .collect();
        let Some(&(lead_model, lead)) = active.first() else {
            return Ok(active);
        };
        for &(m, job) in &active {
            let h = job.hyper;
            if h.batch_size > self.batch_size || job.order.len() != train.len {
                return Err(EngineError::Mismatch(format!(
                    "the GPU engine was built for batch {} and {} training rows, got batch {} and {} rows",
                    self.batch_size,
                    train.len,
                    h.batch_size,
                    job.order.len()
                )));
            }
            let steps = (self.steps_taken[m], self.steps_taken[lead_model]);
            if !job.shares_steps_with(lead, steps, self.sharing()) {
                return Err(EngineError::Mismatch(format!(
                    "models {lead_model} and {m} of the pack cannot share steps: packed models \
                     need the same batch size, gradient reduction, (for Adam) β1, β2 and step \
                     count, and (with dropout) seed and step count"
                )));
            }
            if r.train_rows[m].is_none() {
                return Err(EngineError::NoData);
            }
        }
        // The training steps' uniform and stats slots come before the validation split's.
        let batch = lead.hyper.batch_size.max(1);
        let (steps, room) = (train.len.div_ceil(batch), r.splits[1].first_slot);
        if steps > room {
            return Err(EngineError::Mismatch(format!(
                "an epoch at batch {batch} takes {steps} steps; this pack was built for batch {} ({room} steps)",
                self.batch_size
            )));
        }
        Ok(active)
    }

    /// Checks `jobs` and writes what their epoch needs: each model's hyperparameters (models
    /// without a job marked as not training), the dropout seed, each order as pool rows, and
    /// the step uniforms.
    pub(super) fn prepare_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<EpochPlan, EngineError> {
        let active = self.check_jobs(jobs)?;
        let Some(&(lead_model, lead)) = active.first() else {
            return Ok(EpochPlan::default());
        };
        for m in 0..self.models {
            self.hyper_host[m] = match jobs.get(m).copied().flatten() {
                Some(j) => ModelHyper::new(j.hyper, self.hidden_activation(m)),
                None => ModelHyper {
                    training: 0,
                    ..self.hyper_host[m]
                },
            };
        }
        let q = &self.ctx.queue;
        q.write_buffer(&self.hyper, 0, bytemuck::cast_slice(&self.hyper_host));
        let seed = lead.hyper.seed;
        let r = self.resident.as_mut().ok_or(EngineError::NoData)?;
        if r.seed != Some(seed) {
            for d in &r.dropouts {
                let params = DropoutParams {
                    seed_lo: seed as u32,
                    seed_hi: (seed >> 32) as u32,
                    ..d.params
                };
                q.write_buffer(&d.buffer, 0, bytemuck::bytes_of(&params));
            }
            r.seed = Some(seed);
        }
        let r = self.resident()?;
        let train = &r.splits[0];
        for &(m, job) in &active {
            let rows = r.train_rows[m].as_ref().expect("checked with the jobs");
            let pool_order: Vec<u32> = job.order.iter().map(|&i| rows[i as usize]).collect();
            q.write_buffer(
                &train.indices,
                (m * train.index_ms * 4) as u64,
                bytemuck::cast_slice(&pool_order),
            );
        }
        let batch = lead.hyper.batch_size.max(1);
        let uniforms: Vec<(usize, StepUniform)> = (0..train.len.div_ceil(batch))
            .map(|s| {
                let offset = s * batch;
                let rows = batch.min(train.len - offset);
                // The optimiser step this batch takes (1-based), as the CPU counts it.
                let t = self.steps_taken[lead_model] + s as u64 + 1;
                let (c1, c2) = crate::cpu::ops::adam_corrections(lead.hyper, t);
                let uniform = StepUniform {
                    offset: offset as u32,
                    rows: rows as u32,
                    scale: match lead.hyper.gradient {
                        GradientReduction::Mean => 1.0 / rows as f32,
                        GradientReduction::Sum => 1.0,
                    },
                    adam_c1: c1 as f32,
                    adam_c2: c2 as f32,
                    stat_slot: s as u32,
                    first_model: 0,
                    dropout_epoch: (t >> 32) as u32,
                    dropout_step: t as u32,
                    ..Default::default()
                };
                (s, uniform)
            })
            .collect();
        self.write_uniforms(r, &uniforms);
        Ok(EpochPlan {
            // Dispatches cover models 0..=the last active one.
            models: active.last().map_or(0, |a| a.0) + 1,
            active: active.iter().map(|a| a.0).collect(),
            uniforms,
        })
    }

    /// Records an epoch's steps: every part but the last goes to the device as soon as it is
    /// recorded (Tuning::submit_every); the last, the validation pass and the read-back make
    /// the final submission, the one the host waits for. Returns it and how many were made.
    fn record_epoch(
        &self,
        plan: &EpochPlan,
        val_uniforms: &[(usize, StepUniform)],
    ) -> Result<(wgpu::CommandEncoder, usize), EngineError> {
        let r = self.resident()?;
        let steps = plan.uniforms.len();
        let mut parts = self.ctx.tuning.submission_parts(steps);
        let last_part = parts.pop().unwrap_or(0..steps);
        let descriptor = |label| wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        };
        for part in &parts {
            let mut encoder = self.encoder("epoch_part");
            {
                let mut pass = encoder.begin_compute_pass(&descriptor("epoch_part"));
                self.encode_steps(&mut pass, plan, part.clone(), &mut no_marks)?;
            }
            self.ctx.queue.submit([encoder.finish()]);
        }
        let mut encoder = self.encoder("epoch");
        {
            let mut pass = encoder.begin_compute_pass(&descriptor("epoch"));
            self.encode_steps(&mut pass, plan, last_part, &mut no_marks)?;
            let val = &r.splits[1];
            for (slot, u) in val_uniforms {
                let at = (val, r.step(*slot, plan.models));
                self.encode_step(&mut pass, r, at, (u.rows, false), &mut no_marks);
            }
        }
        Ok((encoder, parts.len() + 1))
    }

    /// Trains every model with a job for one epoch in the same dispatches (models without a
    /// job are left alone; see [`EpochJob::shares_steps_with`] for what jobs must share), then
    /// evaluates them on the validation split. Returns each job's epoch, or its own error (a
    /// model whose loss became NaN does not stop the others).
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn train_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<Vec<Option<Result<EpochStats, EngineError>>>, EngineError> {
        let plan = self.prepare_epoch(jobs)?;
        let mut out: Vec<Option<Result<EpochStats, EngineError>>> =
            jobs.iter().map(|_| None).collect();
        if plan.active.is_empty() {
            return Ok(out);
        }
        let r = self.resident()?;
        let [train, val, _] = &r.splits;
        let val_uniforms = self.eval_uniforms(val, 0);
        self.write_uniforms(r, &val_uniforms);
        let (encoder, submissions) = self.record_epoch(&plan, &val_uniforms)?;
        let pairs = self.read_stats(r, encoder, plan.models).await?;
        let steps = plan.uniforms.len();
        for &m in &plan.active {
            let own = &pairs[m * r.slots..(m + 1) * r.slots];
            let val_slots = &own[val.first_slot..val.first_slot + val_uniforms.len()];
            let mut stats = EpochStats {
                samples: train.len,
                steps,
                val: Some(eval_stats(val_slots, val.len)),
                ..Default::default()
            };
            let mut result = Ok(());
            for (s, &(loss, correct)) in own[..steps].iter().enumerate() {
                if !loss.is_finite() {
                    result = Err(EngineError::NonFiniteLoss {
                        step: s + 1,
                        value: loss,
                    });
                    break;
                }
                stats.loss_sum += loss;
                stats.correct += correct as usize;
            }
            out[m] = Some(result.map(|()| stats));
        }
        for &m in &plan.active {
            self.steps_taken[m] += steps as u64;
        }
        self.submissions = submissions;
        Ok(out)
    }

    /// Loss and accuracy of model `model` on a split (one model's dispatches only).
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn evaluate(
        &mut self,
        model: usize,
        split: SplitName,
    ) -> Result<EvalStats, EngineError> {
        self.check_model(model)?;
        let r = self.resident()?;
        let s = &r.splits[split_index(split)];
        if s.index_ms > 0 && r.train_rows[model].is_none() {
            return Err(EngineError::NoData);
        }
        let uniforms = self.eval_uniforms(s, model);
        self.write_uniforms(r, &uniforms);
        if split == SplitName::Train {
            // The training index list holds the last epoch's order; evaluate in split order.
            let rows = r.train_rows[model].as_ref().expect("checked above");
            self.ctx.queue.write_buffer(
                &s.indices,
                (model * s.index_ms * 4) as u64,
                bytemuck::cast_slice(rows),
            );
        }
        let mut encoder = self.encoder("evaluate");
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("evaluate"),
                timestamp_writes: None,
            });
            for (slot, u) in &uniforms {
                let at = (s, r.step(*slot, 1));
                self.encode_step(&mut pass, r, at, (u.rows, false), &mut no_marks);
            }
        }
        let pairs = self.read_stats(r, encoder, model + 1).await?;
        let own = &pairs[model * r.slots + s.first_slot..][..uniforms.len()];
        Ok(eval_stats(own, s.len))
    }
}
