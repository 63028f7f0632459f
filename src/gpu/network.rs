//! `GpuNetworkEngine`: the [`Engine`] on the GPU for a network of layers (issue 18), the
//! scheduler of conv.wgsl, pool.wgsl, dropout.wgsl, activation.wgsl, matmul.wgsl (dense
//! layers: forward, input and weight gradients), softmax_xent.wgsl and update.wgsl. The same
//! rules as the MLP's engine: images resident as bytes, a whole epoch (every step, then the
//! validation split) in one submission with one read-back, no float atomics (a rerun repeats
//! bit for bit), every buffer allocated when the engine is built or the data uploaded.
//!
//! A step: gather the batch; each layer forward (a convolution or dense product, then its
//! activation as a pass of its own; pooling keeps its argmax; dropout masks with the step
//! uniform's counters, the optimiser step, as `cpu::NetworkEngine` draws them); softmax
//! cross-entropy and the batch's sums; each layer backward into a gradient region beside the
//! parameters; then one update per tensor. One model (packing networks is still to come).
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
use crate::config::{GradientReduction, Hyper};
use crate::data::{Dataset, Split, SplitName, prep::image_stats};
use crate::engine::{Engine, EngineError, EpochStats, EvalStats, TrainingState};
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

pub struct GpuNetworkEngine {
    ctx: GpuContext,
    kernels: Kernels,
    net: Arc<Network>,
    count: usize,
    /// Rows a step or an evaluation chunk holds.
    capacity: usize,
    work: wgpu::Buffer,
    best: wgpu::Buffer,
    first: wgpu::Buffer,
    second: wgpu::Buffer,
    hyper: wgpu::Buffer,
    hyper_host: Option<ModelHyper>,
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
    steps_taken: u64,
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

impl GpuNetworkEngine {
    /// Builds every pipeline, buffer and pass for `params` (a network) trained at up to
    /// `batch_size` rows a step.
    pub fn new(ctx: GpuContext, params: &Params, batch_size: usize) -> Result<Self, GpuError> {
        let Model::Network(net) = &params.model else {
            return Err(GpuError::Device {
                what: "building the network engine".into(),
                message: format!("{} is not a network of layers", params.model.describe()),
            });
        };
        let net = Arc::clone(net);
        let kernels = Kernels::new(&ctx)?;
        let count = net.param_count;
        let capacity = batch_size.max(1);
        let layout = Layout::new(&net, count, capacity);
        let work = storage_zeroed(&ctx, "network_workspace", 4 * layout.len as u64)?;
        let best = storage_zeroed(&ctx, "best_params", 4 * count as u64)?;
        let first = storage_zeroed(&ctx, "velocity", 4 * count as u64)?;
        let second = storage_zeroed(&ctx, "adam_second_moment", 4 * count as u64)?;
        let hyper = storage_init(
            &ctx,
            "model_hyper",
            bytemuck::bytes_of(&ModelHyper::default()),
        )?;
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
        let engine = GpuNetworkEngine {
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
            hyper_host: None,
            forward_train,
            forward_eval,
            backward,
            dropouts,
            seed: None,
            resident: None,
            steps_taken: 0,
            _owned: owned,
            net,
        };
        engine
            .ctx
            .queue
            .write_buffer(&engine.work, 0, bytemuck::cast_slice(&params.values));
        Ok(engine)
    }

    fn model(&self) -> Model {
        Model::Network(Arc::clone(&self.net))
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
        let labels = storage_init(
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
            &[&self.work, &labels, &indices, stats, &xent_p],
        );
        Ok(SplitOnDevice {
            len: split.len,
            indices,
            gather,
            xent,
            first_slot,
            _buffers: vec![pixels, stats_buf, labels, gather_p, xent_p],
        })
    }

    /// Slots a split of `len` rows takes at `rows` a step or chunk.
    fn chunks(len: usize, rows: usize) -> usize {
        len.div_ceil(rows.max(1))
    }

