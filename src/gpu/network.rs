//! `NetworkModels`: K networks of layers of one shape (issue 18) resident side by side on one
//! device and trained in the same dispatches (the model is each dispatch's z; `GpuEngine` is
//! the pack of one): the scheduler of conv.wgsl, pool.wgsl, dropout.wgsl, activation.wgsl, matmul.wgsl (dense
//! layers: forward, input and weight gradients), softmax_xent.wgsl and update.wgsl. The same
//! rules as the MLP's engine: images resident as bytes, a whole epoch (every step, then the
//! validation split) in one submission with one read-back, no float atomics (a rerun repeats
//! bit for bit), every buffer allocated when the engine is built or the data uploaded.
//!
//! A step: gather the batch; each layer forward (a convolution or dense product, then its
//! activation as a pass of its own; pooling keeps its argmax; dropout masks with the step
//! uniform's counters, the optimiser step, as `cpu::NetworkEngine` draws them); softmax
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

use super::buffers::{bind, staging, storage_init, storage_zeroed, submit_and_read, uniform_init};
use super::context::{GpuContext, GpuError};
use super::kernels::{
    ActivationParams, Conv2dParams, ConvEntry, DropoutParams, GatherParams, Kernels,
    MATMUL_BINDINGS, MatmulParams, ModelHyper, Pool2dParams, STEP_STRIDE, StepRef, StepUniform,
    UpdateParams, XentParams, activation_code, matmul_bind_group,
};
use super::packed::EpochJob;
use crate::config::GradientReduction;
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Activation, LayerView, Model, Params};
use crate::network::{Network, Planned};

