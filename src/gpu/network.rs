//! `NetworkModels`: K networks of layers of one shape resident side by side on one
//! device and trained in the same dispatches (the model is each dispatch's z; `GpuEngine` is
//! the pack of one): the scheduler of conv.wgsl, pool.wgsl, dropout.wgsl, activation.wgsl, matmul.wgsl (dense
//! layers: forward, input and weight gradients), softmax_xent.wgsl and update.wgsl. The same
//! rules as the dense schedule (`PackedModels`): images resident as bytes, a whole epoch (every step, then the
//! validation split) recorded at once with one read-back (submitted in parts where
//! `Tuning::submit_every` says, as a dense epoch is), no float atomics (a rerun repeats
//! bit for bit), every buffer allocated when the engine is built or the data uploaded.
//!
//! A step: gather the batch; each layer forward (a convolution or dense product, then its
//! activation as a pass of its own; pooling keeps its argmax; dropout masks with the step
//! uniform's counters, the optimiser step, as the CPU engine's layers path draws them); softmax
//! cross-entropy and the batch's sums; each layer backward into a gradient region beside the
//! parameters; then one update per tensor.
//!
//! A pack's models differ in what each model's hyperparameters hold (learning rate, momentum,
//! penalties, init) and share what the step uniforms hold: the data, its split and every
//! epoch's order, the batch, the optimiser's step count and the dropout seed, which is why
//! sweeps pack networks of one seed (`sweep::pack_key`).
//!
//! Workspace (f32, one buffer, offsets from its start): parameters (count) · their gradient
//! (count) · the batch x (capacity, C·H·W) · per layer its output (capacity, out) and, for
//! pooling, its argmax · two delta buffers (capacity, widest), layer l's output delta in
//! `deltas[l % 2]` and its input delta in the other · row losses and correct flags (2·capacity).

use std::sync::Arc;

mod epoch;

use super::buffers::{bind, staging, storage_init, storage_zeroed, submit_for_read, uniform_init};
use super::context::{GpuContext, GpuError};
use super::kernels::{ConvEntry, Kernels, MATMUL_BINDINGS, StepRef, matmul_bind_group};
use super::packed::{EpochJob, PackSharing};
use super::uniforms::{
    ActivationParams, Conv2dParams, DropoutParams, GatherParams, MatmulParams, ModelHyper,
    Pool2dParams, STEP_STRIDE, StepUniform, UpdateParams, XentParams, activation_code,
};
use crate::config::GradientReduction;
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::Planned;
use crate::model::{Activation, Conv2d, LayerView, MaxPool2d, Network, Params};

/// One dispatch of a step, built once: which kernel, its bind group and its grid's size.
enum Dispatch {
    /// conv.wgsl or pool.wgsl: `len` invocations.
    Conv(ConvEntry, wgpu::BindGroup, u32),
    /// activation.wgsl (backward or not): `len` invocations.
    Activation(bool, wgpu::BindGroup, u32),
    /// dropout.wgsl: `len` invocations; its uniform is rewritten with the run's seed.
    Dropout(wgpu::BindGroup, u32),
    /// A forward dropout: masking (`train`) in a training step, a plain copy (`eval`) when
    /// evaluating. The only forward pass that differs between the two.
    ForwardDropout {
        train: wgpu::BindGroup,
        eval: wgpu::BindGroup,
        len: u32,
    },
    /// matmul.wgsl's matmul over an (m, n) output.
    Matmul(wgpu::BindGroup, u32, u32),
    /// update.wgsl over `len` parameters.
    Update(wgpu::BindGroup, u32),
}

/// A split resident on the device: its images (as bytes), statistics, labels and the rows to
/// read, and the bind groups that read them.
struct SplitOnDevice {
    len: usize,
    indices: wgpu::Buffer,
    gather: wgpu::BindGroup,
    xent: wgpu::BindGroup,
    /// First step-uniform (and stats) slot of this split's steps or chunks.
    first_slot: usize,
    /// A host copy, to check that every model of a pack uploads the same split.
    pixels_and_labels: (Vec<u8>, Vec<u8>),
    _buffers: Vec<wgpu::Buffer>,
}

/// What the first upload makes: the splits, the per-step uniforms, the stats and their
/// staging buffer.
struct Resident {
    splits: [SplitOnDevice; 3],
    uniforms: wgpu::Buffer,
    step_group: wgpu::BindGroup,
    stats: wgpu::Buffer,
    staging: wgpu::Buffer,
    slots: usize,
}

/// A dropout layer's training uniform, rewritten with each epoch's seed.
struct DropoutUniform {
    buffer: wgpu::Buffer,
    /// The uniform with every field but the seed filled in.
    params: DropoutParams,
}

