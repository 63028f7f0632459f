//! `GpuEngine`: the scheduler. The dataset is resident on the device as bytes; per epoch the
//! host uploads the shuffled indices and one 256-byte uniform per step, records every step of
//! the epoch and the validation pass into one command buffer, and reads back one small buffer
//! of per-step (loss sum, correct) pairs. Buffers, bind groups and pipelines are made once.

use std::sync::Arc;

use super::buffers::{bind, staging, storage_init, storage_zeroed, submit_and_read, uniform_init};
use super::context::{GpuContext, GpuError};
use super::kernels::{
    GatherParams, Kernels, MatmulParams, STEP_STRIDE, StepUniform, UpdateParams, XentParams,
};
use crate::config::{GradientReduction, Hyper, Optimizer};
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{Engine, EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Activation, LayerView, Params};

/// Rows per forward pass when evaluating a split (at least the batch size).
const EVAL_ROWS: usize = 1024;

fn activation_code(a: Activation) -> u32 {
    match a {
        Activation::None => 0,
        Activation::Tanh => 1,
        Activation::Sigmoid => 2,
        Activation::Relu => 3,
    }
}

impl From<GpuError> for EngineError {
    fn from(e: GpuError) -> Self {
        EngineError::Unavailable(e.to_string())
    }
}

/// One split resident on the device.
struct SplitOnDevice {
    len: usize,
    indices: wgpu::Buffer,
    gather_group: wgpu::BindGroup,
    xent_group: wgpu::BindGroup,
    /// First step-uniform slot of this split's evaluation chunks.
    first_slot: usize,
}

/// Bind groups of one layer.
struct LayerGroups {
    forward: wgpu::BindGroup,
    /// Weight and bias gradients in one matmul (the bias as an extra column).
    weight_grad: wgpu::BindGroup,
    /// Input gradient into the layer below (absent for the first layer).
    input_grad: Option<wgpu::BindGroup>,
}

pub struct GpuEngine {
    ctx: GpuContext,
    kernels: Kernels,
    widths: Vec<usize>,
    activation: Activation,
    layers: Vec<LayerView>,
    /// Rows the workspace holds: max(batch size, EVAL_ROWS).
    capacity: usize,
    batch_size: usize,
    params: wgpu::Buffer,
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    x: wgpu::Buffer,
    activations: Vec<wgpu::Buffer>,
    deltas: Vec<wgpu::Buffer>,
    row_loss: wgpu::Buffer,
    update_uniform: wgpu::Buffer,
    /// The update's bind group (made at upload, once the stats buffer exists).
    update_group: Option<wgpu::BindGroup>,
    grads: wgpu::Buffer,
    /// 1 for weights (penalised), 0 for biases.
    mask: wgpu::Buffer,
    layer_groups: Vec<LayerGroups>,
    /// Buffers only bind groups refer to (per-layer uniforms, gradients, the penalty mask),
    /// held so their lifetime is visibly the engine's.
    _owned: Vec<wgpu::Buffer>,
    steps: Option<StepSlots>,
    splits: [Option<SplitOnDevice>; 3],
    adam_step: u64,
}

/// The per-step uniform buffer and the stats buffer, sized once the dataset is known.
struct StepSlots {
    uniforms: wgpu::Buffer,
    group: wgpu::BindGroup,
    stats: wgpu::Buffer,
    staging: wgpu::Buffer,
}

