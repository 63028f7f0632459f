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
use crate::dropout::{DropoutMask, dropout_backward, dropout_forward, dropout_forward_from};
use crate::network::{Network, Planned};
use rayon::prelude::*;

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
    let (acts, argmax) = forward_reference(net, params, x, rows, training);
    let classes = net.classes();
    let logits = acts.last().expect("a planned network has layers");
    let mut delta = vec![T::zero(); rows * classes];
    let (loss, correct) =
        ops::softmax_xent(logits, &labels[..rows], classes, scale, Some(&mut delta));
    let Some(grad) = grad else {
        return (loss, correct);
    };
    backward_reference(net, params, &acts, &argmax, rows, training, delta, grad);
    (loss, correct)
}

/// Which side of its kink every ReLU and every max pooling's choice falls on, hashed: the
/// loss is smooth in the parameters only where this stays the same, so a finite difference
/// whose stencil changes it straddles a kink (`gradcheck` draws another entry then).
pub fn kink_pattern<T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    rows: usize,
    training: Option<StepCounters>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let (acts, argmax) = forward_reference(net, params, x, rows, training);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (l, layer) in net.layers.iter().enumerate() {
        let relu = matches!(
            layer,
            Planned::Conv2d {
                activation: crate::model::Activation::Relu,
                ..
            } | Planned::Dense {
                activation: crate::model::Activation::Relu,
                ..
            }
        );
        if relu {
            for v in &acts[l + 1] {
                (*v > T::zero()).hash(&mut hasher);
            }
        }
        argmax[l].hash(&mut hasher);
    }
    hasher.finish()
}

/// Every layer's input and output (`acts[l]` layer l's input, `acts[l + 1]` its output) and
/// where each pooling's maxima were, by the reference operations.
type Activations<T> = (Vec<Vec<T>>, Vec<Vec<u32>>);

/// The forward half of [`loss_and_gradient_reference`].
fn forward_reference<T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    rows: usize,
    training: Option<StepCounters>,
) -> Activations<T> {
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
    (acts, argmax)
}

/// The backward half of [`loss_and_gradient_reference`], from ∂L/∂logits (`delta`).
#[allow(clippy::too_many_arguments)]
fn backward_reference<T: Scalar>(
    net: &Network,
    params: &[T],
    acts: &[Vec<T>],
    argmax: &[Vec<u32>],
    rows: usize,
    training: Option<StepCounters>,
    mut delta: Vec<T>,
    grad: &mut [T],
) {
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
}

/// Buffers for [`loss_and_gradient`] on up to `capacity` images, allocated once: each layer's
/// output, each convolution's im2col matrix (its weight gradient reads it again), each
/// pooling's argmax, and shared scratch. A step allocates nothing but what the GEMM does.
pub struct NetworkWorkspace<T> {
    capacity: usize,
    outputs: Vec<Vec<T>>,
    cols: Vec<Vec<T>>,
    argmax: Vec<Vec<u32>>,
    /// A convolution's output (or its gradient) position-major.
    positions: Vec<T>,
    /// The gradient of a convolution's im2col matrix.
    dcols: Vec<T>,
    /// ∂L/∂(a layer's output), and ∂L/∂(its input) being computed.
    delta: Vec<T>,
    delta_in: Vec<T>,
}

