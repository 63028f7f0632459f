//! `PackedModels`: K networks of one shape resident side by side on one device and trained in
//! the same dispatches (the model is each dispatch's z). Every per-model buffer holds K equal
//! slices; hyperparameters, activation, shuffling and stopping are per model. The images are
//! resident once, as the file they came from (the "pool"), and each model's splits are index
//! lists into it, so models split with different seeds share one copy. One command buffer and
//! one read-back per epoch for all K. A single-model engine is the K = 1 case (`GpuEngine`).

use super::buffers::{bind, staging, storage_init, storage_zeroed, submit_for_read, uniform_init};
use super::context::{GpuContext, GpuError};
use super::kernels::{
    Kernels, MATMUL_BINDINGS, MATMUL_GATHER_BINDINGS, MATMUL_UPDATE_BINDINGS, MATMUL_XENT_BINDINGS,
    MAX_FUSED_CLASSES, StepRef, matmul_bind_group,
};
use super::uniforms::{
    GatherParams, MatmulParams, ModelHyper, STEP_STRIDE, StepUniform, XentParams, update_tables,
};
use super::workspace::WorkLayout;
use crate::config::{GradientReduction, Hyper, Optimizer};
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use std::sync::Arc;

use crate::model::{Activation, LayerView, Network, Params, layer_views, param_count};

/// Rows per forward pass when evaluating a split (at least the batch size).
const EVAL_ROWS: usize = 1024;

/// Fails unless `model` is one of a pack's `models` (shared with `network::NetworkModels`).
pub(super) fn check_model(model: usize, models: usize) -> Result<(), EngineError> {
    if model < models {
        Ok(())
    } else {
        Err(EngineError::Mismatch(format!(
            "model {model} of a pack of {models}"
        )))
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

/// One matmul_update dispatch: the weight-and-bias gradients of up to
/// `kernels::MAX_UPDATE_LAYERS` layers applied by the optimiser (the stats it sums into are
/// the dataset's, so the first upload makes it).
struct UpdateDispatch {
    group: wgpu::BindGroup,
    /// Workgroups per model.
    tiles: u32,
    _table: wgpu::Buffer,
}

/// Everything sized by the dataset, made by the first upload.
struct Resident {
    uniforms: wgpu::Buffer,
    step_group: wgpu::BindGroup,
    /// (loss sum, correct) per model per slot: (models, slots) vec2<f32>.
    stats: wgpu::Buffer,
    staging: wgpu::Buffer,
    slots: usize,
    /// Every layer's weight and bias gradient applied in place, in as few dispatches as
    /// matmul_update's layer table allows (one up to eight layers).
    updates: Vec<UpdateDispatch>,
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

/// What the models of a pack share beyond the step schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackSharing {
    /// Each model its own order and seed: a dense pack maps every model's order onto the
    /// resident pools.
    OwnOrder,
    /// One order, one dropout seed and one step count for all: a network pack's step uniforms
    /// hold them once.
    OneOrder,
}

impl EpochJob<'_> {
    /// Whether this job, of a model that has taken `steps` optimiser steps, can take its steps
    /// in the same dispatches as `lead`'s (of a model at `lead_steps`): the pack's one rule.
    /// The same batch size and gradient reduction (one schedule), the same optimiser, for Adam
    /// the same β1, β2 and step count (its bias correction is one per step for the whole
    /// pack), and with [`PackSharing::OneOrder`] the same order, seed and step count.
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
        let order = sharing == PackSharing::OwnOrder
            || (self.order == lead.order && h.seed == l.seed && steps == lead_steps);
        schedule && optimiser && order
    }
}

