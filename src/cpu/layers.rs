//! A planned network's (`crate::model::Network`) loss and gradient for one mini-batch on the
//! fast CPU kernels, layer by layer ([`loss_and_gradient`]): what the CPU engine's layers
//! path trains with, held to the reference pass (`cpu::layers_reference`).

use super::conv_chunks::{ConvScratch, Epilogue, Gradient, ScratchFloats};
use super::dropout::dropout_forward_from;
use super::layers_reference::{StepCounters, mask};
use super::ops;
use super::scalar::Scalar;
use crate::model::{ImageShape, Network, Planned};
use rayon::prelude::*;

/// Buffers for [`loss_and_gradient`] on up to `capacity` images: each layer's output
/// (channels-last, `cpu::channels_last`; none for a convolution pooled as it goes), each
/// convolution's filters in the order its path reads, each pooling's argmax, a dense layer's
/// flattened input where it must change layout, and shared scratch (the convolutions'
/// per-thread chunks, grown by the first step). Later steps allocate only small lists of
/// each thread's share and what the GEMM does.
pub struct LayersWorkspace<T> {
    capacity: usize,
    /// The input channels-last, where that is not the data's own layout.
    input: Vec<T>,
    outputs: Vec<Vec<T>>,
    /// A convolution's filters, refreshed from the parameters each pass: (O, K, K, C) for
    /// im2col's path, (K, K, C, O) for the narrow one (`cpu::conv_narrow`).
    filters: Vec<Vec<T>>,
    argmax: Vec<Vec<u32>>,
    /// A dense layer's input image channels-first, the order its weights read.
    flat: Vec<Vec<T>>,
    /// A convolution's weight gradient in its path's order, before it goes to the stored one.
    dfilters: Vec<T>,
    /// A dense layer's input gradient channels-first, before it goes channels-last.
    dflat: Vec<T>,
    /// The convolutions' im2col chunks and weight-gradient parts.
    conv: ConvScratch<T>,
    /// ∂L/∂(a layer's output), and ∂L/∂(its input) being computed.
    delta: Vec<T>,
    delta_in: Vec<T>,
}

/// Per layer, in floats: its argmax and flattened input per image, and its channels-last
/// filters (the buffers [`LayersWorkspace`] holds for it beside its output).
fn layer_buffers(layer: &Planned, input: &ImageShape) -> (usize, usize, usize) {
    use super::channels_last::layouts_differ;
    match layer {
        Planned::Conv2d { shape, .. } => (0, 0, shape.weights_len()),
        Planned::MaxPool2d { shape } => (shape.out_len(), 0, 0),
        Planned::Dense { .. } if layouts_differ(input) => (0, input.len(), 0),
        _ => (0, 0, 0),
    }
}

