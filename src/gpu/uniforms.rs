//! The uniforms the kernels read, each the Rust twin of a struct in `shaders/*.wgsl` (same
//! fields, same order, `#[repr(C)]`; `uniform_structs_match_their_wgsl_sizes` holds them to it),
//! and the shader codes they carry.

use bytemuck::{Pod, Zeroable};

use crate::model::LayerView;

/// Bytes between two per-step uniform slots (WebGPU's largest dynamic-offset alignment).
pub const STEP_STRIDE: u64 = 256;

/// Twin of `Step` in common.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct StepUniform {
    pub offset: u32,
    pub rows: u32,
    pub scale: f32,
    pub adam_c1: f32,
    pub adam_c2: f32,
    pub stat_slot: u32,
    /// The model dispatch z = 0 works on (z counts on from there).
    pub first_model: u32,
    /// The dropout masks' counters at this step (the optimiser step being taken: high word,
    /// low word), for dropout_forward with `from_step`.
    pub dropout_epoch: u32,
    pub dropout_step: u32,
    pub _pad: [u32; 3],
}

/// Twin of `Model` in common.wgsl: one model's hyperparameters, read by matmul.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct ModelHyper {
    pub learning_rate: f32,
    pub gamma: f32,
    pub l1: f32,
    pub l2: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Of the hidden layers (0 none, 1 tanh, 2 sigmoid, 3 ReLU).
    pub activation: u32,
    /// 0: SGD/momentum; 1: Adam.
    pub optimizer: u32,
    /// 0 once the model has stopped: matmul_update leaves its parameters alone.
    pub training: u32,
    pub _pad: [u32; 2],
}

/// The shader's code for an activation.
pub fn activation_code(a: crate::model::Activation) -> u32 {
    use crate::model::Activation;
    match a {
        Activation::None => 0,
        Activation::Tanh => 1,
        Activation::Sigmoid => 2,
        Activation::Relu => 3,
    }
}

/// The activation a shader code stands for ([`activation_code`] backwards).
pub fn activation_of_code(code: u32) -> crate::model::Activation {
    use crate::model::Activation;
    [
        Activation::None,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Relu,
    ]
    .into_iter()
    .find(|&a| activation_code(a) == code)
    .unwrap_or(Activation::None)
}

impl ModelHyper {
    /// `hyper` for a model whose hidden layers use `activation`.
    pub fn new(hyper: &crate::config::Hyper, activation: crate::model::Activation) -> Self {
        ModelHyper {
            learning_rate: hyper.learning_rate as f32,
            gamma: hyper.momentum_gamma as f32,
            l1: hyper.l1 as f32,
            l2: hyper.l2 as f32,
            beta1: hyper.adam_beta1 as f32,
            beta2: hyper.adam_beta2 as f32,
            epsilon: hyper.adam_epsilon as f32,
            activation: activation_code(activation),
            optimizer: match hyper.optimizer {
                crate::config::Optimizer::Sgd => 0,
                crate::config::Optimizer::Adam => 1,
            },
            training: 1,
            _pad: [0; 2],
        }
    }
}

/// Twin of `GatherParams` in batch.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct GatherParams {
    pub features: u32,
    /// Elements between two models' index lists (0: the models share one).
    pub index_ms: u32,
    /// Elements between two models' slices of the workspace.
    pub work_ms: u32,
    /// Where x starts in a model's slice.
    pub x_off: u32,
}

/// Twin of `DropoutParams` in dropout.wgsl: one layer's mask at one step (see
/// [`crate::model::dropout::DropoutMask`], whose fields these are, the seed split in halves).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct DropoutParams {
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub epoch: u32,
    pub step: u32,
    pub layer: u32,
    pub threshold: u32,
    /// 1 / (1 − p) in f32, as the CPU path computes it.
    pub scale: f32,
    /// Elements to mask.
    pub len: u32,
    /// Elements between two models' slices of the workspace.
    pub work_ms: u32,
    /// Where x starts in a model's slice.
    pub x_off: u32,
    /// Where the masked values go (x_off: in place).
    pub z_off: u32,
    /// 1: the mask's epoch and step are the step uniform's dropout counters.
    pub from_step: u32,
    /// > 0: the elements are the step's rows × this, not `len`.
    pub per_row: u32,
    pub _pad: [u32; 3],
}

impl DropoutParams {
    /// The uniform for `mask` over `len` elements at `x_off`, in place.
    pub fn new(
        mask: &crate::model::dropout::DropoutMask,
        len: u32,
        work_ms: u32,
        x_off: u32,
    ) -> Self {
        DropoutParams {
            seed_lo: mask.seed as u32,
            seed_hi: (mask.seed >> 32) as u32,
            epoch: mask.epoch,
            step: mask.step,
            layer: mask.layer,
            threshold: mask.threshold,
            scale: mask.scale_f32(),
            len,
            work_ms,
            x_off,
            z_off: x_off,
            from_step: 0,
            per_row: 0,
            _pad: [0; 3],
        }
    }
}