pub struct PackedModels {
    ctx: GpuContext,
    kernels: Kernels,
    widths: Vec<usize>,
    /// Per model: the network its parameters came with (the pack's until they come).
    nets: Vec<Arc<Network>>,
    layers: Vec<LayerView>,
    models: usize,
    /// Parameters per model.
    count: usize,
    batch_size: usize,
    /// Every model's parameters and per-step operands: (models, layout.per_model) f32. The
    /// layout's capacity, max(batch size, EVAL_ROWS), is also the evaluation chunk.
    work: wgpu::Buffer,
    layout: WorkLayout,
    /// Per model: (models, count) f32 each.
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    /// (models) ModelHyper, and what was last written to it.
    hyper: wgpu::Buffer,
    hyper_host: Vec<ModelHyper>,
    layer_groups: Vec<LayerGroups>,
    /// Per layer: its weight gradient + update, placed in the workspace (`slots` and the
    /// layer table are the first upload's to fill in).
    layer_updates: Vec<MatmulParams>,
    /// The output layer's forward matmul, which matmul_softmax_xent runs per split.
    output_forward: MatmulParams,
    /// The first layer's forward matmul, which matmul_gather runs per split.
    first_forward: MatmulParams,
    /// Buffers only bind groups refer to, held so their lifetime is visibly this struct's.
    _owned: Vec<wgpu::Buffer>,
    resident: Option<Resident>,
    /// Optimiser steps taken, per model.
    steps_taken: Vec<u64>,
    /// Command buffers the last training epoch was submitted in (Tuning::submit_every).
    submissions: usize,
}

impl PackedModels {
    /// The workspace of one model of `widths` trained at `batch_size`: room for a batch, or for
    /// an evaluation chunk of EVAL_ROWS rows if that is more.
    fn layout(widths: &[usize], batch_size: usize) -> WorkLayout {
        WorkLayout::new(widths, batch_size.max(EVAL_ROWS))
    }