impl<T: Scalar> LayersWorkspace<T> {
    pub fn new(net: &Network, capacity: usize) -> Self {
        use super::channels_last::layouts_differ;
        let zeros = |n: usize| vec![T::zero(); n];
        let (mut widest, mut dflat, mut dfilters) = (net.input.len(), 0, 0);
        let (mut filters, mut argmax, mut flat) = (vec![], vec![], vec![]);
        for (l, layer) in net.layers.iter().enumerate() {
            widest = widest.max(net.outputs[l].len());
            let (a, f, w) = layer_buffers(layer, &net.layer_input(l));
            (dflat, dfilters) = (dflat.max(f), dfilters.max(w));
            argmax.push(vec![0u32; capacity * a]);
            flat.push(zeros(capacity * f));
            filters.push(zeros(w));
        }
        let input = match layouts_differ(&net.input) {
            true => capacity * net.input.len(),
            false => 0,
        };
        LayersWorkspace {
            capacity,
            input: zeros(input),
            outputs: (0..net.layers.len())
                .map(|l| zeros(capacity * stored_output_len(net, l)))
                .collect(),
            filters,
            argmax,
            flat,
            dfilters: zeros(dfilters),
            dflat: zeros(capacity * dflat),
            conv: ConvScratch::default(),
            delta: zeros(capacity * widest),
            delta_in: zeros(capacity * widest),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The floats [`LayersWorkspace`] holds for passes of `rows` images on `threads`
    /// threads, once its first step has grown it. Saturates rather than overflowing.
    pub fn floats(net: &Network, rows: usize, threads: usize) -> u128 {
        use super::channels_last::layouts_differ;
        let (mut widest, mut dflat, mut dfilters) = (net.input.len(), 0, 0);
        let (mut per_image, mut fixed) = (0u128, 0u128);
        let mut conv = ScratchFloats::default();
        if layouts_differ(&net.input) {
            per_image += net.input.len() as u128;
        }
        for (l, layer) in net.layers.iter().enumerate() {
            widest = widest.max(net.outputs[l].len());
            // The argmax is u32, as wide as an f32.
            let (a, f, w) = layer_buffers(layer, &net.layer_input(l));
            (dflat, dfilters) = (dflat.max(f), dfilters.max(w));
            per_image += (stored_output_len(net, l) + a + f) as u128;
            fixed += w as u128;
            if let Planned::Conv2d { shape, .. } = layer {
                let chunk = match narrow_first_layer(l, shape) {
                    true => super::conv_narrow::chunking(shape),
                    false => super::im2col::chunking(shape),
                };
                let pool = pooled_after(net, l);
                let floats = ConvScratch::<T>::floats(shape, pool.as_ref(), chunk, rows, threads);
                conv = conv.max(floats);
            }
        }
        let per_image = per_image + (dflat + 2 * widest) as u128;
        let fixed = fixed + dfilters as u128;
        (rows as u128)
            .saturating_mul(per_image)
            .saturating_add(fixed)
            .saturating_add(conv.total())
    }
}

/// `layers_reference::loss_and_gradient_reference` on the fast CPU kernels, every image
/// channels-last (`cpu::channels_last`): convolutions through im2col and the GEMM
/// (`cpu::im2col`) or, a first layer with a short window, straight from the image
/// (`cpu::conv_narrow`), a max pooling after a convolution fused onto it
/// (`cpu::conv_chunks`), dense layers through the GEMM (`cpu::gemm`), other pooling and
/// dropout over channel vectors, on
/// `threads` threads, in `ws`'s buffers. The same loss and gradient to rounding (tested
/// against the reference), the same dropout masks and pooling choices exactly.
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
    ws: &mut LayersWorkspace<T>,
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
    ws: &'w mut LayersWorkspace<T>,
) -> &'w [T] {
    use super::channels_last::{
        self as cl, filters_to_channels_last, layouts_differ, to_channels_first, to_channels_last,
    };
    use super::conv_narrow::{conv2d_forward_narrow, filters_to_taps_first};
    use super::gemm;
    use super::im2col::conv2d_forward_im2col;
    use super::kernels::CpuKernels;
    assert!(
        rows <= ws.capacity,
        "{rows} rows in a workspace for {}",
        ws.capacity
    );
    let x = &x[..rows * net.input.len()];
    if layouts_differ(&net.input) {
        to_channels_last(&net.input, x, rows, &mut ws.input, threads);
    }
    for (l, layer) in net.layers.iter().enumerate() {
        if pooled_before(net, l) {
            continue;
        }
        let input = net.layer_input(l);
        let (before, after) = ws.outputs.split_at_mut(l);
        let a: &[T] = match l {
            0 if layouts_differ(&input) => &ws.input[..x.len()],
            0 => x,
            _ => &before[l - 1][..rows * input.len()],
        };
        let (current, next) = after.split_first_mut().expect("every layer has an output");
        // Empty for a convolution whose pooling takes its output chunk by chunk.
        let out = match pooled_after(net, l) {
            Some(_) => &mut current[..0],
            None => &mut current[..rows * net.outputs[l].len()],
        };
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                let (w, b) = (&params[weight..bias], &params[bias..bias + shape.filters]);
                let epilogue = match pooled_after(net, l) {
                    Some(pool) => Epilogue::Pool {
                        shape: pool,
                        out: &mut next[0][..rows * pool.out_len()],
                        argmax: &mut ws.argmax[l + 1][..rows * pool.out_len()],
                    },
                    None => Epilogue::Store { out },
                };
                let (filters, scratch) = (&mut ws.filters[l], &mut ws.conv);
                if narrow_first_layer(l, &shape) {
                    filters_to_taps_first(&shape, w, filters);
                    let (kernels, wb) = (CpuKernels::active(), (&filters[..], b));
                    conv2d_forward_narrow(
                        kernels, &shape, activation, a, wb, rows, epilogue, scratch, threads,
                    );
                } else {
                    filters_to_channels_last(&shape, w, filters);
                    conv2d_forward_im2col(
                        &shape, activation, a, filters, b, rows, epilogue, scratch, threads,
                    );
                }
            }
            Planned::MaxPool2d { shape } => {
                let (in_len, out_len) = (shape.in_len(), shape.out_len());
                let argmax = &mut ws.argmax[l][..out.len()];
                if threads <= 1 {
                    cl::max_pool2d_forward(&shape, a, rows, out, argmax);
                } else {
                    // Whole images per thread: the same values however the batch is split.
                    let per = images_per_thread(threads, rows);
                    let parts = out
                        .par_chunks_mut(per * out_len)
                        .zip(argmax.par_chunks_mut(per * out_len))
                        .zip(a.par_chunks(per * in_len));
                    parts.for_each(|((out, argmax), x)| {
                        cl::max_pool2d_forward(&shape, x, x.len() / in_len, out, argmax)
                    });
                }
            }
            Planned::Dropout { p, .. } => {
                dropout_into(a, out, training, (l, p), &input, rows, threads)
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                let a = if layouts_differ(&input) {
                    let flat = &mut ws.flat[l][..a.len()];
                    to_channels_first(&input, a, rows, flat, threads);
                    flat
                } else {
                    a
                };
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

/// The max pooling that takes layer `l`'s output chunk by chunk (`cpu::conv_chunks`): the
/// next layer's, when `l` is a convolution and the next a max pooling.
fn pooled_after(net: &Network, l: usize) -> Option<crate::model::MaxPool2d> {
    match (&net.layers[l], net.layers.get(l + 1)) {
        (Planned::Conv2d { .. }, Some(Planned::MaxPool2d { shape })) => Some(*shape),
        _ => None,
    }
}

/// Whether layer `l` is a max pooling the convolution before it runs ([`pooled_after`]).
fn pooled_before(net: &Network, l: usize) -> bool {
    l > 0 && pooled_after(net, l - 1).is_some()
}

/// Floats per image of layer `l`'s output that the workspace keeps: none for a convolution
/// pooled as it goes ([`pooled_after`]).
fn stored_output_len(net: &Network, l: usize) -> usize {
    match pooled_after(net, l) {
        Some(_) => 0,
        None => net.outputs[l].len(),
    }
}

/// Whether layer `l`, a convolution of `shape`, takes `cpu::conv_narrow`'s path: a first
/// layer (whose input gradient is never needed) with a short window.
fn narrow_first_layer(l: usize, shape: &crate::model::Conv2d) -> bool {
    l == 0 && super::conv_narrow::suits(shape)
}

/// Images in each thread's share when a batch of `rows` is split across `threads` threads
/// (all of them on one thread).
fn images_per_thread(threads: usize, rows: usize) -> usize {
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
    let part = images_per_thread(threads, rows) * (values.len() / rows.max(1)).max(1);
    values
        .par_chunks_mut(part)
        .enumerate()
        .for_each(|(i, chunk)| f(i * part, chunk));
}

/// Layer `layer`'s dropout (probability `p`) of `from` into `to`, the batch of `rows`
/// channels-last images of `shape`: a copy, masked while training, the batch split as
/// [`by_images`] splits it.
fn dropout_into<T: Scalar>(
    from: &[T],
    to: &mut [T],
    training: Option<StepCounters>,
    (layer, p): (usize, f64),
    shape: &ImageShape,
    rows: usize,
    threads: usize,
) {
    use super::channels_last::{self as cl, layouts_differ};
    to.copy_from_slice(from);
    if let Some(counters) = &training {
        let m = mask(counters, layer, p);
        by_images(threads, rows, to, |first, part| {
            if layouts_differ(shape) {
                cl::dropout_forward(&m, part, first / shape.len(), shape)
            } else {
                dropout_forward_from(&m, part, first)
            }
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
    let part = images_per_thread(threads, rows) * (delta.len() / rows.max(1)).max(1);
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
    ws: &mut LayersWorkspace<T>,
) {
    use super::channels_last::{self as cl, filters_to_channels_first, layouts_differ};
    use super::conv_narrow::{conv2d_backward_params_narrow, filters_from_taps_first};
    use super::gemm;
    use super::im2col::conv2d_backward_im2col;
    use super::kernels::CpuKernels;
    let x = &x[..rows * net.input.len()];
    // ws.delta holds ∂L/∂(layer l's output); each layer writes ∂L/∂(its input) to
    // ws.delta_in, and the two swap. All of them channels-last.
    for (l, layer) in net.layers.iter().enumerate().rev() {
        if pooled_before(net, l) {
            // The convolution before takes ∂L/∂(this pooling's output) as it is, in ws.delta.
            continue;
        }
        let input = net.layer_input(l);
        let out_len = rows * net.outputs[l].len();
        let a_in: &[T] = match l {
            0 if layouts_differ(&input) => &ws.input[..x.len()],
            0 => x,
            _ => &ws.outputs[l - 1][..rows * input.len()],
        };
        // Empty for a convolution whose pooling took its output chunk by chunk.
        let a_out = match pooled_after(net, l) {
            Some(_) => &ws.outputs[l][..0],
            None => &ws.outputs[l][..out_len],
        };
        let delta = &mut ws.delta[..out_len];
        let delta_in = &mut ws.delta_in[..a_in.len()];
        match *layer {
            Planned::Conv2d {
                shape,
                activation,
                weight,
                bias,
            } => {
                let (dw, db) = grad[weight..bias + shape.filters].split_at_mut(bias - weight);
                let dw_cl = &mut ws.dfilters[..dw.len()];
                let gradient = match pooled_after(net, l) {
                    Some(pool) => Gradient::Pooled {
                        shape: pool,
                        dpool: &delta[..rows * pool.out_len()],
                        pooled: &ws.outputs[l + 1][..rows * pool.out_len()],
                        argmax: &ws.argmax[l + 1][..rows * pool.out_len()],
                    },
                    None => Gradient::Stored { dz: delta, a_out },
                };
                let scratch = &mut ws.conv;
                if narrow_first_layer(l, &shape) {
                    conv2d_backward_params_narrow(
                        CpuKernels::active(),
                        &shape,
                        activation,
                        gradient,
                        a_in,
                        rows,
                        (&mut *dw_cl, db),
                        scratch,
                        threads,
                    );
                    filters_from_taps_first(&shape, dw_cl, dw);
                    break;
                }
                let (w, dx) = (&ws.filters[l], (l > 0).then_some(delta_in));
                conv2d_backward_im2col(
                    &shape,
                    activation,
                    gradient,
                    a_in,
                    w,
                    rows,
                    (dw_cl, db),
                    dx,
                    scratch,
                    threads,
                );
                filters_to_channels_first(&shape, dw_cl, dw);
                if l == 0 {
                    break;
                }
            }
            Planned::MaxPool2d { shape } => {
                let (in_len, out_len) = (shape.in_len(), shape.out_len());
                let argmax = &ws.argmax[l][..delta.len()];
                if threads <= 1 {
                    cl::max_pool2d_backward(&shape, delta, argmax, rows, delta_in);
                } else {
                    let per = images_per_thread(threads, rows);
                    let parts = delta_in
                        .par_chunks_mut(per * in_len)
                        .zip(delta.par_chunks(per * out_len))
                        .zip(argmax.par_chunks(per * out_len));
                    parts.for_each(|((dx, dz), argmax)| {
                        cl::max_pool2d_backward(&shape, dz, argmax, dx.len() / in_len, dx)
                    });
                }
            }
            // The gradient goes through where the value did: dropout's backward is its
            // forward on the gradient.
            Planned::Dropout { p, .. } => {
                dropout_into(delta, delta_in, training, (l, p), &input, rows, threads)
            }
            Planned::Dense {
                fan_in,
                fan_out,
                activation,
                weight,
                bias,
            } => {
                activation_backward_by_images(activation, a_out, delta, rows, threads);
                let a_in = match layouts_differ(&input) {
                    true => &ws.flat[l][..a_in.len()],
                    false => a_in,
                };
                let (dw, db) = grad[weight..bias + fan_out].split_at_mut(bias - weight);
                gemm::linear_backward_params(dw, db, delta, a_in, rows, fan_in, fan_out, threads);
                if l == 0 {
                    break;
                }
                let w = &params[weight..bias];
                if layouts_differ(&input) {
                    let dflat = &mut ws.dflat[..a_in.len()];
                    gemm::linear_backward_input(dflat, delta, w, rows, fan_in, fan_out, threads);
                    cl::to_channels_last(&input, dflat, rows, delta_in, threads);
                } else {
                    gemm::linear_backward_input(delta_in, delta, w, rows, fan_in, fan_out, threads);
                }
            }
        }
        std::mem::swap(&mut ws.delta, &mut ws.delta_in);
    }
}