pub struct NetworkModels {
    ctx: GpuContext,
    kernels: Kernels,
    net: Arc<Network>,
    /// Models in the pack.
    models: usize,
    count: usize,
    /// Rows a step or an evaluation chunk holds.
    capacity: usize,
    work: wgpu::Buffer,
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    /// (models) ModelHyper, and what was last written to it.
    hyper: wgpu::Buffer,
    hyper_host: Vec<ModelHyper>,
    /// The forward passes (dropout on while training, off while evaluating), the backward
    /// passes and the updates: everything but the gather and the loss.
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    dropouts: Vec<DropoutUniform>,
    /// The seed the dropout uniforms hold.
    seed: Option<u64>,
    input_len: usize,
    /// Where the logits, their gradient and the row losses are.
    logits: usize,
    dz: usize,
    row_loss: usize,
    x: usize,
    resident: Option<Resident>,
    /// Optimiser steps taken, per model.
    steps_taken: Vec<u64>,
    /// Command buffers the last training epoch was submitted in (Tuning::submit_every).
    submissions: usize,
    /// Elements in the workspace (the kernels' slice stride, one model).
    work_ms: u32,
    _owned: Vec<wgpu::Buffer>,
}

/// Makes the uniforms and bind groups of a network's passes, keeping their buffers.
struct Builder<'a> {
    ctx: &'a GpuContext,
    kernels: &'a Kernels,
    work: &'a wgpu::Buffer,
    hyper: &'a wgpu::Buffer,
    owned: Vec<wgpu::Buffer>,
}

impl Builder<'_> {
    /// A (work, p) bind group with `bytes` as p: activation, conv, pool, dropout.
    fn work_group(&mut self, label: &str, bytes: &[u8]) -> Result<wgpu::BindGroup, GpuError> {
        let p = uniform_init(self.ctx, label, bytes)?;
        let group = bind(self.ctx, &self.kernels.work_layout, label, &[self.work, &p]);
        self.owned.push(p);
        Ok(group)
    }

    /// matmul's (work, models, p) bind group with `p`.
    fn matmul_group(&mut self, label: &str, p: &MatmulParams) -> Result<wgpu::BindGroup, GpuError> {
        let buffer = uniform_init(self.ctx, label, bytemuck::bytes_of(p))?;
        let group = matmul_bind_group(
            self.ctx,
            &self.kernels.matmul_layout,
            label,
            &MATMUL_BINDINGS,
            [self.work, self.hyper, &buffer],
            &[],
        );
        self.owned.push(buffer);
        Ok(group)
    }
}

/// Where one layer's operands sit in a model's slice of the workspace, and how many elements
/// a step's rows of them hold.
struct LayerSlots {
    /// The layer's place, from 0.
    l: usize,
    input: usize,
    output: usize,
    out_len: usize,
    /// ∂L/∂(the layer's output), and ∂L/∂(its input) being computed.
    delta_out: usize,
    delta_in: usize,
    /// A pooling's argmax indices.
    argmax: usize,
    /// capacity × out_len, and × in_len.
    out_elems: u32,
    in_elems: u32,
    capacity: usize,
    /// Parameters per model (their gradients sit right after them).
    count: usize,
    work_ms: u32,
}

impl LayerSlots {
    fn new(net: &Network, layout: &Layout, l: usize, capacity: usize, count: usize) -> Self {
        let input = match l {
            0 => layout.x,
            _ => layout.outputs[l - 1],
        };
        let in_len = net.layer_input(l).len();
        let (output, out_len) = (layout.outputs[l], net.outputs[l].len());
        LayerSlots {
            l,
            input,
            output,
            out_len,
            delta_out: layout.deltas[l % 2],
            delta_in: layout.deltas[(l + 1) % 2],
            argmax: layout.argmax[l],
            out_elems: u(capacity * out_len),
            in_elems: u(capacity * in_len),
            capacity,
            count,
            work_ms: u(layout.len),
        }
    }

    /// `layer3.conv2d_forward`: a buffer's or bind group's label.
    fn label(&self, what: &str) -> String {
        format!("layer{}.{what}", self.l + 1)
    }
}

/// The passes the layers make: every forward dispatch in order, the dropout uniforms rewritten
/// with each epoch's seed, and each tensor's (weight, bias, outputs) for its update.
#[derive(Default)]
struct Passes {
    forward: Vec<Dispatch>,
    dropouts: Vec<DropoutUniform>,
    tensors: Vec<(usize, usize, usize)>,
}

