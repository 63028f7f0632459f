//! `PackedModels`: K networks of one shape resident side by side on one device and trained in
//! the same dispatches (the model is each dispatch's z). Every per-model buffer holds K equal
//! slices; hyperparameters, activation, shuffling and stopping are per model. The images are
//! resident once, as the file they came from (the "pool"), and each model's splits are index
//! lists into it, so models split with different seeds share one copy. One command buffer and
//! one read-back per epoch for all K. A single-model engine is the K = 1 case (`GpuEngine`).

use super::buffers::{bind, staging, storage_init, storage_zeroed, submit_and_read, uniform_init};
use super::context::{GpuContext, GpuError};
use super::kernels::{
    GatherParams, Kernels, MatmulParams, ModelHyper, STEP_STRIDE, StepRef, StepUniform,
    UpdateParams, XentParams,
};
use crate::config::{GradientReduction, Hyper, Optimizer};
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Activation, LayerView, Params, layer_views, param_count};

/// Rows per forward pass when evaluating a split (at least the batch size).
const EVAL_ROWS: usize = 1024;

impl From<GpuError> for EngineError {
    fn from(e: GpuError) -> Self {
        EngineError::Unavailable(e.to_string())
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// One split resident on the device: per-model index lists into an image pool.
struct SplitOnDevice {
    len: usize,
    indices: wgpu::Buffer,
    /// Elements between two models' index lists (0 when every model reads the same one).
    index_ms: usize,
    gather_group: wgpu::BindGroup,
    xent_group: wgpu::BindGroup,
    /// First step-uniform (and stats) slot of this split's steps or evaluation chunks.
    first_slot: usize,
}

/// Images, their z-score statistics and labels of one source file.
struct Pool {
    pixels: wgpu::Buffer,
    stats: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// A host copy, to check that every model's dataset holds the same images.
    host_pixels: Vec<u8>,
    host_labels: Vec<u8>,
}

/// Bind groups of one layer.
struct LayerGroups {
    forward: wgpu::BindGroup,
    /// Weight and bias gradients in one matmul (the bias as an extra column).
    weight_grad: wgpu::BindGroup,
    /// Input gradient into the layer below (absent for the first layer).
    input_grad: Option<wgpu::BindGroup>,
}

/// Everything sized by the dataset, made by the first upload.
struct Resident {
    uniforms: wgpu::Buffer,
    step_group: wgpu::BindGroup,
    /// (loss sum, correct) per model per slot: (models, slots) vec2<f32>.
    stats: wgpu::Buffer,
    staging: wgpu::Buffer,
    slots: usize,
    update_group: wgpu::BindGroup,
    /// train, val, test.
    splits: [SplitOnDevice; 3],
    _pools: [Pool; 2],
    /// Per model: pool row of each training-split row (maps an epoch order to pool rows).
    train_rows: Vec<Option<Vec<u32>>>,
}

/// One model's epoch: its order over the training split and its hyperparameters.
#[derive(Debug, Clone, Copy)]
pub struct EpochJob<'a> {
    pub order: &'a [u32],
    pub hyper: &'a Hyper,
}

pub struct PackedModels {
    ctx: GpuContext,
    kernels: Kernels,
    widths: Vec<usize>,
    layers: Vec<LayerView>,
    models: usize,
    /// Parameters per model.
    count: usize,
    /// Rows the workspace holds per model: max(batch size, EVAL_ROWS).
    capacity: usize,
    batch_size: usize,
    /// Per model: (models, count) f32 each.
    params: wgpu::Buffer,
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// (models, capacity, features) f32.
    x: wgpu::Buffer,
    /// Per layer: (models, capacity, fan_out) f32.
    activations: Vec<wgpu::Buffer>,
    deltas: Vec<wgpu::Buffer>,
    /// (models, 2, capacity): per-row loss, then per-row correct flag.
    row_loss: wgpu::Buffer,
    /// (models) ModelHyper, and what was last written to it.
    hyper: wgpu::Buffer,
    hyper_host: Vec<ModelHyper>,
    update_uniform: wgpu::Buffer,
    /// 1 for weights (penalised), 0 for biases: (count) f32, shared.
    mask: wgpu::Buffer,
    layer_groups: Vec<LayerGroups>,
    /// Buffers only bind groups refer to, held so their lifetime is visibly this struct's.
    _owned: Vec<wgpu::Buffer>,
    resident: Option<Resident>,
    /// Optimiser steps taken, per model.
    steps_taken: Vec<u64>,
}

impl PackedModels {
    /// How many models of `widths` trained at `batch_size` fit the adapter's limits on one
    /// buffer and one binding (the largest per-model buffer decides), capped at `cap`.
    pub fn max_models(ctx: &GpuContext, widths: &[usize], batch_size: usize, cap: usize) -> usize {
        let capacity = batch_size.max(EVAL_ROWS) as u64;
        let widest = widths.iter().copied().max().unwrap_or(1) as u64;
        let per_model = (4 * capacity * widest)
            .max(4 * param_count(widths) as u64)
            .max(1);
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        ((limit / per_model) as usize).clamp(1, cap.max(1))
    }