    /// How many models of `widths` trained at `batch_size` fit the adapter's limits on one
    /// buffer and one binding (the workspace, every model's slice in one buffer, decides),
    /// capped at `cap`.
    pub fn max_models(ctx: &GpuContext, widths: &[usize], batch_size: usize, cap: usize) -> usize {
        let per_model = (4 * Self::layout(widths, batch_size).per_model as u64).max(1);
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
        net: &Arc<Network>,
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        let Some((widths, _)) = net.dense_stack() else {
            return Err(GpuError::Device {
                what: "planning a pack of dense networks".into(),
                message: format!("{} is not a network of dense layers", net.describe()),
            });
        };
        let widths = &widths[..];
        let kernels = Kernels::new(&ctx)?;
        let layers = layer_views(widths);
        let count = param_count(widths);
        let layout = Self::layout(widths, batch_size);
        let capacity = layout.capacity;
        let k = models.max(1);
        let bytes = |n: usize| (n * 4) as u64;
        let work = storage_zeroed(&ctx, "workspace", bytes(k * layout.per_model))?;
        let best = storage_zeroed(&ctx, "best_params", bytes(k * count))?;
        let first = storage_zeroed(&ctx, "velocity", bytes(k * count))?;
        let second = storage_zeroed(&ctx, "adam_second_moment", bytes(k * count))?;
        let hyper_host = vec![ModelHyper::default(); k];
        let hyper = storage_init(&ctx, "model_hyper", bytemuck::cast_slice(&hyper_host))?;

        let last = layers.len() - 1;
        let (work_ms, capacity_u32) = (layout.per_model as u32, capacity as u32);
        let mut owned = Vec::new();
        let mut layer_groups = Vec::new();
        let mut layer_updates = Vec::new();
        let mut output_forward = MatmulParams::default();
        let mut first_forward = MatmulParams::default();
        for (l, v) in layers.iter().enumerate() {
            let (input, output) = (layout.input(l) as u32, layout.activations[l] as u32);
            let delta = layout.deltas[l] as u32;
            let forward = MatmulParams {
                a_off: input,
                c_off: output,
                work_ms,
                capacity: capacity_u32,
                row_loss_off: layout.row_loss as u32,
                x_off: layout.x as u32,
                ..MatmulParams::forward(v, l != last)
            };
            layer_updates.push(MatmulParams {
                a_off: delta,
                b_off: input,
                work_ms,
                param_ms: count as u32,
                capacity: capacity_u32,
                row_loss_off: layout.row_loss as u32,
                // The output layer's update sums the batch's losses.
                sum_stats: (l == last) as u32,
                ..MatmulParams::weight_grad(v)
            });
            let input_grad = (l > 0).then(|| MatmulParams {
                a_off: delta,
                c_off: layout.deltas[l - 1] as u32,
                aux_off: input,
                work_ms,
                ..MatmulParams::input_grad(v)
            });
            if l == last {
                // Where the softmax is fused, so is the input gradient of the layer below.
                output_forward = MatmulParams {
                    input_grad: (l > 0) as u32,
                    c_off: delta,
                    dh_off: if l > 0 {
                        layout.deltas[l - 1] as u32
                    } else {
                        0
                    },
                    ..forward
                };
            }
            if l == 0 {
                first_forward = forward;
            }
            let uniform = |what: &str, p: &MatmulParams| {
                uniform_init(&ctx, &format!("fc{}.{what}", l + 1), bytemuck::bytes_of(p))
            };
            let matmul_group = |label: &str, p: &wgpu::Buffer| {
                let layout = &kernels.matmul_layout;
                matmul_bind_group(
                    &ctx,
                    layout,
                    label,
                    &MATMUL_BINDINGS,
                    [&work, &hyper, p],
                    &[],
                )
            };
            let u_forward = uniform("forward", &forward)?;
            let forward_group = matmul_group("forward", &u_forward);
            owned.push(u_forward);
            let input_grad_group = match input_grad {
                Some(p) => {
                    let u = uniform("input_grad", &p)?;
                    let group = matmul_group("input_grad", &u);
                    owned.push(u);
                    Some(group)
                }
                None => None,
            };
            layer_groups.push(LayerGroups {
                forward: forward_group,
                input_grad: input_grad_group,
            });
        }
        Ok(PackedModels {
            widths: widths.to_vec(),
            nets: vec![Arc::clone(net); k],
            layers,
            models: k,
            count,
            batch_size,
            work,
            layout,
            best,
            first,
            second,
            hyper,
            hyper_host,
            layer_groups,
            layer_updates,
            output_forward,
            first_forward,
            _owned: owned,
            resident: None,
            steps_taken: vec![0; k],
            submissions: 0,
            kernels,
            ctx,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How many command buffers the last training epoch was submitted in.
    pub fn submissions_last_epoch(&self) -> usize {
        self.submissions
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |v| v.fan_out)
    }

    fn check_model(&self, model: usize) -> Result<(), EngineError> {
        check_model(model, self.models)
    }

    /// Model `model`'s slice of a per-model parameter-sized buffer (best, first, second), in
    /// bytes: (offset, length).
    fn slice_of(&self, model: usize) -> (u64, u64) {
        let bytes = (self.count * 4) as u64;
        (model as u64 * bytes, bytes)
    }

    /// Model `model`'s parameters in the workspace, in bytes: (offset, length).
    fn params_at(&self, model: usize) -> (u64, u64) {
        let at = (model * self.layout.per_model + self.layout.params) * 4;
        (at as u64, (self.count * 4) as u64)
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
        let stack = params.model.dense_stack();
        let Some((_, activation)) = stack.filter(|(w, _)| *w == self.widths) else {
            return Err(EngineError::params_mismatch(&self.nets[model], params));
        };
        self.nets[model] = Arc::clone(&params.model);
        let (at, _) = self.slice_of(model);
        let q = &self.ctx.queue;
        q.write_buffer(
            &self.work,
            self.params_at(model).0,
            f32_bytes(&params.values),
        );
        let zeros = vec![0u8; params.values.len() * 4];
        q.write_buffer(&self.first, at, &zeros);
        q.write_buffer(&self.second, at, &zeros);
        self.steps_taken[model] = 0;
        self.hyper_host[model].activation = super::uniforms::activation_code(activation);
        self.write_hyper(model);
        Ok(())
    }
}

mod epoch;
mod profile;
mod resident;
pub use profile::{FamilyTime, StepProfile};