impl Builder<'_> {
    /// One layer's passes: its forward ones onto `passes`, its backward ones returned in order
    /// (the layers below it go after them).
    fn layer_passes(
        &mut self,
        layer: &Planned,
        s: &LayerSlots,
        passes: &mut Passes,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let mut back = Vec::new();
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => self.conv_passes(shape, activation, (weight, bias), s, passes, &mut back)?,
            Planned::MaxPool2d { shape } => self.pool_passes(shape, s, passes, &mut back)?,
            Planned::Dropout { p, .. } => self.dropout_passes(p, s, passes, &mut back)?,
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let tensor = (fan_in, fan_out, weight, bias);
                self.dense_passes(tensor, activation, s, passes, &mut back)?
            }
        }
        Ok(back)
    }

    /// A layer's activation as passes of their own: forward, and its slope first thing
    /// backward.
    fn activation_passes(
        &mut self,
        act: Activation,
        s: &LayerSlots,
        forward: &mut Vec<Dispatch>,
        back: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        if act == Activation::None {
            return Ok(());
        }
        let p = ActivationParams {
            kind: activation_code(act),
            len: 0,
            per_row: u(s.out_len),
            work_ms: s.work_ms,
            x_off: u(s.output),
            g_off: u(s.delta_out),
            _pad: [0; 2],
        };
        let bytes = bytemuck::bytes_of(&p);
        let group = self.work_group(&s.label("activation_forward"), bytes)?;
        forward.push(Dispatch::Activation(false, group, s.out_elems));
        let group = self.work_group(&s.label("activation_backward"), bytes)?;
        back.push(Dispatch::Activation(true, group, s.out_elems));
        Ok(())
    }

    /// One update per tensor of `tensors` (weight, bias, outputs): its weights penalised, its
    /// biases not; `moments` are the optimiser's two buffers.
    fn update_passes(
        &mut self,
        tensors: &[(usize, usize, usize)],
        (count, work_ms): (usize, u32),
        moments: [&wgpu::Buffer; 2],
    ) -> Result<Vec<Dispatch>, GpuError> {
        let mut updates = Vec::new();
        for &(weight, bias, outputs) in tensors {
            for (offset, len, penalised) in [(weight, bias - weight, 1), (bias, outputs, 0)] {
                let p = UpdateParams {
                    param_off: u(offset),
                    grad_off: u(count + offset),
                    len: u(len),
                    penalised,
                    work_ms,
                    param_ms: u(count),
                    _pad: [0; 2],
                };
                let buffer = uniform_init(self.ctx, "update", bytemuck::bytes_of(&p))?;
                let [first, second] = moments;
                let group = bind(
                    self.ctx,
                    &self.kernels.update_layout,
                    "update",
                    &[self.work, self.hyper, first, second, &buffer],
                );
                self.owned.push(buffer);
                updates.push(Dispatch::Update(group, u(len)));
            }
        }
        Ok(updates)
    }

    fn conv_passes(
        &mut self,
        shape: Conv2d,
        act: Activation,
        (weight, bias): (usize, usize),
        s: &LayerSlots,
        passes: &mut Passes,
        back: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        let p = |offsets: [usize; 4]| Conv2dParams {
            work_ms: s.work_ms,
            ..Conv2dParams::new(&shape, 0, offsets.map(u))
        };
        let fwd = p([s.input, weight, bias, s.output]);
        {
            let group = self.work_group(&s.label("conv2d_forward"), bytemuck::bytes_of(&fwd))?;
            passes
                .forward
                .push(Dispatch::Conv(ConvEntry::Conv2dForward, group, s.out_elems));
        }
        self.activation_passes(act, s, &mut passes.forward, back)?;
        let grads = p([s.input, s.count + weight, s.count + bias, s.delta_out]);
        let group = self.work_group(
            &s.label("conv2d_backward_params"),
            bytemuck::bytes_of(&grads),
        )?;
        let params_len = u(shape.weights_len() + shape.filters);
        back.push(Dispatch::Conv(
            ConvEntry::Conv2dBackwardParams,
            group,
            params_len,
        ));
        if s.l > 0 {
            let dx = p([s.delta_in, weight, bias, s.delta_out]);
            let group =
                self.work_group(&s.label("conv2d_backward_input"), bytemuck::bytes_of(&dx))?;
            back.push(Dispatch::Conv(
                ConvEntry::Conv2dBackwardInput,
                group,
                s.in_elems,
            ));
        }
        passes.tensors.push((weight, bias, shape.filters));
        Ok(())
    }

    fn pool_passes(
        &mut self,
        shape: MaxPool2d,
        s: &LayerSlots,
        passes: &mut Passes,
        back: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        let argmax = s.argmax;
        let p = |offsets: [usize; 3]| Pool2dParams {
            work_ms: s.work_ms,
            ..Pool2dParams::new(&shape, 0, offsets.map(u))
        };
        let fwd = p([s.input, s.output, argmax]);
        {
            let group =
                self.work_group(&s.label("max_pool2d_forward"), bytemuck::bytes_of(&fwd))?;
            passes.forward.push(Dispatch::Conv(
                ConvEntry::MaxPool2dForward,
                group,
                s.out_elems,
            ));
        }
        if s.l > 0 {
            let dx = p([s.delta_in, s.delta_out, argmax]);
            let group =
                self.work_group(&s.label("max_pool2d_backward"), bytemuck::bytes_of(&dx))?;
            back.push(Dispatch::Conv(
                ConvEntry::MaxPool2dBackward,
                group,
                s.in_elems,
            ));
        }
        Ok(())
    }

    fn dropout_passes(
        &mut self,
        p: f64,
        s: &LayerSlots,
        passes: &mut Passes,
        back: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        // The seed is the run's, written with each epoch (`train_epoch`).
        let mask = crate::model::dropout::DropoutMask::new(0, 0, 0, u(s.l), p);
        let train = DropoutParams {
            z_off: u(s.output),
            from_step: 1,
            per_row: u(s.out_len),
            ..DropoutParams::new(&mask, 0, s.work_ms, u(s.input))
        };
        // The gradient goes through where the value did, with the same scale.
        let through = DropoutParams {
            x_off: u(s.delta_out),
            z_off: u(s.delta_in),
            ..train
        };
        let [train_group, through_group] =
            [("dropout_forward", train), ("dropout_backward", through)].map(
                |(what, params)| -> Result<wgpu::BindGroup, GpuError> {
                    let buffer =
                        uniform_init(self.ctx, &s.label(what), bytemuck::bytes_of(&params))?;
                    let group = bind(
                        self.ctx,
                        &self.kernels.work_layout,
                        &s.label(what),
                        &[self.work, &buffer],
                    );
                    passes.dropouts.push(DropoutUniform { buffer, params });
                    Ok(group)
                },
            );
        back.push(Dispatch::Dropout(through_group?, s.out_elems));
        // Evaluation keeps every value at scale 1: a copy.
        let keep_all = crate::model::dropout::DropoutMask::new(0, 0, 0, u(s.l), 0.0);
        let eval = DropoutParams {
            z_off: u(s.output),
            per_row: u(s.out_len),
            ..DropoutParams::new(&keep_all, 0, s.work_ms, u(s.input))
        };
        passes.forward.push(Dispatch::ForwardDropout {
            train: train_group?,
            eval: self.work_group(&s.label("dropout_eval"), bytemuck::bytes_of(&eval))?,
            len: s.out_elems,
        });
        Ok(())
    }

    fn dense_passes(
        &mut self,
        (fan_in, fan_out, weight, bias): (usize, usize, usize, usize),
        act: Activation,
        s: &LayerSlots,
        passes: &mut Passes,
        back: &mut Vec<Dispatch>,
    ) -> Result<(), GpuError> {
        let view = LayerView {
            fan_in,
            fan_out,
            weight,
            bias,
        };
        // Z = X·Wᵀ + b, the activation a pass of its own (activated = 0).
        let fwd = MatmulParams {
            a_off: u(s.input),
            c_off: u(s.output),
            work_ms: s.work_ms,
            ..MatmulParams::forward(&view, false)
        };
        {
            let group = self.matmul_group(&s.label("forward"), &fwd)?;
            passes
                .forward
                .push(Dispatch::Matmul(group, u(s.capacity), u(fan_out)));
        }
        self.activation_passes(act, s, &mut passes.forward, back)?;
        let grads = MatmulParams {
            a_off: u(s.delta_out),
            b_off: u(s.input),
            c_off: u(s.count + weight),
            bias_off: u(s.count + bias),
            work_ms: s.work_ms,
            ..MatmulParams::weight_grad(&view)
        };
        let group = self.matmul_group(&s.label("weight_grad"), &grads)?;
        back.push(Dispatch::Matmul(group, u(fan_out), u(fan_in + 1)));
        if s.l > 0 {
            // dA = dZ·W; the layer below applies its own activation's slope.
            let dx = MatmulParams {
                a_off: u(s.delta_out),
                c_off: u(s.delta_in),
                epilogue: 0,
                activated: 0,
                work_ms: s.work_ms,
                ..MatmulParams::input_grad(&view)
            };
            let group = self.matmul_group(&s.label("input_grad"), &dx)?;
            back.push(Dispatch::Matmul(group, u(s.capacity), u(fan_in)));
        }
        passes.tensors.push((weight, bias, fan_out));
        Ok(())
    }
}

