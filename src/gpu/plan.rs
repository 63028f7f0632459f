//! The GPU's scheduler: the dispatches of one training step, planned from a network before any
//! buffer exists. A step gathers the batch, runs each layer forward, takes the loss, runs each
//! layer backward and updates the parameters; an evaluation chunk runs the forward part and sums
//! the batch's loss and accuracy.
//!
//! Every network can take the plan layer by layer: a convolution or dense product, then its
//! activation as a pass of its own; pooling keeps its argmax; dropout masks with the step
//! uniform's counters; each layer backward writes its parameters' gradient beside them; one
//! update per tensor. A network of dense layers alone with one hidden activation
//! (`Network::dense_stack`) takes the fused plan instead, whose kernels do in one dispatch what the layer-by-layer plan does in several: the
//! gather in the first product's loads (`matmul_gather`), the bias and hidden activation in each
//! product's epilogue (the activation is each model's own, from its hyperparameters), the
//! softmax cross-entropy and the input gradient below it in the output layer's
//! (`matmul_softmax_xent`), and every layer's gradient applied by the optimiser as it is
//! computed (`matmul_update`, which also sums the batch's loss). The paper's MLP takes 3
//! dispatches a step.
//!
//! Offsets are the [`WorkLayout`]'s; what depends on the data (a split's index lists, the stats
//! slots) is filled in when the data is made resident.

use super::kernels::{Family, Kernel, MAX_FUSED_CLASSES};
use super::uniforms::{
    ActivationParams, Conv2dParams, DropoutParams, GatherParams, MatmulParams, Pool2dParams,
    UpdateParams, XentParams, activation_code, update_tables,
};
use super::workspace::WorkLayout;
use crate::model::dropout::DropoutMask;
use crate::model::{Activation, LayerView, Network, Planned, layer_views};

/// Rows per evaluation chunk of a fused plan (at least the batch size): a dense network's rows
/// are small, so a chunk takes many.
pub const EVAL_ROWS: usize = 1024;

/// Over which rows a matmul's output runs: the step's, or a fixed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    Step,
    Fixed(u32),
}

/// One dispatch of a step, with the uniform it reads.
#[derive(Debug, Clone)]
pub enum Op {
    /// gather_batch: the step's rows of the split, z-scored, into x (the split's index list
    /// is filled in per split).
    Gather(GatherParams),
    /// matmul_gather: the first layer's product with the gather in its loads (per split).
    MatmulGather { p: MatmulParams, n: u32 },
    /// matmul over an (m, n) output.
    Matmul {
        p: MatmulParams,
        rows: Rows,
        n: u32,
        family: Family,
    },
    /// softmax_xent over the logits, with the split's labels.
    SoftmaxXent,
    /// matmul_softmax_xent: the output layer's product and the loss (per split).
    MatmulSoftmaxXent(MatmulParams),
    /// activation.wgsl over `len` elements.
    Activation {
        backward: bool,
        p: ActivationParams,
        len: u32,
    },
    /// conv.wgsl or pool.wgsl over `len` elements, `uniform` its params' bytes.
    Conv {
        entry: Kernel,
        uniform: Vec<u8>,
        len: u32,
    },
    /// dropout.wgsl over `len` elements, its seed written with each epoch; a forward one has
    /// the copy an evaluation records instead (`eval`).
    Dropout {
        p: DropoutParams,
        eval: Option<DropoutParams>,
        len: u32,
    },
    /// update.wgsl over `len` parameters.
    Update { p: UpdateParams, len: u32 },
    /// matmul_update over these layers, one dispatch per [`update_tables`] table (the stats
    /// slots are filled in with the data).
    MatmulUpdate(Vec<MatmulParams>),
}

impl Op {
    /// Dispatches the op records.
    pub fn dispatches(&self) -> usize {
        match self {
            Op::MatmulUpdate(layers) => update_tables(layers).len(),
            _ => 1,
        }
    }
}

/// A planned dispatch and the label its buffers and bind groups carry.
#[derive(Debug, Clone)]
pub struct Step {
    pub label: String,
    pub op: Op,
}