/// Twin of `ActivationParams` in activation.wgsl: one layer's activation (`kind`, a shader
/// code) over `len` elements, or the step's rows × `per_row`, at x_off (and its gradient at
/// g_off).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct ActivationParams {
    pub kind: u32,
    pub len: u32,
    pub per_row: u32,
    pub work_ms: u32,
    pub x_off: u32,
    pub g_off: u32,
    pub _pad: [u32; 2],
}

/// Twin of `UpdateParams` in update.wgsl: one optimiser step for `len` parameters at
/// `param_off` from their gradient at `grad_off`, penalised (weights) or not (biases).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct UpdateParams {
    pub param_off: u32,
    pub grad_off: u32,
    pub len: u32,
    pub penalised: u32,
    pub work_ms: u32,
    /// Elements between two models' optimiser moments (the parameter count).
    pub param_ms: u32,
    pub _pad: [u32; 2],
}

/// Twin of `Conv2dParams` in conv.wgsl: one convolution's shape and where its operands are
/// in a model's slice of the workspace (x or dx, w or dw, b or db, z or dz).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct Conv2dParams {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub filters: u32,
    pub kernel: u32,
    pub stride: u32,
    pub padding: u32,
    pub rows: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub x_off: u32,
    pub w_off: u32,
    pub b_off: u32,
    pub z_off: u32,
    pub work_ms: u32,
    pub _a: u32,
}

impl Conv2dParams {
    /// `shape` over `rows` images with its operands at these offsets.
    pub fn new(shape: &crate::model::Conv2d, rows: u32, offsets: [u32; 4]) -> Self {
        let [x_off, w_off, b_off, z_off] = offsets;
        Conv2dParams {
            channels: shape.channels as u32,
            height: shape.height as u32,
            width: shape.width as u32,
            filters: shape.filters as u32,
            kernel: shape.kernel as u32,
            stride: shape.stride as u32,
            padding: shape.padding as u32,
            rows,
            out_h: shape.out_height() as u32,
            out_w: shape.out_width() as u32,
            x_off,
            w_off,
            b_off,
            z_off,
            work_ms: 0,
            _a: 0,
        }
    }
}

/// Twin of `Pool2dParams` in pool.wgsl: one max pooling's shape and where x (or dx), z (or
/// dz) and the argmax indices are in a model's slice of the workspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct Pool2dParams {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub window: u32,
    pub stride: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub rows: u32,
    pub x_off: u32,
    pub z_off: u32,
    pub arg_off: u32,
    pub work_ms: u32,
}

impl Pool2dParams {
    /// `shape` over `rows` images with x, z and argmax at these offsets.
    pub fn new(shape: &crate::model::MaxPool2d, rows: u32, offsets: [u32; 3]) -> Self {
        let [x_off, z_off, arg_off] = offsets;
        Pool2dParams {
            channels: shape.channels as u32,
            height: shape.height as u32,
            width: shape.width as u32,
            window: shape.window as u32,
            stride: shape.stride as u32,
            out_h: shape.out_height() as u32,
            out_w: shape.out_width() as u32,
            rows,
            x_off,
            z_off,
            arg_off,
            work_ms: 0,
        }
    }
}

/// Twin of `MatmulParams` in matmul.wgsl. Offsets are elements from the start of a model's
/// slice of the workspace (`work`), whose parameters come first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// 0: none; 1: m is the step's row count; 2: k is.
    pub rows_dim: u32,
    pub a_off: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_off: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub c_off: u32,
    pub c_rs: u32,
    pub bias_off: u32,
    /// 0: plain; 1: + bias then activation; 2: × activation slope of aux.
    pub epilogue: u32,
    /// 1: the epilogue applies the model's hidden activation; 0: none (the output layer).
    pub activated: u32,
    /// 1: append a column of ones to B and write that column of C to `bias_off` (bias gradient).
    pub bias_column: u32,
    /// Elements between two models' slices of the workspace.
    pub work_ms: u32,
    /// matmul_update: elements between two models' optimiser moments (the parameter count).
    pub param_ms: u32,
    /// Epilogue 2: where aux, (m, n) row-major, starts.
    pub aux_off: u32,
    /// matmul_softmax_xent with input_grad: where the layer below's delta goes (A's shape).
    pub dh_off: u32,
    /// matmul_softmax_xent, matmul_update: where the per-row losses start (then, `capacity`
    /// on, the per-row correct flags).
    pub row_loss_off: u32,
    /// matmul_gather: where the gathered batch is stored (A's shape).
    pub x_off: u32,
    /// Rows the workspace holds (where row_correct starts after the row losses).
    pub capacity: u32,
    /// matmul_update: stats slots per model.
    pub slots: u32,
    /// matmul_update: 1 also sums the step's row losses into its stats slot.
    pub sum_stats: u32,
    /// matmul_softmax_xent, matmul_gather: elements between two models' index lists (0: shared).
    pub index_ms: u32,
    /// matmul_softmax_xent: 1 also writes the layer below's input gradient at dh_off.
    pub input_grad: u32,
    /// matmul_update: the layer's first tile in its dispatch, and its tiles per row
    /// ([`update_tables`] fills them in).
    pub first_tile: u32,
    pub tiles_x: u32,
    pub _pad: [u32; 3],
}