/// Offsets of the workspace's regions (f32 elements).
struct Layout {
    x: usize,
    outputs: Vec<usize>,
    argmax: Vec<usize>,
    deltas: [usize; 2],
    row_loss: usize,
    len: usize,
}

impl Layout {
    fn new(net: &Network, count: usize, capacity: usize) -> Self {
        let mut at = 2 * count;
        let mut take = |n: usize| {
            let start = at;
            at += n;
            start
        };
        let x = take(capacity * net.input.len());
        let (mut outputs, mut argmax) = (Vec::new(), Vec::new());
        let mut widest = net.input.len();
        for (layer, out) in net.layers.iter().zip(&net.outputs) {
            widest = widest.max(out.len());
            outputs.push(take(capacity * out.len()));
            argmax.push(match layer {
                Planned::MaxPool2d { .. } => take(capacity * out.len()),
                _ => 0,
            });
        }
        let deltas = [take(capacity * widest), take(capacity * widest)];
        let row_loss = take(2 * capacity);
        Layout {
            x,
            outputs,
            argmax,
            deltas,
            row_loss,
            len: at,
        }
    }
}

fn u(v: usize) -> u32 {
    v as u32
}

impl NetworkModels {
    /// Bytes of one model's workspace for `net` at `batch_size` rows a step.
    fn model_bytes(net: &Network, batch_size: usize) -> u64 {
        4 * Layout::new(net, net.param_count, batch_size.max(1)).len as u64
    }