/// The dispatches of a step and where their operands are.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub layout: WorkLayout,
    /// From the gather to the loss: every training step and evaluation chunk.
    pub forward: Vec<Step>,
    /// A training step's, after the forward ones: from the loss's gradient down, then the
    /// updates (once every backward pass has read the old weights).
    pub backward: Vec<Step>,
    /// The loss's uniform (softmax_xent, batch_stats), but for the split's index lists and
    /// the stats slots.
    pub xent: XentParams,
    /// Whether a training step's loss is summed by an update (matmul_update) rather than by
    /// batch_stats.
    pub stats_in_update: bool,
    /// Whether the hidden activation is each model's own (from its hyperparameters) rather
    /// than the network's.
    pub activation_per_model: bool,
}

fn u(v: usize) -> u32 {
    v as u32
}

impl StepPlan {
    /// The plan for `net` trained at up to `batch_size` rows a step; `fuse_gather`: whether a
    /// fused plan gathers in the first product's loads.
    pub fn new(net: &Network, batch_size: usize, fuse_gather: bool) -> Self {
        match net.dense_stack() {
            Some((widths, _)) => Self::fused_dense(net, &widths, batch_size, fuse_gather),
            None => Self::layer_by_layer(net, batch_size),
        }
    }

    /// Dispatches one training step records.
    pub fn dispatches_per_step(&self) -> usize {
        let stats = usize::from(!self.stats_in_update);
        let count = |steps: &[Step]| steps.iter().map(|s| s.op.dispatches()).sum::<usize>();
        count(&self.forward) + stats + count(&self.backward)
    }

    /// Whether a step draws dropout masks (from one seed and step count for the whole pack): a
    /// dropout of p = 0 keeps every value and draws none that matter.
    pub fn draws_dropout(&self) -> bool {
        (self.forward.iter()).any(|s| matches!(s.op, Op::Dropout { p, .. } if p.threshold > 0))
    }

    fn xent(net: &Network, layout: &WorkLayout) -> XentParams {
        let last = net.layers.len() - 1;
        XentParams {
            classes: u(net.classes()),
            capacity: u(layout.capacity),
            index_ms: 0,
            slots: 0,
            work_ms: u(layout.per_model),
            logits_off: u(layout.outputs[last]),
            dz_off: u(layout.deltas[last]),
            row_loss_off: u(layout.row_loss),
        }
    }

    fn gather(net: &Network, layout: &WorkLayout) -> Step {
        Step {
            label: "gather".into(),
            op: Op::Gather(GatherParams {
                features: u(net.input.len()),
                index_ms: 0,
                work_ms: u(layout.per_model),
                x_off: u(layout.x),
            }),
        }
    }

    /// The fused plan of a network of dense layers of `widths`.
    fn fused_dense(net: &Network, widths: &[usize], batch_size: usize, fuse_gather: bool) -> Self {
        let layout = WorkLayout::new(net, batch_size.max(EVAL_ROWS), false);
        let views = layer_views(widths);
        let last = views.len() - 1;
        let (work_ms, capacity) = (u(layout.per_model), u(layout.capacity));
        let xent_fused = net.classes() <= MAX_FUSED_CLASSES;
        // One matmul cannot take both the gather and the softmax.
        let gather_fused = fuse_gather && (last > 0 || !xent_fused);
        let mut forward = Vec::new();
        if !gather_fused {
            forward.push(Self::gather(net, &layout));
        }
        let (mut input_grads, mut updates) = (Vec::new(), Vec::new());
        for (l, v) in views.iter().enumerate() {
            let (input, delta) = (u(layout.input(l)), u(layout.deltas[l]));
            forward.push(Self::fused_forward(
                &layout,
                (l, v, last),
                (gather_fused, xent_fused),
            ));
            if l > 0 && !(xent_fused && l == last) {
                let p = MatmulParams {
                    a_off: delta,
                    c_off: u(layout.deltas[l - 1]),
                    aux_off: input,
                    work_ms,
                    ..MatmulParams::input_grad(v)
                };
                let (rows, n, family) = (Rows::Step, u(v.fan_in), Family::MatmulInputGrad);
                let op = Op::Matmul { p, rows, n, family };
                input_grads.push(Step {
                    label: format!("fc{}.input_grad", l + 1),
                    op,
                });
            }
            updates.push(MatmulParams {
                a_off: delta,
                b_off: input,
                work_ms,
                param_ms: u(net.param_count),
                capacity,
                row_loss_off: u(layout.row_loss),
                // The output layer's update sums the batch's losses.
                sum_stats: u32::from(l == last),
                ..MatmulParams::weight_grad(v)
            });
        }
        if !xent_fused {
            forward.push(Step {
                label: "softmax_xent".into(),
                op: Op::SoftmaxXent,
            });
        }
        // From the output layer down, then every layer's gradient applied in place.
        let mut backward: Vec<Step> = input_grads.into_iter().rev().collect();
        backward.push(Step {
            label: "weight_grad_update".into(),
            op: Op::MatmulUpdate(updates),
        });
        StepPlan {
            xent: Self::xent(net, &layout),
            layout,
            forward,
            backward,
            stats_in_update: true,
            activation_per_model: true,
        }
    }

