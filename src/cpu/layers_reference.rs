//! A planned network's (`crate::model::Network`) loss and gradient for one mini-batch, the
//! reference pass: each layer through its plain-loop reference (`cpu::conv`,
//! `cpu::ops`, `cpu::dropout`), accumulating in f64, generic over f32 and f64. The fast CPU
//! passes (`cpu::layers`) and the GPU scheduler for such networks are held to it; a network
//! of dense layers alone gives what `cpu::dense` gives for its widths (tested).

use super::conv::{
    conv2d_backward_input, conv2d_backward_params, conv2d_forward, max_pool2d_backward,
    max_pool2d_forward,
};
use super::dropout::{dropout_backward, dropout_forward};
use super::ops;
use super::scalar::Scalar;
use crate::model::dropout::DropoutMask;
use crate::model::{Network, Planned};

/// What a training step's dropout masks are drawn from: the run's seed, the epoch and the step
/// (a layer's index is its stream). Evaluation passes `None` and drops nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCounters {
    pub seed: u64,
    pub epoch: u32,
    pub step: u32,
}

/// Layer `layer`'s dropout mask (probability `p`) for the step `counters` name.
pub fn mask(counters: &StepCounters, layer: usize, p: f64) -> DropoutMask {
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
