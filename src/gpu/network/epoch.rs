//! A [`NetworkModels`]' data and epochs: making the splits resident, recording a step,
//! training a packed epoch, evaluating, and each model's parameters and state.

use super::*;

impl NetworkModels {
    pub fn batch_size(&self) -> usize {
        self.capacity
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn check_model(&self, model: usize) -> Result<(), EngineError> {
        crate::gpu::packed::check_model(model, self.models)
    }

    /// Byte offsets of model `model`'s parameters in the workspace and in the per-parameter
    /// buffers (best, first, second), and their length in bytes.
    fn offsets(&self, model: usize) -> (u64, u64, u64) {
        let bytes = 4 * self.count as u64;
        (
            model as u64 * 4 * self.work_ms as u64,
            model as u64 * bytes,
            bytes,
        )
    }

    /// As `encode_step` records a training step: the gather, the forward passes, the loss and
    /// its sums, the backward passes and updates.
    pub fn dispatches_per_step(&self) -> usize {
        1 + self.forward.len() + 2 + self.backward.len()
    }

    /// Loads model `model`'s starting parameters (also as its best so far).
    pub fn init_model(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.set_params(model, params)?;
        let (_, at, _) = self.offsets(model);
        self.ctx
            .queue
            .write_buffer(&self.best, at, bytemuck::cast_slice(&params.values));
        Ok(())
    }

    /// Replaces model `model`'s parameters and resets its optimiser state.
    pub fn set_params(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.check_model(model)?;
        if params.model != self.net {
            return Err(EngineError::params_mismatch(&self.net, params));
        }
        let (work_at, at, bytes) = self.offsets(model);
        let q = &self.ctx.queue;
        q.write_buffer(&self.work, work_at, bytemuck::cast_slice(&params.values));
        let zeros = vec![0u8; bytes as usize];
        q.write_buffer(&self.first, at, &zeros);
        q.write_buffer(&self.second, at, &zeros);
        self.steps_taken[model] = 0;
        Ok(())
    }

    /// Makes model `model`'s dataset resident. The first upload copies the splits to the
    /// device; every model of a pack trains on that same data (one seed, one split).
    pub fn upload(&mut self, model: usize, data: &Dataset) -> Result<(), EngineError> {
        self.check_model(model)?;
        if data.features != self.input_len || data.classes != self.net.classes() {
            return Err(EngineError::data_mismatch(&self.net, data));
        }
        if let Some(r) = &self.resident {
            let same = |s: &SplitOnDevice, split: &Split| {
                s.len == split.len
                    && s.pixels_and_labels.0 == split.pixels
                    && s.pixels_and_labels.1 == split.labels
            };
            let held = r.splits.iter().zip([&data.train, &data.val, &data.test]);
            return match held.into_iter().all(|(s, split)| same(s, split)) {
                true => Ok(()),
                false => Err(EngineError::Mismatch(
                    "the models of a network pack train on one split of one dataset (the same seed and val_fraction)".into(),
                )),
            };
        }
        let c = self.capacity;
        let train_steps = Self::chunks(data.train.len, c);
        let val_chunks = Self::chunks(data.val.len, c);
        let test_chunks = Self::chunks(data.test.len, c);
        let slots = train_steps + val_chunks + test_chunks;
        let stat_bytes = (8 * slots * self.models) as u64;
        let stats = storage_zeroed(&self.ctx, "network_stats", stat_bytes)?;
        let staging_buf = staging(&self.ctx, "network_stats_staging", stat_bytes)?;
        let uniforms = uniform_init(&self.ctx, "steps", &vec![0u8; slots * STEP_STRIDE as usize])?;
        let step_group = self.kernels.step_group(&self.ctx, &uniforms);
        let splits = [
            self.split_on_device("train", &data.train, 0, &stats, slots)?,
            self.split_on_device("val", &data.val, train_steps, &stats, slots)?,
            self.split_on_device("test", &data.test, train_steps + val_chunks, &stats, slots)?,
        ];
        self.resident = Some(Resident {
            splits,
            uniforms,
            step_group,
            stats,
            staging: staging_buf,
            slots,
        });
        Ok(())
    }

    /// Makes one split resident: its pixels, z-score statistics, labels, rows to read, and its
    /// gather and loss bind groups.
    fn split_on_device(
        &self,
        name: &str,
        split: &Split,
        first_slot: usize,
        stats: &wgpu::Buffer,
        slots: usize,
    ) -> Result<SplitOnDevice, GpuError> {
        let features = self.input_len;
        let image_stats: Vec<f32> = split
            .pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (mean, scale) = image_stats(img);
                [mean as f32, scale as f32]
            })
            .collect();
        let labels: Vec<u32> = split.labels.iter().map(|&l| l as u32).collect();
        let identity: Vec<u32> = (0..split.len as u32).collect();
        let pixels = storage_init(&self.ctx, &format!("{name}_pixels"), &split.pixels)?;
        let stats_buf = storage_init(
            &self.ctx,
            &format!("{name}_image_stats"),
            bytemuck::cast_slice(&image_stats),
        )?;
        let labels_buf = storage_init(
            &self.ctx,
            &format!("{name}_labels"),
            bytemuck::cast_slice(&labels),
        )?;
        let indices = storage_init(
            &self.ctx,
            &format!("{name}_indices"),
            bytemuck::cast_slice(&identity),
        )?;
        let work_ms = self.work_ms;
        let gather_p = uniform_init(
            &self.ctx,
            &format!("{name}_gather"),
            bytemuck::bytes_of(&GatherParams {
                features: u(features),
                index_ms: 0,
                work_ms,
                x_off: u(self.x),
            }),
        )?;
        let xent_p = uniform_init(
            &self.ctx,
            &format!("{name}_xent"),
            bytemuck::bytes_of(&XentParams {
                classes: u(self.net.classes()),
                capacity: u(self.capacity),
                index_ms: 0,
                slots: u(slots),
                work_ms,
                logits_off: u(self.logits),
                dz_off: u(self.dz),
                row_loss_off: u(self.row_loss),
            }),
        )?;
        let gather = bind(
            &self.ctx,
            &self.kernels.gather_layout,
            &format!("{name}_gather"),
            &[&pixels, &stats_buf, &indices, &self.work, &gather_p],
        );
        let xent = bind(
            &self.ctx,
            &self.kernels.xent_layout,
            &format!("{name}_xent"),
            &[&self.work, &labels_buf, &indices, stats, &xent_p],
        );
        Ok(SplitOnDevice {
            len: split.len,
            indices,
            gather,
            xent,
            first_slot,
            pixels_and_labels: (split.pixels.clone(), split.labels.clone()),
            _buffers: vec![pixels, stats_buf, labels_buf, gather_p, xent_p],
        })
    }

    /// Slots a split of `len` rows takes at `rows` a step or chunk.
    fn chunks(len: usize, rows: usize) -> usize {
        len.div_ceil(rows.max(1))
    }

    /// Records one step or evaluation chunk of `split` at uniform slot `slot`, for `models`
    /// models from the slot's first.
    fn encode_step(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        r: &Resident,
        (split, slot, models): (usize, usize, usize),
        training: bool,
    ) {
        let k = &self.kernels;
        let s = &r.splits[split];
        let step = StepRef {
            group: &r.step_group,
            slot: u(slot),
            models: u(models),
        };
        let capacity = u(self.capacity);
        k.encode_gather_batch(pass, &s.gather, step, capacity, u(self.input_len));
        for d in &self.forward {
            self.encode(pass, d, step, training);
        }
        k.encode_softmax_xent(pass, &s.xent, step, capacity);
        k.encode_batch_stats(pass, &s.xent, step);
        if training {
            for d in &self.backward {
                self.encode(pass, d, step, true);
            }
        }
    }

    /// Records `d`; `training` picks a forward dropout's masking over its copy.
    fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        d: &Dispatch,
        step: StepRef<'_>,
        training: bool,
    ) {
        let k = &self.kernels;
        match d {
            Dispatch::Conv(entry, group, len) => {
                k.encode_conv_family(pass, *entry, group, step, *len)
            }
            Dispatch::Activation(backward, group, len) => {
                k.encode_activation(pass, *backward, group, step, *len)
            }
            Dispatch::Dropout(group, len) => k.encode_dropout_forward(pass, group, step, *len),
            Dispatch::ForwardDropout { train, eval, len } => {
                let group = if training { train } else { eval };
                k.encode_dropout_forward(pass, group, step, *len)
            }
            Dispatch::Matmul(group, m, n) => k.encode_matmul(pass, group, step, *m, *n),
            Dispatch::Update(group, len) => k.encode_update(pass, group, step, *len),
        }
    }

    /// The evaluation chunks of `s` as step uniforms from model `first_model` on.
    fn eval_uniforms(&self, s: &SplitOnDevice, first_model: usize) -> Vec<(usize, StepUniform)> {
        (0..Self::chunks(s.len, self.capacity))
            .map(|c| {
                let offset = c * self.capacity;
                let slot = s.first_slot + c;
                let uniform = StepUniform {
                    offset: u(offset),
                    rows: u(self.capacity.min(s.len - offset)),
                    scale: 1.0,
                    stat_slot: u(slot),
                    first_model: u(first_model),
                    ..Default::default()
                };
                (slot, uniform)
            })
            .collect()
    }

    fn write_uniforms(&self, r: &Resident, uniforms: &[(usize, StepUniform)]) {
        for (slot, uniform) in uniforms {
            self.ctx.queue.write_buffer(
                &r.uniforms,
                *slot as u64 * STEP_STRIDE,
                bytemuck::bytes_of(uniform),
            );
        }
    }

    /// Records `record`, copies the stats to staging, submits, and returns each model's
    /// (loss sum, correct) per slot.
    async fn run_and_read(
        &self,
        r: &Resident,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<Vec<Vec<(f64, f64)>>, GpuError> {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            record(&mut pass);
        }
        let bytes = r.stats.size();
        encoder.copy_buffer_to_buffer(&r.stats, 0, &r.staging, 0, bytes);
        let raw = self
            .ctx
            .scoped("network epoch", || {
                submit_for_read(&self.ctx, encoder, &r.staging, bytes)
            })??
            .await?;
        let values: &[f32] = bytemuck::cast_slice(&raw);
        Ok(values
            .chunks_exact(2 * r.slots)
            .take(self.models)
            .map(|m| {
                m.chunks_exact(2)
                    .map(|v| (v[0] as f64, v[1] as f64))
                    .collect()
            })
            .collect())
    }

    fn evaluation(stats: &[(f64, f64)], s: &SplitOnDevice, capacity: usize) -> EvalStats {
        let slots = &stats[s.first_slot..s.first_slot + Self::chunks(s.len, capacity)];
        let (loss, correct) = slots
            .iter()
            .fold((0.0, 0.0), |(l, c), v| (l + v.0, c + v.1));
        let n = s.len.max(1) as f64;
        EvalStats {
            loss: loss / n,
            accuracy: correct / n,
            samples: s.len,
        }
    }

    /// One packed epoch: every model with a job takes its steps (in the same dispatches),
    /// then the validation split is evaluated for all; models without a job are left as they
    /// are. The jobs must share what the step uniforms hold: the order, the batch, the
    /// gradient's reduction, the optimiser and Adam's betas, the seed, and the step count.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn train_epoch(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<Vec<Option<Result<EpochStats, EngineError>>>, EngineError> {
        let active: Vec<(usize, &EpochJob<'_>)> = jobs
            .iter()
            .enumerate()
            .filter_map(|(m, j)| j.as_ref().map(|j| (m, j)))
            .collect();
        let Some(&(lead_model, lead)) = active.first() else {
            return Ok(jobs.iter().map(|_| None).collect());
        };
        let (hyper, order) = (lead.hyper, lead.order);
        let shared = |j: &EpochJob<'_>, m: usize| {
            let steps = (self.steps_taken[m], self.steps_taken[lead_model]);
            j.shares_steps_with(lead, steps, PackSharing::OneOrder)
        };
        if let Some((m, _)) = active.iter().find(|(m, j)| !shared(j, *m)) {
            return Err(EngineError::Mismatch(format!(
                "model {m} cannot share steps with model {lead_model}: a network pack's models need one order, batch, optimiser, seed and step count"
            )));
        }
        let train_len = self.resident.as_ref().ok_or(EngineError::NoData)?.splits[0].len;
        let batch = hyper.batch_size.max(1);
        if batch > self.capacity || order.len() != train_len {
            return Err(EngineError::Mismatch(format!(
                "an epoch of {} rows at batch {batch}, for an engine of {train_len} training rows at batch {}",
                order.len(),
                self.capacity
            )));
        }
        // Each model's hyperparameters; a model without a job does not train this epoch.
        let mut changed = false;
        for (m, job) in jobs.iter().enumerate() {
            let mut h = match job {
                Some(j) => ModelHyper::new(j.hyper, Activation::None),
                None => self.hyper_host[m],
            };
            h.training = job.is_some() as u32;
            changed |= self.hyper_host[m] != h;
            self.hyper_host[m] = h;
        }
        if changed {
            let bytes: &[u8] = bytemuck::cast_slice(&self.hyper_host);
            self.ctx.queue.write_buffer(&self.hyper, 0, bytes);
        }
        if self.seed != Some(hyper.seed) {
            for d in &self.dropouts {
                let params = DropoutParams {
                    seed_lo: hyper.seed as u32,
                    seed_hi: (hyper.seed >> 32) as u32,
                    ..d.params
                };
                self.ctx
                    .queue
                    .write_buffer(&d.buffer, 0, bytemuck::bytes_of(&params));
            }
            self.seed = Some(hyper.seed);
        }
        let r = self.resident.as_ref().ok_or(EngineError::NoData)?;
        self.ctx
            .queue
            .write_buffer(&r.splits[0].indices, 0, bytemuck::cast_slice(order));
        let steps = Self::chunks(order.len(), batch);
        let taken = self.steps_taken[lead_model];
        let mut uniforms = Vec::with_capacity(steps);
        for step in 0..steps {
            let offset = step * batch;
            let rows = batch.min(order.len() - offset);
            // The optimiser step this batch takes (1-based), as the CPU counts it.
            let t = taken + step as u64 + 1;
            let (c1, c2) = crate::cpu::ops::adam_corrections(hyper, t);
            uniforms.push((
                step,
                StepUniform {
                    offset: u(offset),
                    rows: u(rows),
                    scale: match hyper.gradient {
                        GradientReduction::Mean => 1.0 / rows as f32,
                        GradientReduction::Sum => 1.0,
                    },
                    adam_c1: c1 as f32,
                    adam_c2: c2 as f32,
                    stat_slot: u(step),
                    dropout_epoch: (t >> 32) as u32,
                    dropout_step: t as u32,
                    ..Default::default()
                },
            ));
        }
        self.write_uniforms(r, &uniforms);
        let val = &r.splits[1];
        self.write_uniforms(r, &self.eval_uniforms(val, 0));
        let val_chunks = Self::chunks(val.len, self.capacity);
        let k = self.models;
        // Every part but the last goes to the device as soon as it is recorded
        // (Tuning::submit_every, as a dense epoch does); the last, the validation pass and
        // the read-back make the final submission, the one the host waits for.
        let mut parts = self.ctx.tuning.submission_parts(steps);
        let last_part = parts.pop().unwrap_or(0..steps);
        for part in &parts {
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for step in part.clone() {
                    self.encode_step(&mut pass, r, (0, step, k), true);
                }
            }
            self.ctx.queue.submit([encoder.finish()]);
        }
        let stats = self
            .run_and_read(r, |pass| {
                for step in last_part {
                    self.encode_step(pass, r, (0, step, k), true);
                }
                for c in 0..val_chunks {
                    self.encode_step(pass, r, (1, val.first_slot + c, k), false);
                }
            })
            .await?;
        self.submissions = parts.len() + 1;
        let mut out: Vec<Option<Result<EpochStats, EngineError>>> =
            jobs.iter().map(|_| None).collect();
        for &(m, _) in &active {
            let per_step = &stats[m][..steps];
            let (loss_sum, correct) = per_step
                .iter()
                .fold((0.0, 0.0), |(l, c), v| (l + v.0, c + v.1));
            out[m] = Some(if loss_sum.is_finite() {
                Ok(EpochStats {
                    loss_sum,
                    correct: correct as usize,
                    samples: order.len(),
                    steps,
                    val: Some(Self::evaluation(&stats[m], val, self.capacity)),
                    shared_secs: None,
                })
            } else {
                let step = per_step.iter().position(|v| !v.0.is_finite());
                Err(EngineError::NonFiniteLoss {
                    step: step.map_or(steps, |s| s + 1),
                    value: loss_sum,
                })
            });
            self.steps_taken[m] += steps as u64;
        }
        Ok(out)
    }

    /// How many command buffers the last training epoch was submitted in.
    pub fn submissions_last_epoch(&self) -> usize {
        self.submissions
    }

    /// Loss and accuracy of model `model` on a split.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn evaluate(
        &mut self,
        model: usize,
        split: SplitName,
    ) -> Result<EvalStats, EngineError> {
        self.check_model(model)?;
        let r = self.resident.as_ref().ok_or(EngineError::NoData)?;
        let index = match split {
            SplitName::Train => 0,
            SplitName::Val => 1,
            SplitName::Test => 2,
        };
        let s = &r.splits[index];
        if split == SplitName::Train {
            // The training split's slots are its steps: its chunks go over them, reading the
            // rows in file order (the next epoch writes its order and steps again).
            let identity: Vec<u32> = (0..s.len as u32).collect();
            self.ctx
                .queue
                .write_buffer(&s.indices, 0, bytemuck::cast_slice(&identity));
        }
        let uniforms = self.eval_uniforms(s, model);
        self.write_uniforms(r, &uniforms);
        let stats = self
            .run_and_read(r, |pass| {
                for (slot, _) in &uniforms {
                    self.encode_step(pass, r, (index, *slot, 1), false);
                }
            })
            .await?;
        Ok(Self::evaluation(&stats[model], s, self.capacity))
    }

    /// Reads the `count` floats at each (buffer, byte offset) in one submission.
    async fn read_slices(
        &self,
        slices: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        let bytes = 4 * self.count as u64;
        let out = staging(&self.ctx, "network_state", bytes * slices.len() as u64)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for (i, (b, at)) in slices.iter().enumerate() {
            encoder.copy_buffer_to_buffer(b, *at, &out, i as u64 * bytes, bytes);
        }
        let raw = submit_for_read(&self.ctx, encoder, &out, bytes * slices.len() as u64)?.await?;
        Ok(raw
            .chunks_exact(bytes as usize)
            .map(|c| bytemuck::cast_slice(c).to_vec())
            .collect())
    }

    fn copy(&self, (from, from_at): (&wgpu::Buffer, u64), (to, to_at): (&wgpu::Buffer, u64)) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(from, from_at, to, to_at, 4 * self.count as u64);
        self.ctx.queue.submit([encoder.finish()]);
    }

    /// A copy of model `model`'s parameters.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn params(&self, model: usize) -> Result<Params, EngineError> {
        self.check_model(model)?;
        let (work_at, _, _) = self.offsets(model);
        let mut read = self.read_slices(&[(&self.work, work_at)]).await?;
        Ok(Params {
            model: Arc::clone(&self.net),
            values: read.pop().unwrap_or_default(),
        })
    }

    /// Copies model `model`'s parameters aside as its best so far.
    pub fn keep_best(&mut self, model: usize) -> Result<(), EngineError> {
        self.check_model(model)?;
        let (work_at, at, _) = self.offsets(model);
        self.copy((&self.work, work_at), (&self.best, at));
        Ok(())
    }

    /// Makes model `model`'s kept best parameters current again.
    pub fn restore_best(&mut self, model: usize) -> Result<(), EngineError> {
        self.check_model(model)?;
        let (work_at, at, _) = self.offsets(model);
        self.copy((&self.best, at), (&self.work, work_at));
        Ok(())
    }

    /// Model `model`'s parameters, best, optimiser moments and step count.
    /// Awaited: a native caller waits on it, a page awaits it (see `buffers::submit_for_read`).
    pub async fn training_state(&self, model: usize) -> Result<TrainingState, EngineError> {
        self.check_model(model)?;
        let (work_at, at, _) = self.offsets(model);
        let mut v = self
            .read_slices(&[
                (&self.work, work_at),
                (&self.best, at),
                (&self.first, at),
                (&self.second, at),
            ])
            .await?
            .into_iter();
        let mut next = || v.next().unwrap_or_default();
        Ok(TrainingState {
            params: next(),
            best: next(),
            first: next(),
            second: next(),
            step: self.steps_taken[model],
        })
    }

    /// Restores what [`NetworkModels::training_state`] returned into model `model`.
    pub fn set_training_state(
        &mut self,
        model: usize,
        state: &TrainingState,
    ) -> Result<(), EngineError> {
        self.check_model(model)?;
        state.check_len(self.count)?;
        let (work_at, at, _) = self.offsets(model);
        let q = &self.ctx.queue;
        for (buffer, offset, values) in [
            (&self.work, work_at, &state.params),
            (&self.best, at, &state.best),
            (&self.first, at, &state.first),
            (&self.second, at, &state.second),
        ] {
            q.write_buffer(buffer, offset, bytemuck::cast_slice(values));
        }
        self.steps_taken[model] = state.step;
        Ok(())
    }
}
