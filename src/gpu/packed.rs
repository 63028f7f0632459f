//! `PackedModels`: K networks of one shape resident side by side on one device and trained in
//! the same dispatches (the model is each dispatch's z). Every per-model buffer holds K equal
//! slices; hyperparameters, activation, shuffling and stopping are per model. The images are
//! resident once, as the file they came from (the "pool"), and each model's splits are index
//! lists into it, so models split with different seeds share one copy. One command buffer and
//! one read-back per epoch for all K. A single-model engine is the K = 1 case (`GpuEngine`).

use super::buffers::{
    bind, bind_at, staging, storage_init, storage_zeroed, submit_and_read, uniform_init,
};
use super::context::{GpuContext, GpuError};
use super::kernels::{
    GatherParams, Kernels, MATMUL_BINDINGS, MATMUL_GATHER_BINDINGS, MATMUL_UPDATE_BINDINGS,
    MATMUL_XENT_BINDINGS, MAX_FUSED_CLASSES, MatmulParams, ModelHyper, STEP_STRIDE, StepRef,
    StepUniform, XentParams,
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
    /// The output layer's forward pass + softmax_xent in one dispatch (matmul_softmax_xent),
    /// when its classes fit one tile.
    forward_xent_group: Option<wgpu::BindGroup>,
    /// The first layer's forward pass with the batch gathered in its loads (matmul_gather),
    /// unless the first layer is the output layer and takes the fused softmax instead.
    forward_gather_group: Option<wgpu::BindGroup>,
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

/// Bind groups of one layer (its weight-gradient update binds the stats, so it is made with
/// them: [`Resident::update_groups`]).
struct LayerGroups {
    forward: wgpu::BindGroup,
    /// Input gradient into the layer below (absent for the first layer).
    input_grad: Option<wgpu::BindGroup>,
}

/// A layer's fused weight-and-bias gradient + optimiser step (matmul_update): its uniform,
/// whose `slots` the first upload fills in.
struct LayerUpdate {
    params: MatmulParams,
    uniform: wgpu::Buffer,
}

/// Everything sized by the dataset, made by the first upload.
struct Resident {
    uniforms: wgpu::Buffer,
    step_group: wgpu::BindGroup,
    /// (loss sum, correct) per model per slot: (models, slots) vec2<f32>.
    stats: wgpu::Buffer,
    staging: wgpu::Buffer,
    slots: usize,
    /// Per layer: the matmul_update bind group (weight and bias gradient applied in place).
    update_groups: Vec<wgpu::BindGroup>,
    /// train, val, test.
    splits: [SplitOnDevice; 3],
    pools: [Pool; 2],
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
    layer_groups: Vec<LayerGroups>,
    layer_updates: Vec<LayerUpdate>,
    /// The output layer's forward matmul, which matmul_softmax_xent runs per split.
    output_forward: MatmulParams,
    /// The first layer's forward matmul, which matmul_gather runs per split.
    first_forward: MatmulParams,
    /// Buffers only bind groups refer to, held so their lifetime is visibly this struct's.
    _owned: Vec<wgpu::Buffer>,
    /// Bound where a kernel's binding has nothing to do (16 bytes).
    unused: wgpu::Buffer,
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
        let unused = storage_zeroed(&ctx, "unused", 16)?;

        let last = layers.len() - 1;
        let mut owned = Vec::new();
        let mut layer_groups = Vec::new();
        let mut layer_updates = Vec::new();
        let mut output_forward = MatmulParams::default();
        let mut first_forward = MatmulParams::default();
        for (l, v) in layers.iter().enumerate() {
            let input = if l == 0 { &x } else { &activations[l - 1] };
            let input_ms = (capacity * v.fan_in) as u32;
            let output_ms = (capacity * v.fan_out) as u32;
            let count_ms = count as u32;
            let forward = MatmulParams {
                a_ms: input_ms,
                b_ms: count_ms,
                c_ms: output_ms,
                ..MatmulParams::forward(v, l != last)
            };
            let weight_grad = MatmulParams {
                a_ms: output_ms,
                b_ms: input_ms,
                c_ms: count_ms,
                capacity: capacity as u32,
                // The output layer's update (the first recorded) sums the batch's losses.
                sum_stats: (l == last) as u32,
                ..MatmulParams::weight_grad(v)
            };
            let input_grad = MatmulParams {
                a_ms: output_ms,
                b_ms: count_ms,
                c_ms: input_ms,
                aux_ms: input_ms,
                ..MatmulParams::input_grad(v)
            };
            let uniform = |what: &str, p: &MatmulParams| {
                uniform_init(&ctx, &format!("fc{}.{what}", l + 1), bytemuck::bytes_of(p))
            };
            if l == last {
                // Where the softmax is fused, so is the input gradient of the layer below.
                output_forward = MatmulParams {
                    input_grad: (l > 0) as u32,
                    ..forward
                };
            }
            if l == 0 {
                first_forward = forward;
            }
            let u_forward = uniform("forward", &forward)?;
            let u_weight = uniform("weight_grad", &weight_grad)?;
            let u_input = uniform("input_grad", &input_grad)?;
            let dummy = &unused;
            // a, b, aux, c, models, p (MATMUL_BINDINGS); the bias is read from b's buffer.
            let matmul_group = |label: &str, buffers: [&wgpu::Buffer; 6]| {
                let numbered: Vec<_> = MATMUL_BINDINGS.into_iter().zip(buffers).collect();
                bind_at(&ctx, &kernels.matmul_layout, label, &numbered)
            };
            layer_groups.push(LayerGroups {
                forward: matmul_group(
                    "forward",
                    [input, &params, dummy, &activations[l], &hyper, &u_forward],
                ),
                input_grad: (l > 0).then(|| {
                    matmul_group(
                        "input_grad",
                        [
                            &deltas[l],
                            &params,
                            &activations[l - 1],
                            &deltas[l - 1],
                            &hyper,
                            &u_input,
                        ],
                    )
                }),
            });
            owned.extend([u_forward, u_input]);
            layer_updates.push(LayerUpdate {
                params: weight_grad,
                uniform: u_weight,
            });
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
            x,
            activations,
            deltas,
            row_loss,
            hyper,
            hyper_host,
            layer_groups,
            layer_updates,
            output_forward,
            first_forward,
            _owned: owned,
            unused,
            resident: None,
            steps_taken: vec![0; k],
            kernels,
            ctx,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
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
}

mod epoch;
mod profile;
mod resident;
pub use profile::{FamilyTime, StepProfile};