    /// Dense layer `l` of `last + 1`'s forward op in a fused plan: with the gather in its loads
    /// (the first layer), with the loss in its epilogue (the output layer), or a plain product;
    /// the bias and activation are in its epilogue.
    fn fused_forward(
        layout: &WorkLayout,
        (l, v, last): (usize, &LayerView, usize),
        (gather_fused, xent_fused): (bool, bool),
    ) -> Step {
        let p = MatmulParams {
            a_off: u(layout.input(l)),
            c_off: u(layout.outputs[l]),
            work_ms: u(layout.per_model),
            capacity: u(layout.capacity),
            row_loss_off: u(layout.row_loss),
            x_off: u(layout.x),
            ..MatmulParams::forward(v, l != last)
        };
        let n = u(v.fan_out);
        let op = if l == 0 && gather_fused {
            Op::MatmulGather { p, n }
        } else if l == last && xent_fused {
            // Where the softmax is fused, so is the input gradient of the layer below.
            Op::MatmulSoftmaxXent(MatmulParams {
                input_grad: u32::from(l > 0),
                c_off: u(layout.deltas[l]),
                dh_off: if l > 0 { u(layout.deltas[l - 1]) } else { 0 },
                ..p
            })
        } else {
            let (rows, family) = (Rows::Step, Family::MatmulForward);
            Op::Matmul { p, rows, n, family }
        };
        Step {
            label: format!("fc{}.forward", l + 1),
            op,
        }
    }

    /// The layer-by-layer plan of any network.
    fn layer_by_layer(net: &Network, batch_size: usize) -> Self {
        let layout = WorkLayout::new(net, batch_size.max(1), true);
        let mut plan = LayerOps {
            forward: vec![Self::gather(net, &layout)],
            ..LayerOps::default()
        };
        let mut backward = Vec::new();
        for (l, layer) in net.layers.iter().enumerate() {
            let s = LayerSlots::new(net, &layout, l);
            // Each layer's backward passes go before those of the layers below it.
            let mut back = plan.layer(layer, &s);
            back.append(&mut backward);
            backward = back;
        }
        plan.forward.push(Step {
            label: "softmax_xent".into(),
            op: Op::SoftmaxXent,
        });
        backward.extend(plan.updates(&layout, net.param_count));
        StepPlan {
            xent: Self::xent(net, &layout),
            layout,
            forward: plan.forward,
            backward,
            stats_in_update: false,
            activation_per_model: false,
        }
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
    /// ∂L/∂(the layer's output), and ∂L/∂(its input) (the layer below's output delta).
    delta_out: usize,
    delta_in: usize,
    /// A pooling's argmax indices.
    argmax: usize,
    /// capacity × the output's length, and × the input's.
    out_elems: u32,
    in_elems: u32,
    capacity: usize,
    /// Where the parameters' gradient starts.
    grads: usize,
    work_ms: u32,
}

impl LayerSlots {
    fn new(net: &Network, layout: &WorkLayout, l: usize) -> Self {
        let capacity = layout.capacity;
        let out_len = net.outputs[l].len();
        LayerSlots {
            l,
            input: layout.input(l),
            output: layout.outputs[l],
            out_len,
            delta_out: layout.deltas[l],
            delta_in: if l > 0 { layout.deltas[l - 1] } else { 0 },
            argmax: layout.argmax[l],
            out_elems: u(capacity * out_len),
            in_elems: u(capacity * net.layer_input(l).len()),
            capacity,
            grads: layout.grad(0),
            work_ms: u(layout.per_model),
        }
    }