/// Layers one matmul_update dispatch covers (matmul.wgsl's MAX_UPDATE_LAYERS).
pub const MAX_UPDATE_LAYERS: usize = 8;

/// One matmul_update dispatch: its layer table (matmul.wgsl's `layers`) and how many
/// workgroups its layers' tiles take.
#[derive(Debug, Clone, Copy)]
pub struct UpdateTable {
    pub layers: [MatmulParams; MAX_UPDATE_LAYERS],
    pub tiles: u32,
}

/// The weight-gradient updates `layers` (each one [`MatmulParams::weight_grad`] placed in the
/// workspace) as few matmul_update dispatches as the table allows: each layer's tiles follow
/// the one before it; unused entries start past every tile.
pub fn update_tables(layers: &[MatmulParams]) -> Vec<UpdateTable> {
    layers
        .chunks(MAX_UPDATE_LAYERS)
        .map(|chunk| {
            let unused = MatmulParams {
                first_tile: u32::MAX,
                ..Default::default()
            };
            let mut table = UpdateTable {
                layers: [unused; MAX_UPDATE_LAYERS],
                tiles: 0,
            };
            for (entry, layer) in table.layers.iter_mut().zip(chunk) {
                let (tiles_x, tiles_y) = matmul_grid(layer.m, layer.n + layer.bias_column);
                *entry = MatmulParams {
                    first_tile: table.tiles,
                    tiles_x,
                    ..*layer
                };
                table.tiles += tiles_x * tiles_y;
            }
            table
        })
        .collect()
}

impl MatmulParams {
    /// Layer `v`'s forward pass, C = act(A·Wᵀ + b): A the batch's inputs (rows × fan_in), W
    /// (fan_out × fan_in, row-major) and b where `v` places them in the flat parameter vector
    /// (which opens the workspace); `activated`: the model's hidden activation, else none (the
    /// output layer). The caller places A and C in the workspace (`a_off`, `c_off`).
    pub fn forward(v: &LayerView, activated: bool) -> Self {
        let (i, o) = (v.fan_in as u32, v.fan_out as u32);
        MatmulParams {
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
            activated: activated as u32,
            ..Default::default()
        }
    }

    /// Layer `v`'s weight gradient dW = dZᵀ·A (fan_out × fan_in) and, from B's extra column of
    /// ones, the bias gradient Σ_r dZ, written to C where `v` places W and b (for
    /// matmul_update, C is the parameter vector itself).
    pub fn weight_grad(v: &LayerView) -> Self {
        let (i, o) = (v.fan_in as u32, v.fan_out as u32);
        MatmulParams {
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
        }
    }

    /// The gradient of layer `v`'s input, dA = dZ·W ⊙ f'(A) (rows × fan_in), f' the model's
    /// hidden activation's slope taken through A (aux).
    pub fn input_grad(v: &LayerView) -> Self {
        let (i, o) = (v.fan_in as u32, v.fan_out as u32);
        MatmulParams {
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
            ..Default::default()
        }
    }
}

/// Twin of `XentParams` in softmax_xent.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct XentParams {
    pub classes: u32,
    pub capacity: u32,
    /// Elements between two models' index lists (0: shared).
    pub index_ms: u32,
    /// Stats slots per model.
    pub slots: u32,
    /// Elements between two models' slices of the workspace, and where in a slice the logits,
    /// their gradient and the per-row losses start.
    pub work_ms: u32,
    pub logits_off: u32,
    pub dz_off: u32,
    pub row_loss_off: u32,
}

/// Workgroups of matmul.wgsl's 16×16 output tiles over an (m, n) output.
pub fn matmul_grid(m: u32, n: u32) -> (u32, u32) {
    (n.div_ceil(16).max(1), m.div_ceil(16).max(1))
}