    /// Builds every pipeline and workspace buffer for `models` networks of `widths` trained at
    /// up to `batch_size` rows per step. Parameters start at zero: load them with
    /// [`PackedModels::init_model`].
    pub fn new(
        ctx: GpuContext,
        widths: &[usize],
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        let kernels = Kernels::new(&ctx)?;
        let layers = layer_views(widths);
        let capacity = batch_size.max(EVAL_ROWS);
        let count = param_count(widths);
        let k = models.max(1);
        let bytes = |n: usize| (n * 4) as u64;
        let params = storage_zeroed(&ctx, "params", bytes(k * count))?;
        let best = storage_zeroed(&ctx, "best_params", bytes(k * count))?;
        let first = storage_zeroed(&ctx, "velocity", bytes(k * count))?;
        let second = storage_zeroed(&ctx, "adam_second_moment", bytes(k * count))?;
        let grads = storage_zeroed(&ctx, "grads", bytes(k * count))?;
        let mut mask = vec![0.0f32; count];
        for v in &layers {
            mask[v.weight..v.bias].fill(1.0);
        }
        let mask = storage_init(&ctx, "penalised", f32_bytes(&mask))?;
        let x = storage_zeroed(&ctx, "batch_images", bytes(k * capacity * widths[0]))?;
        let per_layer = |name: &str| {
            layers
                .iter()
                .enumerate()
                .map(|(l, v)| {
                    storage_zeroed(
                        &ctx,
                        &format!("{name}{}", l + 1),
                        bytes(k * capacity * v.fan_out),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let activations = per_layer("activations")?;
        let deltas = per_layer("deltas")?;
        let row_loss = storage_zeroed(&ctx, "row_loss", bytes(k * 2 * capacity))?;
        let hyper_host = vec![ModelHyper::default(); k];
        let hyper = storage_init(&ctx, "model_hyper", bytemuck::cast_slice(&hyper_host))?;
        let dummy = storage_zeroed(&ctx, "unused", 16)?;
        let update_uniform = uniform_init(
            &ctx,
            "update_params",
            bytemuck::bytes_of(&UpdateParams::default()),
        )?;

        let last = layers.len() - 1;
        let mut owned = vec![dummy];
        let mut layer_groups = Vec::new();
        for (l, v) in layers.iter().enumerate() {
            let (i, o) = (v.fan_in as u32, v.fan_out as u32);
            let input = if l == 0 { &x } else { &activations[l - 1] };
            let input_ms = (capacity * v.fan_in) as u32;
            let output_ms = (capacity * v.fan_out) as u32;
            let count_ms = count as u32;
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
                activated: (l != last) as u32,
                a_ms: input_ms,
                b_ms: count_ms,
                c_ms: output_ms,
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
                a_ms: output_ms,
                b_ms: input_ms,
                c_ms: count_ms,
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
                activated: 1,
                a_ms: output_ms,
                b_ms: count_ms,
                c_ms: input_ms,
                aux_ms: input_ms,
                ..Default::default()
            };
            let uniform = |what: &str, p: &MatmulParams| {
                uniform_init(&ctx, &format!("fc{}.{what}", l + 1), bytemuck::bytes_of(p))
            };
            let u_forward = uniform("forward", &forward)?;
            let u_weight = uniform("weight_grad", &weight_grad)?;
            let u_input = uniform("input_grad", &input_grad)?;
            let m = &kernels.matmul_layout;
            let dummy = &owned[0];
            layer_groups.push(LayerGroups {
                forward: bind(
                    &ctx,
                    m,
                    "forward",
                    &[
                        input,
                        &params,
                        &params,
                        dummy,
                        &activations[l],
                        &hyper,
                        &u_forward,
                    ],
                ),
                weight_grad: bind(
                    &ctx,
                    m,
                    "weight_grad",
                    &[&deltas[l], input, dummy, dummy, &grads, &hyper, &u_weight],
                ),
                input_grad: (l > 0).then(|| {
                    bind(
                        &ctx,
                        m,
                        "input_grad",
                        &[
                            &deltas[l],
                            &params,
                            dummy,
                            &activations[l - 1],
                            &deltas[l - 1],
                            &hyper,
                            &u_input,
                        ],
                    )
                }),
            });
            owned.extend([u_forward, u_weight, u_input]);
        }
        Ok(PackedModels {
            widths: widths.to_vec(),
            layers,
            models: k,
            count,
            capacity,
            batch_size,
            params,
            best,
            first,
            second,
            grads,
            x,
            activations,
            deltas,
            row_loss,
            hyper,
            hyper_host,
            update_uniform,
            mask,
            layer_groups,
            _owned: owned,
            resident: None,
            steps_taken: vec![0; k],
            kernels,
            ctx,
        })
    }

    pub fn models(&self) -> usize {
        self.models
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |v| v.fan_out)
    }

    fn check_model(&self, model: usize) -> Result<(), EngineError> {
        if model < self.models {
            Ok(())
        } else {
            Err(EngineError::Unavailable(format!(
                "model {model} of a pack of {}",
                self.models
            )))
        }
    }

    /// Model `model`'s slice of a per-model parameter-sized buffer, in bytes.
    fn slice_of(&self, model: usize) -> (u64, u64) {
        let bytes = (self.count * 4) as u64;
        (model as u64 * bytes, bytes)
    }

    fn write_hyper(&self, model: usize) {
        self.ctx.queue.write_buffer(
            &self.hyper,
            (model * std::mem::size_of::<ModelHyper>()) as u64,
            bytemuck::bytes_of(&self.hyper_host[model]),
        );
    }

    /// Loads model `model`'s starting parameters (also as its best so far) and activation.
    pub fn init_model(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.set_params(model, params)?;
        let (at, _) = self.slice_of(model);
        self.ctx
            .queue
            .write_buffer(&self.best, at, f32_bytes(&params.values));
        Ok(())
    }

    /// Replaces model `model`'s parameters and activation and resets its optimiser state.
    pub fn set_params(&mut self, model: usize, params: &Params) -> Result<(), EngineError> {
        self.check_model(model)?;
        if params.widths != self.widths {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: params.widths.clone(),
            });
        }
        let (at, _) = self.slice_of(model);
        let q = &self.ctx.queue;
        q.write_buffer(&self.params, at, f32_bytes(&params.values));
        let zeros = vec![0u8; params.values.len() * 4];
        q.write_buffer(&self.first, at, &zeros);
        q.write_buffer(&self.second, at, &zeros);
        self.steps_taken[model] = 0;
        self.hyper_host[model].activation = super::kernels::activation_code(params.activation);
        self.write_hyper(model);
        Ok(())
    }

