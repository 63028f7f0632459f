//! The batched forward and backward pass on the fast GEMM, in any [`Scalar`]. Buffers live in a
//! [`Workspace`] made once per run, so wgtrain allocates nothing in a training step (the `gemm`
//! crate allocates its packing buffers per product; `cargo bench --bench cpu_parts` counts them).

use super::scalar::Scalar;
use super::{gemm, ops};
use crate::config::GradientReduction;
use crate::model::{Activation, LayerView};

/// Per-layer activations and gradients for up to `capacity` rows.
#[derive(Debug, Clone)]
pub struct Workspace<T> {
    /// outputs[l]: (B, O_l), layer l's output after its activation (the last holds logits).
    outputs: Vec<Vec<T>>,
    /// deltas[l]: (B, O_l), dL/dz of layer l's pre-activation.
    deltas: Vec<Vec<T>>,
    capacity: usize,
}

impl<T: Scalar> Workspace<T> {
    pub fn new(layers: &[LayerView], capacity: usize) -> Self {
        Workspace {
            outputs: layers
                .iter()
                .map(|v| vec![T::zero(); capacity * v.fan_out])
                .collect(),
            deltas: layers
                .iter()
                .map(|v| vec![T::zero(); capacity * v.fan_out])
                .collect(),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The last layer's logits for the rows of the latest forward pass.
    pub fn logits(&self, rows: usize, classes: usize) -> &[T] {
        &self.outputs[self.outputs.len() - 1][..rows * classes]
    }
}

/// The network's structure, borrowed by every pass.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub layers: &'a [LayerView],
    pub activation: Activation,
    pub threads: usize,
}

impl Shape<'_> {
    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |v| v.fan_out)
    }
}

/// Forward pass of `rows` rows of `input` (B, I_0); leaves logits in the workspace.
pub fn forward<T: Scalar>(
    shape: Shape<'_>,
    params: &[T],
    input: &[T],
    rows: usize,
    ws: &mut Workspace<T>,
) {
    assert!(
        rows <= ws.capacity,
        "forward: {rows} rows exceed the workspace's {}",
        ws.capacity
    );
    let last = shape.layers.len() - 1;
    for (l, view) in shape.layers.iter().enumerate() {
        let (before, rest) = ws.outputs.split_at_mut(l);
        let out = &mut rest[0][..rows * view.fan_out];
        let x = if l == 0 {
            &input[..rows * view.fan_in]
        } else {
            &before[l - 1][..rows * view.fan_in]
        };
        gemm::linear_forward_biased(
            out,
            x,
            &params[view.weight..view.bias],
            &params[view.bias..view.end()],
            rows,
            view.fan_in,
            view.fan_out,
            shape.threads,
        );
        if l != last {
            ops::activation_forward(shape.activation, out);
        }
    }
}

/// Forward + loss + backward for one mini-batch: writes the loss gradient (no penalty) into
/// `grad` (laid out like the parameters) and returns (summed loss, correct count).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_gradient<T: Scalar>(
    shape: Shape<'_>,
    params: &[T],
    input: &[T],
    labels: &[u8],
    rows: usize,
    reduction: GradientReduction,
    grad: &mut [T],
    ws: &mut Workspace<T>,
) -> (f64, usize) {
    let scale = match reduction {
        GradientReduction::Mean => T::one() / T::from_f64(rows as f64),
        GradientReduction::Sum => T::one(),
    };
    loss_and_gradient_scaled(shape, params, input, labels, rows, scale, grad, ws)
}

/// [`loss_and_gradient`] with the per-row gradient scale given: a shard of a mini-batch scales
/// by 1 / (the whole batch's rows), so the shards' gradients add up to the batch's.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_gradient_scaled<T: Scalar>(
    shape: Shape<'_>,
    params: &[T],
    input: &[T],
    labels: &[u8],
    rows: usize,
    scale: T,
    grad: &mut [T],
    ws: &mut Workspace<T>,
) -> (f64, usize) {
    forward(shape, params, input, rows, ws);
    let classes = shape.classes();
    let last = shape.layers.len() - 1;
    let (loss_sum, correct) = ops::softmax_xent(
        &ws.outputs[last][..rows * classes],
        &labels[..rows],
        classes,
        scale,
        Some(&mut ws.deltas[last][..rows * classes]),
    );
    for l in (0..=last).rev() {
        let view = shape.layers[l];
        let (lower, upper) = ws.deltas.split_at_mut(l);
        let dz = &upper[0][..rows * view.fan_out];
        let a_prev = if l == 0 {
            &input[..rows * view.fan_in]
        } else {
            &ws.outputs[l - 1][..rows * view.fan_in]
        };
        let (dw, db) = grad[view.weight..view.end()].split_at_mut(view.weight_len());
        gemm::linear_backward_params(
            dw,
            db,
            dz,
            a_prev,
            rows,
            view.fan_in,
            view.fan_out,
            shape.threads,
        );
        if l > 0 {
            let da = &mut lower[l - 1][..rows * view.fan_in];
            gemm::linear_backward_input(
                da,
                dz,
                &params[view.weight..view.bias],
                rows,
                view.fan_in,
                view.fan_out,
                shape.threads,
            );
            ops::activation_backward(shape.activation, a_prev, da);
        }
    }
    (loss_sum, correct)
}

/// Summed loss and correct count over a whole split, in chunks of the workspace's capacity.
pub fn evaluate<T: Scalar>(
    shape: Shape<'_>,
    params: &[T],
    images: &[T],
    labels: &[u8],
    ws: &mut Workspace<T>,
) -> (f64, usize) {
    let features = shape.layers[0].fan_in;
    let classes = shape.classes();
    let (mut loss_sum, mut correct) = (0.0, 0);
    let chunk = ws.capacity;
    for (start, labels) in (0..labels.len()).step_by(chunk).zip(labels.chunks(chunk)) {
        let rows = labels.len();
        forward(
            shape,
            params,
            &images[start * features..(start + rows) * features],
            rows,
            ws,
        );
        let (l, c) = ops::softmax_xent(ws.logits(rows, classes), labels, classes, T::one(), None);
        loss_sum += l;
        correct += c;
    }
    (loss_sum, correct)
}
