//! The workspace: one storage buffer that holds, for each model of a pack, its parameters and
//! every per-step operand (the batch, activations, deltas, per-row losses). Every kernel binds
//! it once and finds its operands by offset (matmul.wgsl says why: one binding lets one
//! matmul_update dispatch cover every layer).

/// Elements each region is rounded up to (256 bytes), so that every operand starts on a
/// boundary a GPU's memory transactions like.
const REGION_ALIGN: usize = 64;

/// Where one model's slice of the workspace keeps each operand, in f32 elements from the
/// slice's start; slice `m` starts `m · per_model` elements into the buffer. The parameters
/// come first, so a parameter's index in the slice is its index in the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkLayout {
    /// Rows the batch, activations, deltas and row losses have room for.
    pub capacity: usize,
    /// Parameters (the flat vector, `model::layer_views` order), at 0.
    pub params: usize,
    /// The batch, (capacity, features) row-major.
    pub x: usize,
    /// Per layer: its output activations, (capacity, fan_out) row-major.
    pub activations: Vec<usize>,
    /// Per layer: the loss's gradient with respect to its pre-activation, same shape.
    pub deltas: Vec<usize>,
    /// Per-row losses (capacity), then per-row correct flags (capacity).
    pub row_loss: usize,
    /// Elements between two models' slices.
    pub per_model: usize,
}

impl WorkLayout {
    /// The layout for a network of `widths` with room for `capacity` rows.
    pub fn new(widths: &[usize], capacity: usize) -> Self {
        let mut end = 0;
        let mut region = |elements: usize| {
            let at = end;
            end = (end + elements).next_multiple_of(REGION_ALIGN);
            at
        };
        let params = region(crate::model::param_count(widths));
        let x = region(capacity * widths[0]);
        let outputs = &widths[1..];
        let activations = outputs.iter().map(|&o| region(capacity * o)).collect();
        let deltas = outputs.iter().map(|&o| region(capacity * o)).collect();
        let row_loss = region(2 * capacity);
        WorkLayout {
            capacity,
            params,
            x,
            activations,
            deltas,
            row_loss,
            per_model: end,
        }
    }

    /// Where layer `l`'s input starts: the batch for the first layer, else the activations
    /// of the layer below.
    pub fn input(&self, l: usize) -> usize {
        if l == 0 {
            self.x
        } else {
            self.activations[l - 1]
        }
    }
}