impl<T: Scalar> NetworkWorkspace<T> {
    pub fn new(net: &Network, capacity: usize) -> Self {
        use super::im2col::cols_len;
        let mut widest = net.input.len();
        let (mut positions, mut cols_max) = (0, 0);
        let mut cols = Vec::with_capacity(net.layers.len());
        let mut argmax = Vec::with_capacity(net.layers.len());
        for (layer, out) in net.layers.iter().zip(&net.outputs) {
            widest = widest.max(out.len());
            let (c, a) = match layer {
                Planned::Conv2d { shape, .. } => {
                    positions = positions.max(capacity * shape.out_len());
                    cols_max = cols_max.max(cols_len(shape, capacity));
                    (cols_len(shape, capacity), 0)
                }
                Planned::MaxPool2d { shape } => (0, capacity * shape.out_len()),
                _ => (0, 0),
            };
            cols.push(vec![T::zero(); c]);
            argmax.push(vec![0u32; a]);
        }
        NetworkWorkspace {
            capacity,
            outputs: net
                .outputs
                .iter()
                .map(|o| vec![T::zero(); capacity * o.len()])
                .collect(),
            cols,
            argmax,
            positions: vec![T::zero(); positions],
            dcols: vec![T::zero(); cols_max],
            delta: vec![T::zero(); capacity * widest],
            delta_in: vec![T::zero(); capacity * widest],
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The floats [`NetworkWorkspace::new`] allocates per image of its capacity.
    pub fn floats_per_image(net: &Network) -> usize {
        use super::im2col::cols_len;
        let mut widest = net.input.len();
        let (mut positions, mut cols_max, mut total) = (0, 0, 0);
        for (layer, out) in net.layers.iter().zip(&net.outputs) {
            widest = widest.max(out.len());
            total += out.len();
            match layer {
                Planned::Conv2d { shape, .. } => {
                    positions = positions.max(shape.out_len());
                    cols_max = cols_max.max(cols_len(shape, 1));
                    total += cols_len(shape, 1);
                }
                // The argmax is u32, as wide as an f32.
                Planned::MaxPool2d { shape } => total += shape.out_len(),
                _ => {}
            }
        }
        total + positions + cols_max + 2 * widest
    }
}

/// [`loss_and_gradient_reference`] on the fast CPU kernels: convolutions through im2col and
/// the GEMM (`cpu::im2col`), dense layers through the GEMM (`cpu::gemm`), on `threads`
/// threads, in `ws`'s buffers; pooling and dropout as in the reference (linear-time already).
/// The same loss and gradient to rounding (tested against the reference).
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
    ws: &mut NetworkWorkspace<T>,
) -> (f64, usize) {
    forward(net, params, x, rows, training, threads, ws);
    let classes = net.classes();
    let last = net.layers.len() - 1;
    let logits = &ws.outputs[last][..rows * classes];
    let delta = &mut ws.delta[..rows * classes];
    let (loss, correct) = ops::softmax_xent(logits, &labels[..rows], classes, scale, Some(delta));
    let Some(grad) = grad else {
        return (loss, correct);
    };
    backward(net, params, x, rows, training, grad, threads, ws);
    (loss, correct)
}

/// The forward half of [`loss_and_gradient`]: every layer's output into `ws`, the logits
/// (rows, classes) last, which it returns.
pub fn forward<'w, T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    rows: usize,
    training: Option<StepCounters>,
    threads: usize,
    ws: &'w mut NetworkWorkspace<T>,
) -> &'w [T] {
    use super::conv::max_pool2d_forward_into;
    use super::gemm;
    use super::im2col::{cols_len, conv2d_forward_im2col, im2col, to_channel_major};
    assert!(
        rows <= ws.capacity,
        "{rows} rows in a workspace for {}",
        ws.capacity
    );
    let input_len = rows * net.input.len();
    for (l, layer) in net.layers.iter().enumerate() {
        let (before, after) = ws.outputs.split_at_mut(l);
        let a: &[T] = match l {
            0 => &x[..input_len],
            _ => &before[l - 1][..rows * net.outputs[l - 1].len()],
        };
        let out = &mut after[0][..rows * net.outputs[l].len()];
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                let cols = &mut ws.cols[l][..cols_len(&shape, rows)];
                im2col(&shape, a, rows, cols, threads);
                let positions = &mut ws.positions[..out.len()];
                let (w, b) = (&params[weight..bias], &params[bias..bias + shape.filters]);
                conv2d_forward_im2col(&shape, cols, w, b, rows, positions, threads);
                to_channel_major(&shape, positions, rows, out, threads);
                by_images(threads, rows, out, |_, part| {
                    ops::activation_forward(activation, part)
                });
            }
            Planned::MaxPool2d { shape } => {
                let (in_len, out_len) = (shape.in_len(), shape.out_len());
                let argmax = &mut ws.argmax[l][..out.len()];
                if threads <= 1 {
                    max_pool2d_forward_into(&shape, a, rows, out, argmax);
                } else {
                    // Whole images per thread: the same values however the batch is split.
                    let per = images_per_part(threads, rows);
                    let parts = out
                        .par_chunks_mut(per * out_len)
                        .zip(argmax.par_chunks_mut(per * out_len))
                        .zip(a.par_chunks(per * in_len));
                    parts.for_each(|((out, argmax), x)| {
                        max_pool2d_forward_into(&shape, x, x.len() / in_len, out, argmax)
                    });
                }
            }
            Planned::Dropout { p, .. } => dropout_into(a, out, training, (l, p), rows, threads),
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let (w, b) = (&params[weight..bias], &params[bias..bias + fan_out]);
                gemm::linear_forward_biased(out, a, w, b, rows, fan_in, fan_out, threads);
                by_images(threads, rows, out, |_, part| {
                    ops::activation_forward(activation, part)
                });
            }
        }
    }
    let last = net.layers.len() - 1;
    &ws.outputs[last][..rows * net.classes()]
}

/// Images per part when a batch of `rows` is split across `threads` threads (all of them in
/// one part on one thread).
fn images_per_part(threads: usize, rows: usize) -> usize {
    rows.div_ceil(threads.max(1)).max(1)
}

/// `f(first element, part)` on the batch `values` (`rows` images of equal length) split into
/// one part of whole images per thread, in parallel on the current pool: for the element-wise
/// passes (activations, dropout), which give the same values however the batch is split.
fn by_images<T: Scalar>(
    threads: usize,
    rows: usize,
    values: &mut [T],
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if threads <= 1 {
        return f(0, values);
    }
    let part = images_per_part(threads, rows) * (values.len() / rows.max(1)).max(1);
    values
        .par_chunks_mut(part)
        .enumerate()
        .for_each(|(i, chunk)| f(i * part, chunk));
}