    fn upload_pool(&self, name: &str, pixels: Vec<u8>, labels: Vec<u8>) -> Result<Pool, GpuError> {
        let features = self.widths[0];
        let stats: Vec<f32> = pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (mean, scale) = image_stats(img);
                [mean as f32, scale as f32]
            })
            .collect();
        let wide_labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        Ok(Pool {
            pixels: storage_init(&self.ctx, &format!("{name}_pixels"), &pixels)?,
            stats: storage_init(&self.ctx, &format!("{name}_image_stats"), f32_bytes(&stats))?,
            labels: storage_init(
                &self.ctx,
                &format!("{name}_labels"),
                bytemuck::cast_slice(&wide_labels),
            )?,
            host_pixels: pixels,
            host_labels: labels,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn split_on_device(
        &self,
        name: &str,
        pool: &Pool,
        len: usize,
        index_ms: usize,
        first_slot: usize,
        stats: &wgpu::Buffer,
        slots: usize,
    ) -> Result<SplitOnDevice, GpuError> {
        let lists = if index_ms == 0 { 1 } else { self.models };
        let indices = storage_zeroed(
            &self.ctx,
            &format!("{name}_indices"),
            (lists * len * 4) as u64,
        )?;
        let gather_params = uniform_init(
            &self.ctx,
            &format!("{name}_gather"),
            bytemuck::bytes_of(&GatherParams {
                features: self.widths[0] as u32,
                index_ms: index_ms as u32,
                x_ms: (self.capacity * self.widths[0]) as u32,
                _pad: 0,
            }),
        )?;
        let xent_params = uniform_init(
            &self.ctx,
            &format!("{name}_xent"),
            bytemuck::bytes_of(&XentParams {
                classes: self.classes() as u32,
                capacity: self.capacity as u32,
                index_ms: index_ms as u32,
                slots: slots as u32,
            }),
        )?;
        let last = self.layers.len() - 1;
        Ok(SplitOnDevice {
            len,
            gather_group: bind(
                &self.ctx,
                &self.kernels.gather_layout,
                name,
                &[&pool.pixels, &pool.stats, &indices, &self.x, &gather_params],
            ),
            xent_group: bind(
                &self.ctx,
                &self.kernels.xent_layout,
                name,
                &[
                    &self.activations[last],
                    &pool.labels,
                    &indices,
                    &self.deltas[last],
                    &self.row_loss,
                    stats,
                    &xent_params,
                ],
            ),
            indices,
            index_ms,
            first_slot,
        })
    }

    /// The source file behind `splits` (pool row → image), rebuilt from the splits' rows.
    fn pool_of(features: usize, splits: &[&Split]) -> (Vec<u8>, Vec<u8>) {
        let n = splits
            .iter()
            .flat_map(|s| s.rows.iter())
            .map(|&r| r as usize + 1)
            .max()
            .unwrap_or(0);
        let mut pixels = vec![0u8; n * features];
        let mut labels = vec![0u8; n];
        for s in splits {
            for (j, &r) in s.rows.iter().enumerate() {
                let r = r as usize;
                pixels[r * features..(r + 1) * features]
                    .copy_from_slice(&s.pixels[j * features..(j + 1) * features]);
                labels[r] = s.labels[j];
            }
        }
        (pixels, labels)
    }

    /// Whether `split`'s images and labels are the pool's rows it names.
    fn agrees(pool: &Pool, split: &Split, features: usize) -> bool {
        split.rows.iter().enumerate().all(|(j, &r)| {
            let r = r as usize;
            pool.host_labels.get(r) == Some(&split.labels[j])
                && pool.host_pixels.get(r * features..(r + 1) * features)
                    == Some(&split.pixels[j * features..(j + 1) * features])
        })
    }

    /// Makes model `model`'s dataset resident. The first upload copies the images to the
    /// device; later ones (other models of the pack) must hold the same images, split any way.
    pub fn upload(&mut self, model: usize, data: &Dataset) -> Result<(), EngineError> {
        self.check_model(model)?;
        let features = self.widths[0];
        if data.features != features || data.classes != self.classes() {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: vec![data.features, data.classes],
            });
        }
        if self.resident.is_none() {
            self.resident = Some(self.make_resident(data)?);
        }
        let r = self.resident.as_mut().expect("made above");
        let [train, val, test] = &r.splits;
        let same_images = Self::agrees(&r._pools[0], &data.train, features)
            && Self::agrees(&r._pools[0], &data.val, features)
            && Self::agrees(&r._pools[1], &data.test, features);
        if (data.train.len, data.val.len, data.test.len) != (train.len, val.len, test.len)
            || !same_images
        {
            return Err(EngineError::Unavailable(format!(
                "model {model} of the pack was given a different dataset (splits of {}/{}/{} rows); \
                 packed models must share the data files and the validation fraction",
                data.train.len, data.val.len, data.test.len
            )));
        }
        self.ctx.queue.write_buffer(
            &val.indices,
            (model * val.index_ms * 4) as u64,
            bytemuck::cast_slice(&data.val.rows),
        );
        r.train_rows[model] = Some(data.train.rows.clone());
        Ok(())
    }

