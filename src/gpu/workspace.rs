//! The workspace: one storage buffer that holds, for each model of a pack, its parameters and
//! every per-step operand (the batch, each layer's output and delta, per-row losses). Every
//! kernel binds it once and finds its operands by offset (matmul.wgsl says why: one binding
//! lets one matmul_update dispatch cover every layer).

use crate::model::{Network, Planned};

/// Elements each region is rounded up to (256 bytes), so that every operand starts on a
/// boundary a GPU's memory transactions like.
const REGION_ALIGN: usize = 64;

/// Where one model's slice of the workspace keeps each operand, in f32 elements from the
/// slice's start; slice `m` starts `m · per_model` elements into the buffer. The parameters
/// come first, so a parameter's index in the slice is its index in the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkLayout {
    /// Rows the batch, outputs, deltas and row losses have room for.
    pub capacity: usize,
    /// Parameters (the flat vector, `model::layer_views` order), at 0.
    pub params: usize,
    /// Their gradient, the same length (`None` where every gradient is applied as it is
    /// computed: matmul_update).
    pub grads: Option<usize>,
    /// The batch, (capacity, features) row-major.
    pub x: usize,
    /// Per layer: its output, (capacity, output length) row-major.
    pub outputs: Vec<usize>,
    /// Per layer: where a max pooling keeps its argmax (the output's shape); 0 for other layers.
    pub argmax: Vec<usize>,
    /// Per layer: the loss's gradient with respect to its output (the fused plan's: to its
    /// pre-activation, the activation's slope applied where it is computed), the output's
    /// shape.
    pub deltas: Vec<usize>,
    /// Per-row losses (capacity), then per-row correct flags (capacity).
    pub row_loss: usize,
    /// Elements between two models' slices.
    pub per_model: usize,
}

impl WorkLayout {
    /// The layout for `net` with room for `capacity` rows; `grads`: whether the parameters'
    /// gradient has a region of its own.
    pub fn new(net: &Network, capacity: usize, grads: bool) -> Self {
        let mut end = 0;
        let mut region = |elements: usize| {
            let at = end;
            end = (end + elements).next_multiple_of(REGION_ALIGN);
            at
        };
        let params = region(net.param_count);
        let grads = grads.then(|| region(net.param_count));
        let x = region(capacity * net.input.len());
        let outputs = net
            .outputs
            .iter()
            .map(|o| region(capacity * o.len()))
            .collect();
        let argmax = (net.layers.iter().zip(&net.outputs))
            .map(|(layer, o)| match layer {
                Planned::MaxPool2d { .. } => region(capacity * o.len()),
                _ => 0,
            })
            .collect();
        let deltas = net
            .outputs
            .iter()
            .map(|o| region(capacity * o.len()))
            .collect();
        let row_loss = region(2 * capacity);
        WorkLayout {
            capacity,
            params,
            grads,
            x,
            outputs,
            argmax,
            deltas,
            row_loss,
            per_model: end,
        }
    }

    /// Where layer `l`'s input starts: the batch for the first layer, else the output of the
    /// layer below.
    pub fn input(&self, l: usize) -> usize {
        match l {
            0 => self.x,
            _ => self.outputs[l - 1],
        }
    }

    /// Where the gradient of the parameter at `offset` is kept.
    pub fn grad(&self, offset: usize) -> usize {
        self.grads.unwrap_or(0) + offset
    }
}
