//! A planned network's (`crate::network::Network`) loss and gradient for one mini-batch, the
//! reference pass (issue 18): each layer through its plain-loop reference (`cpu::conv`,
//! `cpu::ops`, `dropout`), accumulating in f64, generic over f32 and f64. The fast CPU engine
//! and the GPU scheduler for such networks are to be held to it; a network of dense layers
//! alone gives what `cpu::net` gives for its widths (tested).

use super::Scalar;
use super::conv::{
    conv2d_backward_input, conv2d_backward_params, conv2d_forward, max_pool2d_backward,
    max_pool2d_forward,
};
use super::ops;
use crate::dropout::{DropoutMask, dropout_backward, dropout_forward};
use crate::network::{Network, Planned};

/// What a training step's dropout masks are drawn from: the run's seed, the epoch and the step
/// (a layer's index is its stream). Evaluation passes `None` and drops nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCounters {
    pub seed: u64,
    pub epoch: u32,
    pub step: u32,
}

fn mask(counters: &StepCounters, layer: usize, p: f64) -> DropoutMask {
    DropoutMask::new(
        counters.seed,
        counters.epoch,
        counters.step,
        layer as u32,
        p,
    )
}

/// Forward, softmax cross-entropy and (with `grad`) backward for `rows` images `x` (B, C, H, W)
/// labelled `labels`: returns (summed loss, correct count) and writes the loss gradient,
/// laid out like `params`, each row's scaled by `scale` (1/B for the mean). Dropout applies
/// only with `training`.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_gradient_reference<T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    labels: &[u8],
    rows: usize,
    scale: T,
    training: Option<StepCounters>,
    grad: Option<&mut [T]>,
) -> (f64, usize) {
    // acts[l] is layer l's input; acts[l + 1] its output. Pooling keeps where each max was.
    let mut acts: Vec<Vec<T>> = vec![x[..rows * net.input.len()].to_vec()];
    let mut argmax: Vec<Vec<u32>> = vec![Vec::new(); net.layers.len()];
    for (l, layer) in net.layers.iter().enumerate() {
        let a = &acts[l];
        let out = match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                let mut z = conv2d_forward(
                    &shape,
                    a,
                    &params[weight..bias],
                    &params[bias..bias + shape.filters],
                    rows,
                );
                ops::activation_forward(activation, &mut z);
                z
            }
            Planned::MaxPool2d { shape } => {
                let (z, at) = max_pool2d_forward(&shape, a, rows);
                argmax[l] = at;
                z
            }
            Planned::Dropout { p, .. } => {
                let mut z = a.clone();
                if let Some(counters) = &training {
                    dropout_forward(&mask(counters, l, p), &mut z);
                }
                z
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let mut z = ops::linear_forward_reference(
                    a,
                    &params[weight..bias],
                    &params[bias..bias + fan_out],
                    rows,
                    fan_in,
                    fan_out,
                );
                ops::activation_forward(activation, &mut z);
                z
            }
        };
        acts.push(out);
    }
    let classes = net.classes();
    let logits = acts.last().expect("a planned network has layers");
    let mut delta = vec![T::zero(); rows * classes];
    let (loss, correct) =
        ops::softmax_xent(logits, &labels[..rows], classes, scale, Some(&mut delta));
    let Some(grad) = grad else {
        return (loss, correct);
    };
    // delta holds ∂L/∂(layer l's output) on the way down; the last layer's is ∂L/∂logits.
    for (l, layer) in net.layers.iter().enumerate().rev() {
        let (a_in, a_out) = (&acts[l], &acts[l + 1]);
        delta = match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                ops::activation_backward(activation, a_out, &mut delta);
                let (dw, db) = conv2d_backward_params(&shape, &delta, a_in, rows);
                grad[weight..bias].copy_from_slice(&dw);
                grad[bias..bias + shape.filters].copy_from_slice(&db);
                if l == 0 {
                    break;
                }
                conv2d_backward_input(&shape, &delta, &params[weight..bias], rows)
            }
            Planned::MaxPool2d { shape } => max_pool2d_backward(&shape, &delta, &argmax[l], rows),
            Planned::Dropout { p, .. } => {
                if let Some(counters) = &training {
                    dropout_backward(&mask(counters, l, p), &mut delta);
                }
                delta
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                ops::activation_backward(activation, a_out, &mut delta);
                let (dw, db) =
                    ops::linear_backward_params_reference(&delta, a_in, rows, fan_in, fan_out);
                grad[weight..bias].copy_from_slice(&dw);
                grad[bias..bias + fan_out].copy_from_slice(&db);
                if l == 0 {
                    break;
                }
                ops::linear_backward_input_reference(
                    &delta,
                    &params[weight..bias],
                    rows,
                    fan_in,
                    fan_out,
                )
            }
        };
    }
    (loss, correct)
}