    /// Records one step or evaluation chunk of `split` at uniform slot `slot`.
    fn encode_step(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        r: &Resident,
        split: usize,
        slot: usize,
        training: bool,
    ) {
        let k = &self.kernels;
        let s = &r.splits[split];
        let step = StepRef {
            group: &r.step_group,
            slot: u(slot),
            models: 1,
        };
        let capacity = u(self.capacity);
        k.encode_gather_batch(pass, &s.gather, step, capacity, u(self.input_len));
        let forward = if training {
            &self.forward_train
        } else {
            &self.forward_eval
        };
        for d in forward.iter() {
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

    /// The evaluation chunks of `split` as step uniforms (no gradient, no update).
    fn eval_uniforms(&self, s: &SplitOnDevice) -> Vec<(usize, StepUniform)> {
        (0..Self::chunks(s.len, self.capacity))
            .map(|c| {
                let offset = c * self.capacity;
                let rows = self.capacity.min(s.len - offset);
                let slot = s.first_slot + c;
                let uniform = StepUniform {
                    offset: u(offset),
                    rows: u(rows),
                    scale: 1.0,
                    stat_slot: u(slot),
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

    /// Records `chunks` of split `split` (evaluation) after `record`, copies every stats slot
    /// to staging, submits, and returns (loss sum, correct) per slot.
    fn run_and_read(
        &self,
        r: &Resident,
        record: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) -> Result<Vec<(f64, f64)>, GpuError> {
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
            .chunks_exact(2)
            .take(r.slots)
            .map(|v| (v[0] as f64, v[1] as f64))
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

    /// Reads `count` floats from each of `buffers` (at offset 0) in one submission.
    fn read_buffers(&self, buffers: &[&wgpu::Buffer]) -> Result<Vec<Vec<f32>>, GpuError> {
        let bytes = 4 * self.count as u64;
        let out = staging(&self.ctx, "network_state", bytes * buffers.len() as u64)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for (i, b) in buffers.iter().enumerate() {
            encoder.copy_buffer_to_buffer(b, 0, &out, i as u64 * bytes, bytes);
        }
        let raw = submit_and_read(&self.ctx, encoder, &out, bytes * buffers.len() as u64)?;
        Ok(raw
            .chunks_exact(bytes as usize)
            .map(|c| bytemuck::cast_slice(c).to_vec())
            .collect())
    }

    fn copy(&self, from: &wgpu::Buffer, to: &wgpu::Buffer) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(from, 0, to, 0, 4 * self.count as u64);
        self.ctx.queue.submit([encoder.finish()]);
    }
}

impl Engine for GpuNetworkEngine {
    fn describe(&self) -> String {
        self.ctx.describe()
    }

    /// As `encode_step` records a training step: the gather, the forward passes, the loss and
    /// its sums, the backward passes and updates.
    fn dispatches_per_step(&self) -> Option<usize> {
        Some(1 + self.forward_train.len() + 2 + self.backward.len())
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.input_len || data.classes != self.net.classes() {
            return Err(EngineError::data_mismatch(&self.model(), &data));
        }
        let c = self.capacity;
        let train_steps = Self::chunks(data.train.len, c);
        let val_chunks = Self::chunks(data.val.len, c);
        let test_chunks = Self::chunks(data.test.len, c);
        let slots = train_steps + val_chunks + test_chunks;
        let stats = storage_zeroed(&self.ctx, "network_stats", (8 * slots) as u64)?;
        let staging_buf = staging(&self.ctx, "network_stats_staging", (8 * slots) as u64)?;
        let uniforms = uniform_init(&self.ctx, "steps", &vec![0u8; slots * STEP_STRIDE as usize])?;
        let step_group = self.kernels.step_group(&self.ctx, &uniforms);
        let splits = [
            self.split_on_device("train", &data.train, 0, &stats, slots)?,
            self.split_on_device("val", &data.val, train_steps, &stats, slots)?,
            self.split_on_device("test", &data.test, train_steps + val_chunks, &stats, slots)?,
        ];
        let resident = Resident {
            splits,
            uniforms,
            step_group,
            stats,
            staging: staging_buf,
            slots,
        };
        for s in &resident.splits[1..] {
            self.write_uniforms(&resident, &self.eval_uniforms(s));
        }
        self.resident = Some(resident);
        Ok(())
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let train_len = self.resident.as_ref().ok_or(EngineError::NoData)?.splits[0].len;
        let batch = hyper.batch_size.max(1);
        if batch > self.capacity || order.len() != train_len {
            return Err(EngineError::Mismatch(format!(
                "an epoch of {} rows at batch {batch}, for an engine of {train_len} training rows at batch {}",
                order.len(),
                self.capacity
            )));
        }
        let model = ModelHyper::new(hyper, Activation::None);
        if self.hyper_host != Some(model) {
            self.ctx
                .queue
                .write_buffer(&self.hyper, 0, bytemuck::bytes_of(&model));
            self.hyper_host = Some(model);
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
        let mut uniforms = Vec::with_capacity(steps);
        for step in 0..steps {
            let offset = step * batch;
            let rows = batch.min(order.len() - offset);
            // The optimiser step this batch takes (1-based), as the CPU counts it.
            let t = self.steps_taken + step as u64 + 1;
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
        let val_chunks = Self::chunks(val.len, self.capacity);
        let stats = self.run_and_read(r, |pass| {
            for step in 0..steps {
                self.encode_step(pass, r, 0, step, true);
            }
            for c in 0..val_chunks {
                self.encode_step(pass, r, 1, val.first_slot + c, false);
            }
        })?;
        let (loss_sum, correct) = stats[..steps]
            .iter()
            .fold((0.0, 0.0), |(l, c), v| (l + v.0, c + v.1));
        if !loss_sum.is_finite() {
            let step = stats[..steps]
                .iter()
                .position(|v| !v.0.is_finite())
                .map_or(steps, |s| s + 1);
            return Err(EngineError::NonFiniteLoss {
                step,
                value: loss_sum,
            });
        }
        let val = Self::evaluation(&stats, val, self.capacity);
        self.steps_taken += steps as u64;
        Ok(EpochStats {
            loss_sum,
            correct: correct as usize,
            samples: order.len(),
            steps,
            val: Some(val),
            shared_secs: None,
        })
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let r = self.resident.as_ref().ok_or(EngineError::NoData)?;
        let index = match split {
            SplitName::Train => 0,
            SplitName::Val => 1,
            SplitName::Test => 2,
        };
        let s = &r.splits[index];
        let chunks = match split {
            // The training split's slots are its steps: write its chunks over them, reading
            // the rows in file order.
            SplitName::Train => {
                let identity: Vec<u32> = (0..s.len as u32).collect();
                self.ctx
                    .queue
                    .write_buffer(&s.indices, 0, bytemuck::cast_slice(&identity));
                let uniforms = self.eval_uniforms(s);
                self.write_uniforms(r, &uniforms);
                uniforms.len()
            }
            _ => Self::chunks(s.len, self.capacity),
        };
        let stats = self.run_and_read(r, |pass| {
            for c in 0..chunks {
                self.encode_step(pass, r, index, s.first_slot + c, false);
            }
        })?;
        Ok(Self::evaluation(&stats, s, self.capacity))
    }

    fn params(&self) -> Result<Params, EngineError> {
        let mut read = self.read_buffers(&[&self.work])?;
        Ok(Params {
            model: self.model(),
            values: read.pop().unwrap_or_default(),
        })
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        if params.model != self.model() {
            return Err(EngineError::params_mismatch(&self.model(), params));
        }
        let q = &self.ctx.queue;
        q.write_buffer(&self.work, 0, bytemuck::cast_slice(&params.values));
        let zeros = vec![0u8; 4 * self.count];
        q.write_buffer(&self.first, 0, &zeros);
        q.write_buffer(&self.second, 0, &zeros);
        self.steps_taken = 0;
        Ok(())
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.copy(&self.work, &self.best);
        Ok(())
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.copy(&self.best, &self.work);
        Ok(())
    }

    fn training_state(&self) -> Result<TrainingState, EngineError> {
        let mut v = self
            .read_buffers(&[&self.work, &self.best, &self.first, &self.second])?
            .into_iter();
        let mut next = || v.next().unwrap_or_default();
        Ok(TrainingState {
            params: next(),
            best: next(),
            first: next(),
            second: next(),
            step: self.steps_taken,
        })
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        state.check_len(self.count)?;
        let q = &self.ctx.queue;
        for (buffer, values) in [
            (&self.work, &state.params),
            (&self.best, &state.best),
            (&self.first, &state.first),
            (&self.second, &state.second),
        ] {
            q.write_buffer(buffer, 0, bytemuck::cast_slice(values));
        }
        self.steps_taken = state.step;
        Ok(())
    }
}