/// Layer `layer`'s dropout (probability `p`) of `from` into `to`, the batch of `rows`
/// images: a copy, masked while training, the batch split as [`by_images`] splits it.
fn dropout_into<T: Scalar>(
    from: &[T],
    to: &mut [T],
    training: Option<StepCounters>,
    (layer, p): (usize, f64),
    rows: usize,
    threads: usize,
) {
    to.copy_from_slice(from);
    if let Some(counters) = &training {
        let m = mask(counters, layer, p);
        by_images(threads, rows, to, |first, part| {
            dropout_forward_from(&m, part, first)
        });
    }
}

/// `ops::activation_backward` on the batch split as [`by_images`] splits it.
fn activation_backward_by_images<T: Scalar>(
    activation: crate::model::Activation,
    a: &[T],
    delta: &mut [T],
    rows: usize,
    threads: usize,
) {
    if threads <= 1 {
        return ops::activation_backward(activation, a, delta);
    }
    let part = images_per_part(threads, rows) * (delta.len() / rows.max(1)).max(1);
    delta
        .par_chunks_mut(part)
        .zip(a.par_chunks(part))
        .for_each(|(d, a)| ops::activation_backward(activation, a, d));
}

/// The backward half of [`loss_and_gradient`], from ∂L/∂logits in `ws.delta` down to the
/// first layer's parameter gradient.
#[allow(clippy::too_many_arguments)]
fn backward<T: Scalar>(
    net: &Network,
    params: &[T],
    x: &[T],
    rows: usize,
    training: Option<StepCounters>,
    grad: &mut [T],
    threads: usize,
    ws: &mut NetworkWorkspace<T>,
) {
    use super::conv::max_pool2d_backward_into;
    use super::gemm;
    use super::im2col::{
        cols_len, conv2d_backward_input_im2col, conv2d_backward_params_im2col, to_position_major,
    };
    let input_len = rows * net.input.len();
    // ws.delta holds ∂L/∂(layer l's output); each layer writes ∂L/∂(its input) to
    // ws.delta_in, and the two swap.
    for (l, layer) in net.layers.iter().enumerate().rev() {
        let out_len = rows * net.outputs[l].len();
        let a_in: &[T] = match l {
            0 => &x[..input_len],
            _ => &ws.outputs[l - 1][..rows * net.outputs[l - 1].len()],
        };
        let a_out = &ws.outputs[l][..out_len];
        let delta = &mut ws.delta[..out_len];
        let delta_in = &mut ws.delta_in[..a_in.len()];
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                activation_backward_by_images(activation, a_out, delta, rows, threads);
                let positions = &mut ws.positions[..out_len];
                to_position_major(&shape, delta, rows, positions, threads);
                let (dw, db) = grad[weight..bias + shape.filters].split_at_mut(bias - weight);
                let cols = &ws.cols[l][..cols_len(&shape, rows)];
                conv2d_backward_params_im2col(&shape, positions, cols, rows, dw, db, threads);
                if l == 0 {
                    break;
                }
                let dcols = &mut ws.dcols[..cols.len()];
                let w = &params[weight..bias];
                conv2d_backward_input_im2col(&shape, positions, w, rows, dcols, delta_in, threads);
            }
            Planned::MaxPool2d { shape } => {
                let (in_len, out_len) = (shape.in_len(), shape.out_len());
                let argmax = &ws.argmax[l][..delta.len()];
                if threads <= 1 {
                    max_pool2d_backward_into(&shape, delta, argmax, rows, delta_in);
                } else {
                    let per = images_per_part(threads, rows);
                    let parts = delta_in
                        .par_chunks_mut(per * in_len)
                        .zip(delta.par_chunks(per * out_len))
                        .zip(argmax.par_chunks(per * out_len));
                    parts.for_each(|((dx, dz), argmax)| {
                        max_pool2d_backward_into(&shape, dz, argmax, dx.len() / in_len, dx)
                    });
                }
            }
            // The gradient goes through where the value did: dropout's backward is its
            // forward on the gradient.
            Planned::Dropout { p, .. } => {
                dropout_into(delta, delta_in, training, (l, p), rows, threads)
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                activation_backward_by_images(activation, a_out, delta, rows, threads);
                let (dw, db) = grad[weight..bias + fan_out].split_at_mut(bias - weight);
                gemm::linear_backward_params(dw, db, delta, a_in, rows, fan_in, fan_out, threads);
                if l == 0 {
                    break;
                }
                let w = &params[weight..bias];
                gemm::linear_backward_input(delta_in, delta, w, rows, fan_in, fan_out, threads);
            }
        }
        std::mem::swap(&mut ws.delta, &mut ws.delta_in);
    }
}