    /// How many models of `net` trained at `batch_size` fit the adapter's limits on one buffer
    /// and one binding (the workspace decides), capped at `cap`.
    pub fn max_models(ctx: &GpuContext, net: &Network, batch_size: usize, cap: usize) -> usize {
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        ((limit / Self::model_bytes(net, batch_size).max(1)) as usize).clamp(1, cap.max(1))
    }

    /// Builds every pipeline, buffer and pass for `models` networks `net` trained at up to
    /// `batch_size` rows a step. Parameters start at zero: load them with
    /// [`NetworkModels::init_model`].
    pub fn new(
        ctx: GpuContext,
        net: Arc<Network>,
        batch_size: usize,
        models: usize,
    ) -> Result<Self, GpuError> {
        let k = models.max(1);
        let kernels = Kernels::new(&ctx)?;
        let count = net.param_count;
        let capacity = batch_size.max(1);
        let layout = Layout::new(&net, count, capacity);
        let bytes = |n: usize| (4 * k * n) as u64;
        let work = storage_zeroed(&ctx, "network_workspace", bytes(layout.len))?;
        let best = storage_zeroed(&ctx, "best_params", bytes(count))?;
        let first = storage_zeroed(&ctx, "velocity", bytes(count))?;
        let second = storage_zeroed(&ctx, "adam_second_moment", bytes(count))?;
        let hyper_host = vec![ModelHyper::default(); k];
        let hyper = storage_init(&ctx, "model_hyper", bytemuck::cast_slice(&hyper_host))?;
        let mut b = Builder {
            ctx: &ctx,
            kernels: &kernels,
            work: &work,
            hyper: &hyper,
            owned: Vec::new(),
        };
        let work_ms = u(layout.len);
        let mut passes = Passes::default();
        let mut backward = Vec::new();
        let last = net.layers.len() - 1;
        for (l, layer) in net.layers.iter().enumerate() {
            let slots = LayerSlots::new(&net, &layout, l, capacity, count);
            let mut back = b.layer_passes(layer, &slots, &mut passes)?;
            back.append(&mut backward);
            backward = back;
        }
        let Passes {
            forward,
            dropouts,
            tensors,
        } = passes;
        // Every tensor's update, once the whole backward pass has read the old weights.
        backward.extend(b.update_passes(&tensors, (count, work_ms), [&first, &second])?);
        let owned = b.owned;
        Ok(NetworkModels {
            models: k,
            work_ms,
            input_len: net.input.len(),
            logits: layout.outputs[last],
            dz: layout.deltas[last % 2],
            row_loss: layout.row_loss,
            x: layout.x,
            ctx,
            kernels,
            count,
            capacity,
            work,
            best,
            first,
            second,
            hyper,
            hyper_host,
            forward,
            backward,
            dropouts,
            seed: None,
            resident: None,
            steps_taken: vec![0; k],
            submissions: 0,
            _owned: owned,
            net,
        })
    }
}