/// One dispatch of a step, built once: which kernel, its bind group and its grid's size.
enum Dispatch {
    /// conv.wgsl or pool.wgsl: `len` invocations.
    Conv(ConvEntry, wgpu::BindGroup, u32),
    /// activation.wgsl (backward or not): `len` invocations.
    Activation(bool, wgpu::BindGroup, u32),
    /// dropout.wgsl: `len` invocations; its uniform is rewritten with the run's seed.
    Dropout(wgpu::BindGroup, u32),
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
    /// The forward passes while training (dropout on), and while evaluating (dropout off),
    /// the backward passes and the updates: everything but the gather and the loss.
    forward_train: Vec<Dispatch>,
    forward_eval: Vec<Dispatch>,
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
        let mut dropouts = Vec::new();
        let work_ms = u(layout.len);
        let (mut forward_train, mut forward_eval, mut backward) =
            (Vec::new(), Vec::new(), Vec::new());
        let last = net.layers.len() - 1;
        let mut tensors = Vec::new();
        for (l, layer) in net.layers.iter().enumerate() {
            let (input, in_len) = match l {
                0 => (layout.x, net.input.len()),
                _ => (layout.outputs[l - 1], net.outputs[l - 1].len()),
            };
            let (output, out_len) = (layout.outputs[l], net.outputs[l].len());
            let (delta_out, delta_in) = (layout.deltas[l % 2], layout.deltas[(l + 1) % 2]);
            let name = format!("layer{}", l + 1);
            let label = |what: &str| format!("{name}.{what}");
            let (out_elems, in_elems) = (u(capacity * out_len), u(capacity * in_len));
            // This layer's backward passes, in order; the layers below it go after them.
            let mut back = Vec::new();
            // The layer's activation as passes of their own: forward in both passes, its slope
            // first thing backward.
            let activation = |act: Activation,
                              f: [&mut Vec<Dispatch>; 2],
                              back: &mut Vec<Dispatch>,
                              b: &mut Builder<'_>|
             -> Result<(), GpuError> {
                if act == Activation::None {
                    return Ok(());
                }
                let p = ActivationParams {
                    kind: activation_code(act),
                    len: 0,
                    per_row: u(out_len),
                    work_ms,
                    x_off: u(output),
                    g_off: u(delta_out),
                    _pad: [0; 2],
                };
                let bytes = bytemuck::bytes_of(&p);
                for pass in f {
                    let group = b.work_group(&label("activation_forward"), bytes)?;
                    pass.push(Dispatch::Activation(false, group, out_elems));
                }
                let group = b.work_group(&label("activation_backward"), bytes)?;
                back.push(Dispatch::Activation(true, group, out_elems));
                Ok(())
            };
            match *layer {
                Planned::Conv2d {
                    shape,
                    activation: act,
                    weight,
                    bias,
                } => {
                    let p = |offsets: [usize; 4]| Conv2dParams {
                        work_ms,
                        ..Conv2dParams::new(&shape, 0, offsets.map(u))
                    };
                    let fwd = p([input, weight, bias, output]);
                    for f in [&mut forward_train, &mut forward_eval] {
                        let group =
                            b.work_group(&label("conv2d_forward"), bytemuck::bytes_of(&fwd))?;
                        f.push(Dispatch::Conv(ConvEntry::Conv2dForward, group, out_elems));
                    }
                    activation(
                        act,
                        [&mut forward_train, &mut forward_eval],
                        &mut back,
                        &mut b,
                    )?;
                    let grads = p([input, count + weight, count + bias, delta_out]);
                    let group =
                        b.work_group(&label("conv2d_backward_params"), bytemuck::bytes_of(&grads))?;
                    let params_len = u(shape.weights_len() + shape.filters);
                    back.push(Dispatch::Conv(
                        ConvEntry::Conv2dBackwardParams,
                        group,
                        params_len,
                    ));
                    if l > 0 {
                        let dx = p([delta_in, weight, bias, delta_out]);
                        let group =
                            b.work_group(&label("conv2d_backward_input"), bytemuck::bytes_of(&dx))?;
                        back.push(Dispatch::Conv(
                            ConvEntry::Conv2dBackwardInput,
                            group,
                            in_elems,
                        ));
                    }
                    tensors.push((weight, bias, shape.filters));
                }
                Planned::MaxPool2d { shape } => {
                    let argmax = layout.argmax[l];
                    let p = |offsets: [usize; 3]| Pool2dParams {
                        work_ms,
                        ..Pool2dParams::new(&shape, 0, offsets.map(u))
                    };
                    let fwd = p([input, output, argmax]);
                    for f in [&mut forward_train, &mut forward_eval] {
                        let group =
                            b.work_group(&label("max_pool2d_forward"), bytemuck::bytes_of(&fwd))?;
                        f.push(Dispatch::Conv(
                            ConvEntry::MaxPool2dForward,
                            group,
                            out_elems,
                        ));
                    }
                    if l > 0 {
                        let dx = p([delta_in, delta_out, argmax]);
                        let group =
                            b.work_group(&label("max_pool2d_backward"), bytemuck::bytes_of(&dx))?;
                        back.push(Dispatch::Conv(
                            ConvEntry::MaxPool2dBackward,
                            group,
                            in_elems,
                        ));
                    }
                }
                Planned::Dropout { p, .. } => {
                    // The seed is the run's, written with each epoch (`train_epoch`).
                    let mask = crate::dropout::DropoutMask::new(0, 0, 0, u(l), p);
                    let train = DropoutParams {
                        z_off: u(output),
                        from_step: 1,
                        per_row: u(out_len),
                        ..DropoutParams::new(&mask, 0, work_ms, u(input))
                    };
                    // The gradient goes through where the value did, with the same scale.
                    let through = DropoutParams {
                        x_off: u(delta_out),
                        z_off: u(delta_in),
                        ..train
                    };
                    for (what, params, pass) in [
                        ("dropout_forward", train, &mut forward_train),
                        ("dropout_backward", through, &mut back),
                    ] {
                        let buffer = uniform_init(&ctx, &label(what), bytemuck::bytes_of(&params))?;
                        let group =
                            bind(&ctx, &kernels.work_layout, &label(what), &[&work, &buffer]);
                        pass.push(Dispatch::Dropout(group, out_elems));
                        dropouts.push(DropoutUniform { buffer, params });
                    }
                    // Evaluation keeps every value at scale 1: a copy.
                    let keep_all = crate::dropout::DropoutMask::new(0, 0, 0, u(l), 0.0);
                    let eval = DropoutParams {
                        z_off: u(output),
                        per_row: u(out_len),
                        ..DropoutParams::new(&keep_all, 0, work_ms, u(input))
                    };
                    let group = b.work_group(&label("dropout_eval"), bytemuck::bytes_of(&eval))?;
                    forward_eval.push(Dispatch::Dropout(group, out_elems));
                }
                Planned::Dense {
                    fan_in,
                    fan_out,
                    activation: act,
                    weight,
                    bias,
                } => {
                    let view = LayerView {
                        fan_in,
                        fan_out,
                        weight,
                        bias,
                    };
                    // Z = X·Wᵀ + b, the activation a pass of its own (activated = 0).
                    let fwd = MatmulParams {
                        a_off: u(input),
                        c_off: u(output),
                        work_ms,
                        ..MatmulParams::forward(&view, false)
                    };
                    for f in [&mut forward_train, &mut forward_eval] {
                        let group = b.matmul_group(&label("forward"), &fwd)?;
                        f.push(Dispatch::Matmul(group, u(capacity), u(fan_out)));
                    }
                    activation(
                        act,
                        [&mut forward_train, &mut forward_eval],
                        &mut back,
                        &mut b,
                    )?;
                    let grads = MatmulParams {
                        a_off: u(delta_out),
                        b_off: u(input),
                        c_off: u(count + weight),
                        bias_off: u(count + bias),
                        work_ms,
                        ..MatmulParams::weight_grad(&view)
                    };
                    let group = b.matmul_group(&label("weight_grad"), &grads)?;
                    back.push(Dispatch::Matmul(group, u(fan_out), u(fan_in + 1)));
                    if l > 0 {
                        // dA = dZ·W; the layer below applies its own activation's slope.
                        let dx = MatmulParams {
                            a_off: u(delta_out),
                            c_off: u(delta_in),
                            epilogue: 0,
                            activated: 0,
                            work_ms,
                            ..MatmulParams::input_grad(&view)
                        };
                        let group = b.matmul_group(&label("input_grad"), &dx)?;
                        back.push(Dispatch::Matmul(group, u(capacity), u(fan_in)));
                    }
                    tensors.push((weight, bias, fan_out));
                }
            }
            back.append(&mut backward);
            backward = back;
        }
        // Every tensor's update, once the whole backward pass has read the old weights.
        for (weight, bias, outputs) in tensors {
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
                let buffer = uniform_init(&ctx, "update", bytemuck::bytes_of(&p))?;
                let group = bind(
                    &ctx,
                    &kernels.update_layout,
                    "update",
                    &[&work, &hyper, &first, &second, &buffer],
                );
                b.owned.push(buffer);
                backward.push(Dispatch::Update(group, u(len)));
            }
        }
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
            forward_train,
            forward_eval,
            backward,
            dropouts,
            seed: None,
            resident: None,
            steps_taken: vec![0; k],
            _owned: owned,
            net,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.capacity
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn model(&self) -> Model {
        Model::Network(Arc::clone(&self.net))
    }

    fn check_model(&self, model: usize) -> Result<(), EngineError> {
        if model < self.models {
            Ok(())
        } else {
            Err(EngineError::Mismatch(format!(
                "model {model} of a pack of {}",
                self.models
            )))
        }
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
        1 + self.forward_train.len() + 2 + self.backward.len()
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
        if params.model != self.model() {
            return Err(EngineError::params_mismatch(&self.model(), params));
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
            return Err(EngineError::data_mismatch(&self.model(), data));
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
        let forward = if training {
            &self.forward_train
        } else {
            &self.forward_eval
        };
        for d in forward {
            self.encode(pass, d, step);
        }
        k.encode_softmax_xent(pass, &s.xent, step, capacity);
        k.encode_batch_stats(pass, &s.xent, step);
        if training {
            for d in &self.backward {
                self.encode(pass, d, step);
            }
        }
    }

    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, d: &Dispatch, step: StepRef<'_>) {
        let k = &self.kernels;
        match d {
            Dispatch::Conv(entry, group, len) => {
                k.encode_conv_family(pass, *entry, group, step, *len)
            }
            Dispatch::Activation(backward, group, len) => {
                k.encode_activation(pass, *backward, group, step, *len)
            }
            Dispatch::Dropout(group, len) => k.encode_dropout_forward(pass, group, step, *len),
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
    fn run_and_read(
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
        let raw = self.ctx.scoped("network epoch", || {
            submit_and_read(&self.ctx, encoder, &r.staging, bytes)
        })??;
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
    pub fn train_epoch(
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
            j.order == order
                && j.hyper.batch_size == hyper.batch_size
                && j.hyper.gradient == hyper.gradient
                && j.hyper.optimizer == hyper.optimizer
                && (j.hyper.adam_beta1, j.hyper.adam_beta2) == (hyper.adam_beta1, hyper.adam_beta2)
                && j.hyper.seed == hyper.seed
                && self.steps_taken[m] == self.steps_taken[lead_model]
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
        let stats = self.run_and_read(r, |pass| {
            for step in 0..steps {
                self.encode_step(pass, r, (0, step, k), true);
            }
            for c in 0..val_chunks {
                self.encode_step(pass, r, (1, val.first_slot + c, k), false);
            }
        })?;
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

    /// Loss and accuracy of model `model` on a split.
    pub fn evaluate(&mut self, model: usize, split: SplitName) -> Result<EvalStats, EngineError> {
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
        let stats = self.run_and_read(r, |pass| {
            for (slot, _) in &uniforms {
                self.encode_step(pass, r, (index, *slot, 1), false);
            }
        })?;
        Ok(Self::evaluation(&stats[model], s, self.capacity))
    }

    /// Reads the `count` floats at each (buffer, byte offset) in one submission.
    fn read_slices(&self, slices: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<f32>>, GpuError> {
        let bytes = 4 * self.count as u64;
        let out = staging(&self.ctx, "network_state", bytes * slices.len() as u64)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for (i, (b, at)) in slices.iter().enumerate() {
            encoder.copy_buffer_to_buffer(b, *at, &out, i as u64 * bytes, bytes);
        }
        let raw = submit_and_read(&self.ctx, encoder, &out, bytes * slices.len() as u64)?;
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
    pub fn params(&self, model: usize) -> Result<Params, EngineError> {
        self.check_model(model)?;
        let (work_at, _, _) = self.offsets(model);
        let mut read = self.read_slices(&[(&self.work, work_at)])?;
        Ok(Params {
            model: self.model(),
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
    pub fn training_state(&self, model: usize) -> Result<TrainingState, EngineError> {
        self.check_model(model)?;
        let (work_at, at, _) = self.offsets(model);
        let mut v = self
            .read_slices(&[
                (&self.work, work_at),
                (&self.best, at),
                (&self.first, at),
                (&self.second, at),
            ])?
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