    /// `layer3.conv2d_forward`: a dispatch's label.
    fn label(&self, what: &str) -> String {
        format!("layer{}.{what}", self.l + 1)
    }

    /// The layer's conv.wgsl or pool.wgsl op `entry` with uniform `p`, over `len` elements.
    fn conv_op<P: bytemuck::Pod>(&self, entry: Kernel, p: &P, len: u32) -> Step {
        let uniform = bytemuck::bytes_of(p).to_vec();
        Step {
            label: self.label(entry.name()),
            op: Op::Conv {
                entry,
                uniform,
                len,
            },
        }
    }
}

/// The layer-by-layer plan as it is built: every forward op in order, and each tensor's
/// (weight, bias, outputs) for its update.
#[derive(Default)]
struct LayerOps {
    forward: Vec<Step>,
    tensors: Vec<(usize, usize, usize)>,
}

impl LayerOps {
    /// One layer's ops: its forward ones onto `self.forward`, its backward ones returned in
    /// order.
    fn layer(&mut self, layer: &Planned, s: &LayerSlots) -> Vec<Step> {
        let mut back = Vec::new();
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                let p = |offsets: [usize; 4]| Conv2dParams {
                    work_ms: s.work_ms,
                    ..Conv2dParams::new(&shape, 0, offsets.map(u))
                };
                let conv = |entry, p: Conv2dParams, len| s.conv_op(entry, &p, len);
                let fwd = p([s.input, weight, bias, s.output]);
                self.forward
                    .push(conv(Kernel::Conv2dForward, fwd, s.out_elems));
                self.activation(activation, s, &mut back);
                let grads = p([s.input, s.grads + weight, s.grads + bias, s.delta_out]);
                let params_len = u(shape.weights_len() + shape.filters);
                back.push(conv(Kernel::Conv2dBackwardParams, grads, params_len));
                if s.l > 0 {
                    let dx = p([s.delta_in, weight, bias, s.delta_out]);
                    back.push(conv(Kernel::Conv2dBackwardInput, dx, s.in_elems));
                }
                self.tensors.push((weight, bias, shape.filters));
            }
            Planned::MaxPool2d { shape } => {
                let p = |offsets: [usize; 3]| Pool2dParams {
                    work_ms: s.work_ms,
                    ..Pool2dParams::new(&shape, 0, offsets.map(u))
                };
                let pool = |entry, p: Pool2dParams, len| s.conv_op(entry, &p, len);
                let fwd = p([s.input, s.output, s.argmax]);
                self.forward
                    .push(pool(Kernel::MaxPool2dForward, fwd, s.out_elems));
                if s.l > 0 {
                    let dx = p([s.delta_in, s.delta_out, s.argmax]);
                    back.push(pool(Kernel::MaxPool2dBackward, dx, s.in_elems));
                }
            }
            Planned::Dropout { p, .. } => self.dropout(p, s, &mut back),
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let view = LayerView {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                };
                self.dense(&view, activation, s, &mut back)
            }
        }
        back
    }

    /// A layer's activation as ops of their own: forward, and its slope first thing backward.
    fn activation(&mut self, act: Activation, s: &LayerSlots, back: &mut Vec<Step>) {
        if act == Activation::None {
            return;
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
        let op = |backward| Op::Activation {
            backward,
            p,
            len: s.out_elems,
        };
        self.forward.push(Step {
            label: s.label("activation_forward"),
            op: op(false),
        });
        back.push(Step {
            label: s.label("activation_backward"),
            op: op(true),
        });
    }

    fn dropout(&mut self, p: f64, s: &LayerSlots, back: &mut Vec<Step>) {
        // The seed is the run's, written with each epoch.
        let mask = DropoutMask::new(0, 0, 0, u(s.l), p);
        let train = DropoutParams {
            z_off: u(s.output),
            from_step: 1,
            per_row: u(s.out_len),
            ..DropoutParams::new(&mask, 0, s.work_ms, u(s.input))
        };
        // Evaluation keeps every value at scale 1: a copy.
        let keep_all = DropoutMask::new(0, 0, 0, u(s.l), 0.0);
        let eval = DropoutParams {
            z_off: u(s.output),
            per_row: u(s.out_len),
            ..DropoutParams::new(&keep_all, 0, s.work_ms, u(s.input))
        };
        self.forward.push(Step {
            label: s.label("dropout_forward"),
            op: Op::Dropout {
                p: train,
                eval: Some(eval),
                len: s.out_elems,
            },
        });
        // The gradient goes through where the value did, with the same scale; a first layer
        // has no layer below to give it to (nor a delta region of its input).
        if s.l == 0 {
            return;
        }
        let through = DropoutParams {
            x_off: u(s.delta_out),
            z_off: u(s.delta_in),
            ..train
        };
        back.push(Step {
            label: s.label("dropout_backward"),
            op: Op::Dropout {
                p: through,
                eval: None,
                len: s.out_elems,
            },
        });
    }

    fn dense(&mut self, view: &LayerView, act: Activation, s: &LayerSlots, back: &mut Vec<Step>) {
        let matmul = |label: String, p, rows, n, family| Step {
            label,
            op: Op::Matmul { p, rows, n, family },
        };
        // Z = X·Wᵀ + b, the activation an op of its own (activated = 0).
        let fwd = MatmulParams {
            a_off: u(s.input),
            c_off: u(s.output),
            work_ms: s.work_ms,
            ..MatmulParams::forward(view, false)
        };
        let (capacity, fan_out) = (Rows::Fixed(u(s.capacity)), u(view.fan_out));
        self.forward.push(matmul(
            s.label("forward"),
            fwd,
            capacity,
            fan_out,
            Family::MatmulForward,
        ));
        self.activation(act, s, back);
        let grads = MatmulParams {
            a_off: u(s.delta_out),
            b_off: u(s.input),
            c_off: u(s.grads + view.weight),
            bias_off: u(s.grads + view.bias),
            work_ms: s.work_ms,
            ..MatmulParams::weight_grad(view)
        };
        back.push(matmul(
            s.label("weight_grad"),
            grads,
            Rows::Fixed(fan_out),
            u(view.fan_in + 1),
            Family::MatmulParamGrad,
        ));
        if s.l > 0 {
            // dA = dZ·W; the layer below applies its own activation's slope.
            let dx = MatmulParams {
                a_off: u(s.delta_out),
                c_off: u(s.delta_in),
                epilogue: 0,
                activated: 0,
                work_ms: s.work_ms,
                ..MatmulParams::input_grad(view)
            };
            back.push(matmul(
                s.label("input_grad"),
                dx,
                capacity,
                u(view.fan_in),
                Family::MatmulInputGrad,
            ));
        }
        self.tensors.push((view.weight, view.bias, view.fan_out));
    }

    /// One update per tensor: its weights penalised, its biases not.
    fn updates(&self, layout: &WorkLayout, count: usize) -> Vec<Step> {
        let mut updates = Vec::new();
        for &(weight, bias, outputs) in &self.tensors {
            for (offset, len, penalised) in [(weight, bias - weight, 1), (bias, outputs, 0)] {
                let p = UpdateParams {
                    param_off: u(offset),
                    grad_off: u(layout.grad(offset)),
                    len: u(len),
                    penalised,
                    work_ms: u(layout.per_model),
                    param_ms: u(count),
                    _pad: [0; 2],
                };
                updates.push(Step {
                    label: "update".into(),
                    op: Op::Update { p, len: u(len) },
                });
            }
        }
        updates
    }
}