fn split_slot(name: SplitName) -> usize {
    match name {
        SplitName::Train => 0,
        SplitName::Val => 1,
        SplitName::Test => 2,
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl GpuEngine {
    /// Builds every pipeline and workspace buffer for `params` trained at `batch_size`.
    pub fn new(ctx: GpuContext, params: &Params, batch_size: usize) -> Result<Self, GpuError> {
        let kernels = Kernels::new(&ctx)?;
        let layers = params.layers();
        let capacity = batch_size.max(EVAL_ROWS);
        let count = params.values.len();
        let bytes = |n: usize| (n * 4) as u64;
        let params_buf = storage_init(&ctx, "params", f32_bytes(&params.values))?;
        let best = storage_init(&ctx, "best_params", f32_bytes(&params.values))?;
        let first = storage_zeroed(&ctx, "velocity", bytes(count))?;
        let second = storage_zeroed(&ctx, "adam_second_moment", bytes(count))?;
        let grads = storage_zeroed(&ctx, "grads", bytes(count))?;
        let mut mask = vec![0.0f32; count];
        for v in &layers {
            mask[v.weight..v.bias].fill(1.0);
        }
        let mask = storage_init(&ctx, "penalised", f32_bytes(&mask))?;
        let x = storage_zeroed(&ctx, "batch_images", bytes(capacity * params.widths[0]))?;
        let activations = layers
            .iter()
            .enumerate()
            .map(|(l, v)| {
                storage_zeroed(
                    &ctx,
                    &format!("activations{}", l + 1),
                    bytes(capacity * v.fan_out),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let deltas = layers
            .iter()
            .enumerate()
            .map(|(l, v)| {
                storage_zeroed(
                    &ctx,
                    &format!("deltas{}", l + 1),
                    bytes(capacity * v.fan_out),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let row_loss = storage_zeroed(&ctx, "row_loss", bytes(2 * capacity))?;
        let dummy = storage_zeroed(&ctx, "unused", 16)?;
        let update_uniform = uniform_init(
            &ctx,
            "update_params",
            bytemuck::bytes_of(&UpdateParams::default()),
        )?;

        let act = activation_code(params.activation);
        let last = layers.len() - 1;
        let mut uniforms = Vec::new();
        let mut layer_groups = Vec::new();
        for (l, v) in layers.iter().enumerate() {
            let (i, o) = (v.fan_in as u32, v.fan_out as u32);
            let input = if l == 0 { &x } else { &activations[l - 1] };
            let forward = MatmulParams {
                n: o,
                k: i,
                rows_dim: 1,
                a_rs: i,
                a_cs: 1,
                b_off: v.weight as u32,
                b_rs: 1,
                b_cs: i,
                c_rs: o,
                bias_off: v.bias as u32,
                epilogue: 1,
                activation: if l == last { 0 } else { act },
                ..Default::default()
            };
            let weight_grad = MatmulParams {
                m: o,
                n: i,
                rows_dim: 2,
                a_rs: 1,
                a_cs: o,
                b_rs: i,
                b_cs: 1,
                c_off: v.weight as u32,
                c_rs: i,
                bias_off: v.bias as u32,
                bias_column: 1,
                ..Default::default()
            };
            let input_grad = MatmulParams {
                n: i,
                k: o,
                rows_dim: 1,
                a_rs: o,
                a_cs: 1,
                b_off: v.weight as u32,
                b_rs: i,
                b_cs: 1,
                c_rs: i,
                epilogue: 2,
                activation: act,
                ..Default::default()
            };
            let u_forward = uniform_init(
                &ctx,
                &format!("fc{}.forward", l + 1),
                bytemuck::bytes_of(&forward),
            )?;
            let u_weight = uniform_init(
                &ctx,
                &format!("fc{}.weight_grad", l + 1),
                bytemuck::bytes_of(&weight_grad),
            )?;
            let u_input = uniform_init(
                &ctx,
                &format!("fc{}.input_grad", l + 1),
                bytemuck::bytes_of(&input_grad),
            )?;
            let m = &kernels.matmul_layout;
            layer_groups.push(LayerGroups {
                forward: bind(
                    &ctx,
                    m,
                    "forward",
                    &[
                        input,
                        &params_buf,
                        &params_buf,
                        &dummy,
                        &activations[l],
                        &u_forward,
                    ],
                ),
                weight_grad: bind(
                    &ctx,
                    m,
                    "weight_grad",
                    &[&deltas[l], input, &dummy, &dummy, &grads, &u_weight],
                ),
                input_grad: (l > 0).then(|| {
                    bind(
                        &ctx,
                        m,
                        "input_grad",
                        &[
                            &deltas[l],
                            &params_buf,
                            &dummy,
                            &activations[l - 1],
                            &deltas[l - 1],
                            &u_input,
                        ],
                    )
                }),
            });
            uniforms.extend([u_forward, u_weight, u_input]);
        }
        Ok(GpuEngine {
            widths: params.widths.clone(),
            activation: params.activation,
            layers,
            capacity,
            batch_size,
            params: params_buf,
            best,
            first,
            second,
            x,
            activations,
            deltas,
            row_loss,
            update_uniform,
            update_group: None,
            grads,
            mask,
            layer_groups,
            _owned: {
                uniforms.push(dummy);
                uniforms
            },
            steps: None,
            splits: [None, None, None],
            adam_step: 0,
            kernels,
            ctx,
        })
    }

    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |v| v.fan_out)
    }

    fn upload_split(
        &self,
        name: &str,
        split: &Split,
        first_slot: usize,
        indices: Option<&[u32]>,
    ) -> Result<SplitOnDevice, GpuError> {
        let features = self.widths[0];
        let pixels = storage_init(&self.ctx, &format!("{name}_pixels"), &split.pixels)?;
        let stats: Vec<f32> = split
            .pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (mean, scale) = image_stats(img);
                [mean as f32, scale as f32]
            })
            .collect();
        let stats = storage_init(&self.ctx, &format!("{name}_image_stats"), f32_bytes(&stats))?;
        let labels: Vec<u32> = split.labels.iter().map(|&l| l as u32).collect();
        let labels = storage_init(
            &self.ctx,
            &format!("{name}_labels"),
            bytemuck::cast_slice(&labels),
        )?;
        let identity: Vec<u32> = (0..split.len as u32).collect();
        let indices = storage_init(
            &self.ctx,
            &format!("{name}_indices"),
            bytemuck::cast_slice(indices.unwrap_or(&identity)),
        )?;
        let gather_params = uniform_init(
            &self.ctx,
            &format!("{name}_gather"),
            bytemuck::bytes_of(&GatherParams {
                features: features as u32,
                _pad: [0; 3],
            }),
        )?;
        let xent_params = uniform_init(
            &self.ctx,
            &format!("{name}_xent"),
            bytemuck::bytes_of(&XentParams {
                classes: self.classes() as u32,
                capacity: self.capacity as u32,
                _pad: [0; 2],
            }),
        )?;
        let steps = self
            .steps
            .as_ref()
            .expect("step slots are made before splits");
        let last = self.layers.len() - 1;
        Ok(SplitOnDevice {
            len: split.len,
            gather_group: bind(
                &self.ctx,
                &self.kernels.gather_layout,
                name,
                &[&pixels, &stats, &indices, &self.x, &gather_params],
            ),
            xent_group: bind(
                &self.ctx,
                &self.kernels.xent_layout,
                name,
                &[
                    &self.activations[last],
                    &labels,
                    &indices,
                    &self.deltas[last],
                    &self.row_loss,
                    &steps.stats,
                    &xent_params,
                ],
            ),
            indices,
            first_slot,
        })
    }

    /// Records the forward pass and the loss for one step slot of `rows` rows; with
    /// `batch_stats` also the batch's sums (training steps leave that to the update kernel).
    fn encode_forward(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        split: &SplitOnDevice,
        slot: u32,
        rows: u32,
        batch_stats: bool,
    ) {
        let steps = self.steps.as_ref().expect("uploaded");
        let step = (&steps.group, slot);
        self.kernels.encode_gather_batch(
            pass,
            &split.gather_group,
            step,
            rows,
            self.widths[0] as u32,
        );
        for (l, v) in self.layers.iter().enumerate() {
            self.kernels.encode_matmul(
                pass,
                &self.layer_groups[l].forward,
                step,
                rows,
                v.fan_out as u32,
            );
        }
        self.kernels
            .encode_softmax_xent(pass, &split.xent_group, step, rows);
        if batch_stats {
            self.kernels
                .encode_batch_stats(pass, &split.xent_group, step);
        }
    }

    fn encode_backward_and_update(&self, pass: &mut wgpu::ComputePass<'_>, slot: u32, rows: u32) {
        let steps = self.steps.as_ref().expect("uploaded");
        let step = (&steps.group, slot);
        for (l, v) in self.layers.iter().enumerate().rev() {
            let g = &self.layer_groups[l];
            // fan_in weight columns plus the bias column.
            self.kernels.encode_matmul(
                pass,
                &g.weight_grad,
                step,
                v.fan_out as u32,
                v.fan_in as u32 + 1,
            );
            if let Some(input_grad) = &g.input_grad {
                self.kernels
                    .encode_matmul(pass, input_grad, step, rows, v.fan_in as u32);
            }
        }
        let count = self.layers.last().map_or(0, LayerView::end) as u32;
        let update_group = self.update_group.as_ref().expect("uploaded");
        self.kernels.encode_update(pass, update_group, step, count);
    }

    /// Step uniforms for evaluating `split` in chunks of `capacity` rows.
    fn eval_uniforms(&self, split: &SplitOnDevice) -> Vec<(usize, StepUniform)> {
        (0..split.len.div_ceil(self.capacity))
            .map(|c| {
                let offset = c * self.capacity;
                let rows = self.capacity.min(split.len - offset);
                let slot = split.first_slot + c;
                (
                    slot,
                    StepUniform {
                        offset: offset as u32,
                        rows: rows as u32,
                        scale: 1.0,
                        stat_slot: slot as u32,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn write_uniforms(&self, uniforms: &[(usize, StepUniform)]) {
        let steps = self.steps.as_ref().expect("uploaded");
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
            .write_buffer(&steps.uniforms, lo as u64 * STEP_STRIDE, &bytes);
    }

    /// Reads back stats slots `lo..hi` as (loss sum, correct) pairs.
    fn read_stats(
        &self,
        encoder: wgpu::CommandEncoder,
        lo: usize,
        hi: usize,
    ) -> Result<Vec<(f64, f64)>, GpuError> {
        let steps = self.steps.as_ref().expect("uploaded");
        let mut encoder = encoder;
        let bytes = ((hi - lo) * 8) as u64;
        encoder.copy_buffer_to_buffer(&steps.stats, lo as u64 * 8, &steps.staging, 0, bytes);
        let raw = submit_and_read(&self.ctx, encoder, &steps.staging, bytes)?;
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

    fn copy_params(&self, from: &wgpu::Buffer, to: &wgpu::Buffer) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(from, 0, to, 0, from.size());
        self.ctx.queue.submit([encoder.finish()]);
    }

    fn set_update_params(&self, hyper: &Hyper) {
        let u = UpdateParams {
            count: self.layers.last().map_or(0, LayerView::end) as u32,
            optimizer: match hyper.optimizer {
                Optimizer::Sgd => 0,
                Optimizer::Adam => 1,
            },
            gamma: hyper.momentum_gamma as f32,
            l1: hyper.l1 as f32,
            l2: hyper.l2 as f32,
            beta1: hyper.adam_beta1 as f32,
            beta2: hyper.adam_beta2 as f32,
            epsilon: hyper.adam_epsilon as f32,
            capacity: self.capacity as u32,
            _pad: [0; 3],
        };
        self.ctx
            .queue
            .write_buffer(&self.update_uniform, 0, bytemuck::bytes_of(&u));
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.widths[0] || data.classes != self.classes() {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: vec![data.features, data.classes],
            });
        }
        let train_steps = data.train.len.div_ceil(self.batch_size);
        let val_chunks = data.val.len.div_ceil(self.capacity);
        let test_chunks = data.test.len.div_ceil(self.capacity);
        let slots =
            train_steps.max(data.train.len.div_ceil(self.capacity)) + val_chunks + test_chunks;
        let uniforms = uniform_init(
            &self.ctx,
            "step_uniforms",
            &vec![0u8; slots * STEP_STRIDE as usize],
        )?;
        let group = self.kernels.step_group(&self.ctx, &uniforms);
        let stats = storage_zeroed(&self.ctx, "batch_stats", (slots * 8) as u64)?;
        // Big enough for the stats of every slot, or the four parameter-sized vectors of a
        // checkpoint (params, best, first and second moments).
        let staging_bytes =
            (slots * 8).max(4 * self.layers.last().map_or(0, LayerView::end) * 4) as u64;
        let staging = staging(&self.ctx, "staging", staging_bytes)?;
        self.update_group = Some(bind(
            &self.ctx,
            &self.kernels.update_layout,
            "update",
            &[
                &self.params,
                &self.grads,
                &self.first,
                &self.second,
                &self.mask,
                &self.row_loss,
                &stats,
                &self.update_uniform,
            ],
        ));
        self.steps = Some(StepSlots {
            uniforms,
            group,
            stats,
            staging,
        });
        let train_first = 0;
        let val_first = train_steps.max(data.train.len.div_ceil(self.capacity));
        let test_first = val_first + val_chunks;
        self.splits = [
            Some(self.upload_split("train", &data.train, train_first, None)?),
            Some(self.upload_split("val", &data.val, val_first, None)?),
            Some(self.upload_split("test", &data.test, test_first, None)?),
        ];
        Ok(())
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let (Some(train), Some(val)) = (&self.splits[0], &self.splits[1]) else {
            return Err(EngineError::NoData);
        };
        let batch = hyper.batch_size;
        if batch > self.batch_size || order.len() != train.len {
            return Err(EngineError::Unavailable(format!(
                "the GPU engine was built for batch {} and {} training rows, got batch {batch} and {} rows",
                self.batch_size,
                train.len,
                order.len()
            )));
        }
        self.ctx
            .queue
            .write_buffer(&train.indices, 0, bytemuck::cast_slice(order));
        self.set_update_params(hyper);
        let steps = order.len().div_ceil(batch);
        let mut uniforms = Vec::with_capacity(steps);
        for s in 0..steps {
            let offset = s * batch;
            let rows = batch.min(order.len() - offset);
            self.adam_step += 1;
            let (c1, c2) = crate::cpu::ops::adam_corrections(hyper, self.adam_step);
            uniforms.push((
                s,
                StepUniform {
                    offset: offset as u32,
                    rows: rows as u32,
                    scale: match hyper.gradient {
                        GradientReduction::Mean => 1.0 / rows as f32,
                        GradientReduction::Sum => 1.0,
                    },
                    learning_rate: hyper.learning_rate as f32,
                    adam_c1: c1 as f32,
                    adam_c2: c2 as f32,
                    stat_slot: s as u32,
                    _pad: 0,
                },
            ));
        }
        let val_uniforms = self.eval_uniforms(val);
        self.write_uniforms(&uniforms);
        self.write_uniforms(&val_uniforms);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("epoch"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("epoch"),
                timestamp_writes: None,
            });
            for (slot, u) in &uniforms {
                self.encode_forward(&mut pass, train, *slot as u32, u.rows, false);
                self.encode_backward_and_update(&mut pass, *slot as u32, u.rows);
            }
            for (slot, u) in &val_uniforms {
                self.encode_forward(&mut pass, val, *slot as u32, u.rows, true);
            }
        }
        let val_hi = val.first_slot + val_uniforms.len();
        let pairs = self.read_stats(encoder, 0, val_hi)?;
        let (train_pairs, rest) = pairs.split_at(steps);
        let val_pairs = &rest[val.first_slot - steps..];
        let mut stats = EpochStats::default();
        for (s, &(loss, correct)) in train_pairs.iter().enumerate() {
            if !loss.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    step: s + 1,
                    value: loss,
                });
            }
            stats.loss_sum += loss;
            stats.correct += correct as usize;
        }
        stats.samples = order.len();
        stats.steps = steps;
        stats.val = Some(Self::eval_stats(val_pairs, val.len));
        Ok(stats)
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let s = self.splits[split_slot(split)]
            .as_ref()
            .ok_or(EngineError::NoData)?;
        let uniforms = self.eval_uniforms(s);
        self.write_uniforms(&uniforms);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("evaluate"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("evaluate"),
                timestamp_writes: None,
            });
            for (slot, u) in &uniforms {
                self.encode_forward(&mut pass, s, *slot as u32, u.rows, true);
            }
        }
        let pairs = self.read_stats(encoder, s.first_slot, s.first_slot + uniforms.len())?;
        Ok(Self::eval_stats(&pairs, s.len))
    }

    fn params(&self) -> Result<Params, EngineError> {
        let steps = self.steps.as_ref();
        let count = self.layers.last().map_or(0, LayerView::end);
        let bytes = (count * 4) as u64;
        let fresh;
        let staging_buf = match steps {
            Some(s) => &s.staging,
            None => {
                fresh = staging(&self.ctx, "params_staging", bytes)?;
                &fresh
            }
        };
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.params, 0, staging_buf, 0, bytes);
        let raw = submit_and_read(&self.ctx, encoder, staging_buf, bytes)?;
        Ok(Params {
            widths: self.widths.clone(),
            activation: self.activation,
            values: bytemuck::cast_slice(&raw).to_vec(),
        })
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        if params.widths != self.widths || params.activation != self.activation {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: params.widths.clone(),
            });
        }
        self.ctx
            .queue
            .write_buffer(&self.params, 0, f32_bytes(&params.values));
        let zeros = vec![0u8; params.values.len() * 4];
        self.ctx.queue.write_buffer(&self.first, 0, &zeros);
        self.ctx.queue.write_buffer(&self.second, 0, &zeros);
        self.adam_step = 0;
        Ok(())
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.copy_params(&self.params, &self.best);
        Ok(())
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.copy_params(&self.best, &self.params);
        Ok(())
    }

    fn training_state(&self) -> Result<TrainingState, EngineError> {
        let steps = self.steps.as_ref().ok_or(EngineError::NoData)?;
        let bytes = self.params.size();
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for (i, buffer) in [&self.params, &self.best, &self.first, &self.second]
            .into_iter()
            .enumerate()
        {
            encoder.copy_buffer_to_buffer(buffer, 0, &steps.staging, i as u64 * bytes, bytes);
        }
        let raw = submit_and_read(&self.ctx, encoder, &steps.staging, 4 * bytes)?;
        let values: &[f32] = bytemuck::cast_slice(&raw);
        let n = bytes as usize / 4;
        Ok(TrainingState {
            params: values[..n].to_vec(),
            best: values[n..2 * n].to_vec(),
            first: values[2 * n..3 * n].to_vec(),
            second: values[3 * n..4 * n].to_vec(),
            step: self.adam_step,
        })
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        state.check_len(self.params.size() as usize / 4)?;
        for (buffer, values) in [
            (&self.params, &state.params),
            (&self.best, &state.best),
            (&self.first, &state.first),
            (&self.second, &state.second),
        ] {
            self.ctx.queue.write_buffer(buffer, 0, f32_bytes(values));
        }
        self.adam_step = state.step;
        Ok(())
    }
}
