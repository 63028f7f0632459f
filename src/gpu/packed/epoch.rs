//! Recording and reading back a [`PackedModels`] epoch or evaluation, and exchanging one
//! model's parameters and optimiser state with the host.

use super::PackSharing;
use super::*;
use crate::gpu::kernels::Family;

/// Called after every recorded dispatch with its kernel family.
pub(super) type Mark<'a> = &'a mut dyn FnMut(&mut wgpu::ComputePass<'_>, Family);

/// The mark of an ordinary (unprofiled) epoch.
pub(super) fn no_marks(_: &mut wgpu::ComputePass<'_>, _: Family) {}

/// A packed epoch's step schedule, as [`PackedModels::prepare_epoch`] wrote it.
#[derive(Default)]
pub(super) struct EpochPlan {
    /// Dispatch z: models 0..models (the last one with a job, plus one).
    pub models: usize,
    /// Models with a job.
    pub active: Vec<usize>,
    /// (slot, uniform) per training step.
    pub uniforms: Vec<(usize, StepUniform)>,
}

impl Resident {
    /// Step slot `slot`, dispatched over `models` models.
    fn step(&self, slot: usize, models: usize) -> StepRef<'_> {
        StepRef {
            group: &self.step_group,
            slot: slot as u32,
            models: models as u32,
        }
    }
}

impl PackedModels {
    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    fn resident(&self) -> Result<&Resident, EngineError> {
        self.resident.as_ref().ok_or(EngineError::NoData)
    }

    /// Records the forward pass and the loss for one step slot of `rows` rows over `models`
    /// models; with `batch_stats` also the batch's sums (training steps leave that to the
    /// output layer's matmul_update). `mark` runs after every dispatch with its kernel family (a profile
    /// writes a timestamp there; training passes [`no_marks`]).
    fn encode_forward(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        split: &SplitOnDevice,
        step: StepRef<'_>,
        rows: u32,
        batch_stats: bool,
        mark: Mark<'_>,
    ) {
        let k = &self.kernels;
        if split.forward_gather_group.is_none() {
            k.encode_gather_batch(pass, &split.gather_group, step, rows, self.widths[0] as u32);
            mark(pass, Family::Gather);
        }
        let last = self.layers.len() - 1;
        for (l, v) in self.layers.iter().enumerate() {
            match (&split.forward_gather_group, &split.forward_xent_group) {
                (Some(group), _) if l == 0 => {
                    k.encode_matmul_gather(pass, group, step, rows, v.fan_out as u32);
                    mark(pass, Family::MatmulForwardGather);
                }
                (_, Some(group)) if l == last => {
                    k.encode_matmul_softmax_xent(pass, group, step, rows);
                    mark(pass, Family::MatmulForwardXent);
                }
                _ => {
                    let forward = &self.layer_groups[l].forward;
                    k.encode_matmul(pass, forward, step, rows, v.fan_out as u32);
                    mark(pass, Family::MatmulForward);
                }
            }
        }
        if split.forward_xent_group.is_none() {
            k.encode_softmax_xent(pass, &split.xent_group, step, rows);
            mark(pass, Family::SoftmaxXent);
        }
        if batch_stats {
            k.encode_batch_stats(pass, &split.xent_group, step);
            mark(pass, Family::BatchStats);
        }
    }

    /// Records the backward pass and the optimiser step: from the output layer down, the
    /// input gradient into the layer below (where matmul_softmax_xent has not already written
    /// it), then every layer's weight and bias gradient applied in place (matmul_update, one
    /// dispatch up to eight layers; the output layer's also sums the batch's losses). The
    /// input gradients read the old weights, so they are all recorded first.
    fn encode_backward_and_update(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        step: StepRef<'_>,
        rows: u32,
        updates: &[UpdateDispatch],
        softmax_fused: bool,
        mark: Mark<'_>,
    ) {
        let k = &self.kernels;
        let last = self.layers.len() - 1;
        for (l, v) in self.layers.iter().enumerate().rev() {
            let done = softmax_fused && l == last;
            if let (Some(input_grad), false) = (&self.layer_groups[l].input_grad, done) {
                k.encode_matmul(pass, input_grad, step, rows, v.fan_in as u32);
                mark(pass, Family::MatmulInputGrad);
            }
        }
        for update in updates {
            k.encode_matmul_update(pass, &update.group, step, update.tiles);
            mark(pass, Family::MatmulWeightGrad);
        }
    }

    /// Compute dispatches one training step records, from the same choices
    /// [`PackedModels::encode_steps`] makes (which checks, with debug assertions on, that it
    /// recorded this many): the gather fused into the first matmul or not, the softmax fused
    /// into the output layer's or not (it then also writes the input gradient below), one
    /// forward matmul per layer, one input gradient per layer below the output layer's, one
    /// matmul_update per eight layers. Known once the dataset is uploaded.
    pub fn dispatches_per_step(&self) -> Result<usize, EngineError> {
        let r = self.resident()?;
        let train = &r.splits[0];
        let softmax_fused = train.forward_xent_group.is_some();
        let last = self.layers.len() - 1;
        let gather = usize::from(train.forward_gather_group.is_none());
        let softmax = usize::from(!softmax_fused);
        let input_grads = (0..self.layers.len())
            .filter(|&l| self.layer_groups[l].input_grad.is_some() && !(softmax_fused && l == last))
            .count();
        Ok(gather + self.layers.len() + softmax + input_grads + r.updates.len())
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
            let at = r.step(*slot, plan.models);
            self.encode_forward(pass, &r.splits[0], at, u.rows, false, &mut counted);
            let train = &r.splits[0];
            let softmax_fused = train.forward_xent_group.is_some();
            self.encode_backward_and_update(
                pass,
                at,
                u.rows,
                &r.updates,
                softmax_fused,
                &mut counted,
            );
        }
        debug_assert_eq!(recorded, count * self.dispatches_per_step()?);
        Ok(())
    }

    /// Step uniforms for evaluating `split` in chunks of `capacity` rows, from `first_model`.
    fn eval_uniforms(
        &self,
        split: &SplitOnDevice,
        first_model: usize,
    ) -> Vec<(usize, StepUniform)> {
        (0..split.len.div_ceil(self.layout.capacity))
            .map(|c| {
                let offset = c * self.layout.capacity;
                let rows = self.layout.capacity.min(split.len - offset);
                let slot = split.first_slot + c;
                (
                    slot,
                    StepUniform {
                        offset: offset as u32,
                        rows: rows as u32,
                        scale: 1.0,
                        stat_slot: slot as u32,
                        first_model: first_model as u32,
                        ..Default::default()
                    },
                )
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
        let raw = submit_for_read(&self.ctx, encoder, &r.staging, bytes)?.await?;
        let values: &[f32] = bytemuck::cast_slice(&raw);
        Ok(values
            .chunks_exact(2)
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect())
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

    /// Checks `jobs` and writes what their epoch needs: each model's hyperparameters (models
    /// without a job marked as not training), its order as pool rows, and the step uniforms.
    /// Jobs must agree on the batch size and gradient reduction (one step schedule for all)
    /// and, for Adam, on β1, β2 and the steps taken (one bias correction per step).
    pub(super) fn prepare_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<EpochPlan, EngineError> {
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
            return Ok(EpochPlan::default());
        };
        let batch = lead.hyper.batch_size;
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
            if !job.shares_steps_with(lead, steps, PackSharing::OwnOrder) {
                return Err(EngineError::Mismatch(format!(
                    "models {lead_model} and {m} of the pack cannot share steps: packed models \
                     need the same batch size, gradient reduction and (for Adam) β1, β2 and step count"
                )));
            }
            if r.train_rows[m].is_none() {
                return Err(EngineError::NoData);
            }
        }
        for m in 0..self.models {
            self.hyper_host[m] = match jobs.get(m).copied().flatten() {
                Some(j) => ModelHyper::new(j.hyper, self.activation_of(m)),
                None => ModelHyper {
                    training: 0,
                    ..self.hyper_host[m]
                },
            };
        }
        self.ctx
            .queue
            .write_buffer(&self.hyper, 0, bytemuck::cast_slice(&self.hyper_host));
        let r = self.resident()?;
        let train = &r.splits[0];
        for &(m, job) in &active {
            let rows = r.train_rows[m].as_ref().expect("checked above");
            let pool_order: Vec<u32> = job.order.iter().map(|&i| rows[i as usize]).collect();
            self.ctx.queue.write_buffer(
                &train.indices,
                (m * train.index_ms * 4) as u64,
                bytemuck::cast_slice(&pool_order),
            );
        }
        let steps = train.len.div_ceil(batch);
        let mut uniforms = Vec::with_capacity(steps);
        for s in 0..steps {
            let offset = s * batch;
            let rows = batch.min(train.len - offset);
            let t = self.steps_taken[lead_model] + s as u64 + 1;
            let (c1, c2) = crate::cpu::ops::adam_corrections(lead.hyper, t);
            uniforms.push((
                s,
                StepUniform {
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
                    ..Default::default()
                },
            ));
        }
        self.write_uniforms(r, &uniforms);
        Ok(EpochPlan {
            // Dispatches cover models 0..=the last active one.
            models: active.last().map_or(0, |a| a.0) + 1,
            active: active.iter().map(|a| a.0).collect(),
            uniforms,
        })
    }

    /// Trains every model with a job for one epoch in the same dispatches (models without a
    /// job are left alone; see [`PackedModels::prepare_epoch`] for what jobs must share), then
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
        // Every part but the last goes to the device as soon as it is recorded
        // (Tuning::submit_every); the last, the validation pass and the read-back make the
        // final submission, the one the host waits for.
        let steps = plan.uniforms.len();
        let mut parts = self.ctx.tuning.submission_parts(steps);
        let last_part = parts.pop().unwrap_or(0..steps);
        for part in &parts {
            let mut encoder = self.encoder("epoch_part");
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("epoch_part"),
                    timestamp_writes: None,
                });
                self.encode_steps(&mut pass, &plan, part.clone(), &mut no_marks)?;
            }
            self.ctx.queue.submit([encoder.finish()]);
        }
        let submissions = parts.len() + 1;
        let mut encoder = self.encoder("epoch");
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("epoch"),
                timestamp_writes: None,
            });
            self.encode_steps(&mut pass, &plan, last_part, &mut no_marks)?;
            for (slot, u) in &val_uniforms {
                let at = r.step(*slot, plan.models);
                self.encode_forward(&mut pass, val, at, u.rows, true, &mut no_marks);
            }
        }
        let pairs = self.read_stats(r, encoder, plan.models).await?;
        for &m in &plan.active {
            let own = &pairs[m * r.slots..(m + 1) * r.slots];
            let mut stats = EpochStats {
                samples: train.len,
                steps,
                val: Some(Self::eval_stats(
                    &own[val.first_slot..val.first_slot + val_uniforms.len()],
                    val.len,
                )),
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
        let s = &r.splits[match split {
            SplitName::Train => 0,
            SplitName::Val => 1,
            SplitName::Test => 2,
        }];
        if s.index_ms > 0 && r.train_rows[model].is_none() {
            return Err(EngineError::NoData);
        }
        let uniforms = self.eval_uniforms(s, model);
        self.write_uniforms(r, &uniforms);
        let mut encoder = self.encoder("evaluate");
        if split == SplitName::Train {
            // The training index list holds the last epoch's order; evaluate in split order.
            let rows = r.train_rows[model].as_ref().expect("checked above");
            self.ctx.queue.write_buffer(
                &s.indices,
                (model * s.index_ms * 4) as u64,
                bytemuck::cast_slice(rows),
            );
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("evaluate"),
                timestamp_writes: None,
            });
            for (slot, u) in &uniforms {
                let at = r.step(*slot, 1);
                self.encode_forward(&mut pass, s, at, u.rows, true, &mut no_marks);
            }
        }
        let pairs = self.read_stats(r, encoder, model + 1).await?;
        let own = &pairs[model * r.slots + s.first_slot..][..uniforms.len()];
        Ok(Self::eval_stats(own, s.len))
    }

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

    pub(crate) fn activation_of(&self, model: usize) -> Activation {
        crate::gpu::uniforms::activation_of_code(self.hyper_host[model].activation)
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

    /// Restores what [`PackedModels::training_state`] returned into model `model`.
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
            self.ctx.queue.write_buffer(buffer, at, f32_bytes(values));
        }
        self.steps_taken[model] = state.step;
        Ok(())
    }
}