    fn make_resident(&self, data: &Dataset) -> Result<Resident, GpuError> {
        let features = self.widths[0];
        let (train_pixels, train_labels) = Self::pool_of(features, &[&data.train, &data.val]);
        let train_pool = self.upload_pool("train", train_pixels, train_labels)?;
        let (test_pixels, test_labels) = Self::pool_of(features, &[&data.test]);
        let test_pool = self.upload_pool("test", test_pixels, test_labels)?;
        let train_steps = data.train.len.div_ceil(self.batch_size);
        let val_chunks = data.val.len.div_ceil(self.capacity);
        let test_chunks = data.test.len.div_ceil(self.capacity);
        let val_first = train_steps.max(data.train.len.div_ceil(self.capacity));
        let test_first = val_first + val_chunks;
        let slots = test_first + test_chunks;
        let uniforms = uniform_init(
            &self.ctx,
            "step_uniforms",
            &vec![0u8; slots * STEP_STRIDE as usize],
        )?;
        let step_group = self.kernels.step_group(&self.ctx, &uniforms);
        let stats = storage_zeroed(&self.ctx, "batch_stats", (self.models * slots * 8) as u64)?;
        // Big enough for the stats of every model and slot, or the four parameter-sized
        // vectors of one model's checkpoint (params, best, first and second moments).
        let staging_bytes = (self.models * slots * 8).max(4 * self.count * 4) as u64;
        let staging = staging(&self.ctx, "staging", staging_bytes)?;
        self.ctx.queue.write_buffer(
            &self.update_uniform,
            0,
            bytemuck::bytes_of(&UpdateParams {
                count: self.count as u32,
                capacity: self.capacity as u32,
                slots: slots as u32,
                _pad: 0,
            }),
        );
        let update_group = bind(
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
                &self.hyper,
                &self.update_uniform,
            ],
        );
        let train = self.split_on_device(
            "train",
            &train_pool,
            data.train.len,
            data.train.len,
            0,
            &stats,
            slots,
        )?;
        let val = self.split_on_device(
            "val",
            &train_pool,
            data.val.len,
            data.val.len,
            val_first,
            &stats,
            slots,
        )?;
        // Every model evaluates the same test images in file order: one shared index list.
        let test = self.split_on_device(
            "test",
            &test_pool,
            data.test.len,
            0,
            test_first,
            &stats,
            slots,
        )?;
        self.ctx
            .queue
            .write_buffer(&test.indices, 0, bytemuck::cast_slice(&data.test.rows));
        Ok(Resident {
            uniforms,
            step_group,
            stats,
            staging,
            slots,
            update_group,
            splits: [train, val, test],
            _pools: [train_pool, test_pool],
            train_rows: vec![None; self.models],
        })
    }
}

mod epoch;
mod profile;
pub use profile::{FamilyTime, StepProfile};