/// [`loss_and_gradient_reference`] on the fast CPU kernels: convolutions through im2col and
/// the GEMM (`cpu::im2col`), dense layers through the GEMM (`cpu::gemm`), on `threads`
/// threads; pooling and dropout as in the reference (they are linear-time already). The same
/// loss and gradient to rounding (tested against the reference). It allocates its buffers per
/// call: a first version, before an engine owns a workspace.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_gradient<T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    labels: &[u8],
    rows: usize,
    scale: T,
    training: Option<StepCounters>,
    grad: Option<&mut [T]>,
    threads: usize,
) -> (f64, usize) {
    use super::gemm;
    use super::im2col::{
        cols_len, conv2d_backward_input_im2col, conv2d_backward_params_im2col,
        conv2d_forward_im2col, im2col, to_channel_major, to_position_major,
    };
    let mut acts: Vec<Vec<T>> = vec![x[..rows * net.input.len()].to_vec()];
    // Each convolution's im2col matrix (its weight gradient reads it again) and each pooling's
    // argmax.
    let mut cols: Vec<Vec<T>> = vec![Vec::new(); net.layers.len()];
    let mut argmax: Vec<Vec<u32>> = vec![Vec::new(); net.layers.len()];
    for (l, layer) in net.layers.iter().enumerate() {
        let a = &acts[l];
        let out = match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                cols[l] = vec![T::zero(); cols_len(&shape, rows)];
                im2col(&shape, a, rows, &mut cols[l]);
                let mut positions = vec![T::zero(); rows * shape.out_len()];
                let (w, b) = (&params[weight..bias], &params[bias..bias + shape.filters]);
                conv2d_forward_im2col(&shape, &cols[l], w, b, rows, &mut positions, threads);
                let mut z = vec![T::zero(); positions.len()];
                to_channel_major(&shape, &positions, rows, &mut z);
                ops::activation_forward(activation, &mut z);
                z
            }
            Planned::MaxPool2d { shape } => {
                let (z, at) = max_pool2d_forward(&shape, a, rows);
                argmax[l] = at;
                z
            }
            Planned::Dropout { p, .. } => {
                let mut z = a.clone();
                if let Some(counters) = &training {
                    dropout_forward(&mask(counters, l, p), &mut z);
                }
                z
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let mut z: Vec<T> = params[bias..bias + fan_out]
                    .iter()
                    .copied()
                    .cycle()
                    .take(rows * fan_out)
                    .collect();
                let w = &params[weight..bias];
                gemm::linear_forward(&mut z, a, w, rows, fan_in, fan_out, threads);
                ops::activation_forward(activation, &mut z);
                z
            }
        };
        acts.push(out);
    }
    let classes = net.classes();
    let logits = acts.last().expect("a planned network has layers");
    let mut delta = vec![T::zero(); rows * classes];
    let (loss, correct) =
        ops::softmax_xent(logits, &labels[..rows], classes, scale, Some(&mut delta));
    let Some(grad) = grad else {
        return (loss, correct);
    };
    for (l, layer) in net.layers.iter().enumerate().rev() {
        let (a_in, a_out) = (&acts[l], &acts[l + 1]);
        delta = match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                ops::activation_backward(activation, a_out, &mut delta);
                let mut positions = vec![T::zero(); delta.len()];
                to_position_major(&shape, &delta, rows, &mut positions);
                let (dw, rest) = grad[weight..bias + shape.filters].split_at_mut(bias - weight);
                conv2d_backward_params_im2col(
                    &shape, &positions, &cols[l], rows, dw, rest, threads,
                );
                if l == 0 {
                    break;
                }
                let mut dcols = vec![T::zero(); cols[l].len()];
                let mut dx = vec![T::zero(); a_in.len()];
                let w = &params[weight..bias];
                conv2d_backward_input_im2col(
                    &shape, &positions, w, rows, &mut dcols, &mut dx, threads,
                );
                dx
            }
            Planned::MaxPool2d { shape } => max_pool2d_backward(&shape, &delta, &argmax[l], rows),
            Planned::Dropout { p, .. } => {
                if let Some(counters) = &training {
                    dropout_backward(&mask(counters, l, p), &mut delta);
                }
                delta
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                ops::activation_backward(activation, a_out, &mut delta);
                gemm::linear_backward_weight(
                    &mut grad[weight..bias],
                    &delta,
                    a_in,
                    rows,
                    fan_in,
                    fan_out,
                    threads,
                );
                let db = &mut grad[bias..bias + fan_out];
                db.fill(T::zero());
                for row in delta.chunks_exact(fan_out) {
                    for (d, &g) in db.iter_mut().zip(row) {
                        *d = *d + g;
                    }
                }
                if l == 0 {
                    break;
                }
                let mut da = vec![T::zero(); rows * fan_in];
                let w = &params[weight..bias];
                gemm::linear_backward_input(&mut da, &delta, w, rows, fan_in, fan_out, threads);
                da
            }
        };
    }
    (loss, correct)
}
