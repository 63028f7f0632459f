//! The fast CPU path's image layout: channels-last, (B, H, W, C), as oneDNN and
//! PyTorch's `channels_last` keep it. A convolution's window then reads K runs of K·C
//! contiguous values (`cpu::im2col`), its GEMM writes its output already in this layout, and
//! pooling, activations and dropout run over contiguous channel vectors: no transposes between
//! layers. Everything outside the fast pass stays channels-first, (B, C, H, W), PyTorch's
//! default: the data, the references (`cpu::conv`), the WGSL kernels, checkpoints, the filters
//! (O, C, K, K), a dense layer's weights over a flattened image, and dropout's element
//! counters. So the pass converts where it meets them: the input (when it has more than one
//! channel), the filters (a few thousand values a step), the first dense layer's input and
//! its gradient, and a dropout mask's counters (computed in channels-first order).

use super::dropout::dropout_forward_at;
use super::kernels::{CpuKernels, vector_width_clones};
use super::scalar::Scalar;
use crate::model::dropout::DropoutMask;
use crate::model::{Conv2d, ImageShape, MaxPool2d};

/// Whether the channels-first and channels-last layouts of an image of `shape` differ: not
/// for one channel, nor for a 1×1 image (a dense layer's output).
pub fn layouts_differ(shape: &ImageShape) -> bool {
    shape.channels > 1 && shape.height * shape.width > 1
}

/// Runs `f` on each image's (input, output) pair: `input` in chunks of `in_len`, `output` in
/// chunks of `out_len`, on the current rayon pool's threads when `threads` > 1. Images are
/// independent, so the result is the same bits either way.
pub(super) fn per_image<T: Scalar, U: Send>(
    input: &[T],
    in_len: usize,
    output: &mut [U],
    out_len: usize,
    threads: usize,
    f: impl Fn(&[T], &mut [U]) + Sync,
) {
    use rayon::prelude::*;
    if threads > 1 {
        input
            .par_chunks_exact(in_len)
            .zip(output.par_chunks_exact_mut(out_len))
            .for_each(|(a, b)| f(a, b));
    } else {
        for (a, b) in input
            .chunks_exact(in_len)
            .zip(output.chunks_exact_mut(out_len))
        {
            f(a, b);
        }
    }
}

/// (B, C, H, W) → (B, H, W, C) for `rows` images of `shape`.
pub fn to_channels_last<T: Scalar>(
    shape: &ImageShape,
    x: &[T],
    rows: usize,
    out: &mut [T],
    threads: usize,
) {
    let plane = shape.height * shape.width;
    transpose_images(x, rows, (shape.channels, plane), out, threads);
}

/// (B, H, W, C) → (B, C, H, W) for `rows` images of `shape`.
pub fn to_channels_first<T: Scalar>(
    shape: &ImageShape,
    x: &[T],
    rows: usize,
    out: &mut [T],
    threads: usize,
) {
    let plane = shape.height * shape.width;
    transpose_images(x, rows, (plane, shape.channels), out, threads);
}

/// Each of `rows` images of `x`, a (m, n) row-major matrix, written transposed, (n, m), to
/// `out`.
fn transpose_images<T: Scalar>(
    x: &[T],
    rows: usize,
    (m, n): (usize, usize),
    out: &mut [T],
    threads: usize,
) {
    let len = m * n;
    per_image(
        &x[..rows * len],
        len,
        &mut out[..rows * len],
        len,
        threads,
        |x, out| {
            for (i, row) in x.chunks_exact(n).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    out[j * m + i] = v;
                }
            }
        },
    );
}

/// A convolution's filters (O, C, K, K), as stored, → (O, K, K, C), the order of a
/// channels-last im2col window: each filter transposed as an image is.
pub fn filters_to_channels_last<T: Scalar>(shape: &Conv2d, w: &[T], out: &mut [T]) {
    let taps = shape.kernel * shape.kernel;
    transpose_images(w, shape.filters, (shape.channels, taps), out, 1);
}

/// (O, K, K, C) → (O, C, K, K): a weight gradient back into the stored order.
pub fn filters_to_channels_first<T: Scalar>(shape: &Conv2d, w: &[T], out: &mut [T]) {
    let taps = shape.kernel * shape.kernel;
    transpose_images(w, shape.filters, (taps, shape.channels), out, 1);
}

/// `cpu::conv::max_pool2d_forward` on channels-last images: the same maxima, the same ties
/// (the first in row-major window order) and the same NaN rule, for `rows` whole images.
/// `argmax` receives the pixel (y·W + x) each output channel took. Compiled for the vector
/// width of the kernel set the process runs.
pub fn max_pool2d_forward<T: Scalar>(
    shape: &MaxPool2d,
    x: &[T],
    rows: usize,
    out: &mut [T],
    argmax: &mut [u32],
) {
    max_pool2d_forward_on(CpuKernels::active(), shape, x, rows, out, argmax)
}

vector_width_clones! {
    fn max_pool2d_forward_on(
        shape: &MaxPool2d,
        x: &[T],
        rows: usize,
        out: &mut [T],
        argmax: &mut [u32],
    ) => max_pool2d_forward_lanes
}

/// [`max_pool2d_forward`]'s loops.
#[inline(always)]
fn max_pool2d_forward_lanes<T: Scalar>(
    shape: &MaxPool2d,
    x: &[T],
    rows: usize,
    out: &mut [T],
    argmax: &mut [u32],
) {
    let (c, w, stride) = (shape.channels, shape.width, shape.stride);
    let ow = shape.out_width();
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let window = (shape.window, w);
    for r in 0..rows {
        let x = &x[r * in_len..(r + 1) * in_len];
        let outs = out[r * out_len..(r + 1) * out_len].chunks_exact_mut(c);
        let ats = argmax[r * out_len..(r + 1) * out_len].chunks_exact_mut(c);
        for (o, (best, at)) in outs.zip(ats).enumerate() {
            let first = (o / ow) * stride * w + (o % ow) * stride;
            let mut ch = 0;
            while ch < c {
                if c - ch >= POOL_LANES {
                    window_max::<T, POOL_LANES>(x, c, ch, first, window, best, at);
                    ch += POOL_LANES;
                } else {
                    window_max::<T, 1>(x, c, ch, first, window, best, at);
                    ch += 1;
                }
            }
        }
    }
}

/// Channels [`window_max`] takes at once: a 512-bit register of f32.
const POOL_LANES: usize = 16;

/// The maximum over the `window` × `window` pixels from `first` (in an image `width` pixels
/// wide), in row-major order, of channels `ch..ch + L`, into `best` and `at` at those
/// channels. The running maxima live in L-lane arrays and every choice is a select, so the
/// channels run in vector lanes.
#[inline(always)]
fn window_max<T: Scalar, const L: usize>(
    x: &[T],
    c: usize,
    ch: usize,
    first: usize,
    (window, width): (usize, usize),
    best: &mut [T],
    at: &mut [u32],
) {
    let mut b = [T::zero(); L];
    b.copy_from_slice(&x[first * c + ch..first * c + ch + L]);
    let mut a = [first as u32; L];
    let pixels = (0..window).flat_map(|i| (0..window).map(move |j| first + i * width + j));
    for pixel in pixels.skip(1) {
        let values = &x[pixel * c + ch..pixel * c + ch + L];
        for ((b, a), &v) in b.iter_mut().zip(a.iter_mut()).zip(values) {
            // `&` and `|`, not `&&` and `||`: no branches, so no lane waits on another.
            let take = !b.is_nan() & ((v > *b) | v.is_nan());
            *b = if take { v } else { *b };
            *a = if take { pixel as u32 } else { *a };
        }
    }
    best[ch..ch + L].copy_from_slice(&b);
    at[ch..ch + L].copy_from_slice(&a);
}

/// `cpu::conv::max_pool2d_backward` on channels-last images: each output's gradient to the
/// pixel its window took, summed in the reference's order where windows overlap.
pub fn max_pool2d_backward<T: Scalar>(
    shape: &MaxPool2d,
    dz: &[T],
    argmax: &[u32],
    rows: usize,
    dx: &mut [T],
) {
    let c = shape.channels;
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    for r in 0..rows {
        let dx = &mut dx[r * in_len..(r + 1) * in_len];
        dx.fill(T::zero());
        let dzs = dz[r * out_len..(r + 1) * out_len].chunks_exact(c);
        let ats = argmax[r * out_len..(r + 1) * out_len].chunks_exact(c);
        for (dz, at) in dzs.zip(ats) {
            for (ch, (&g, &pixel)) in dz.iter().zip(at).enumerate() {
                let to = pixel as usize * c + ch;
                dx[to] = dx[to] + g;
            }
        }
    }
}

/// `dropout_forward_from` on whole channels-last images of `shape`, the first of them image
/// `first_image` of the batch: each element keeps the counter of its channels-first place, so
/// the mask is the one every other path draws.
pub fn dropout_forward<T: Scalar>(
    mask: &DropoutMask,
    x: &mut [T],
    first_image: usize,
    shape: &ImageShape,
) {
    let (len, c) = (shape.len(), shape.channels);
    let plane = shape.height * shape.width;
    for (i, image) in x.chunks_exact_mut(len).enumerate() {
        let first = (first_image + i) * len;
        for (pixel, channels) in image.chunks_exact_mut(c).enumerate() {
            dropout_forward_at(mask, channels, |ch| first + ch * plane + pixel);
        }
    }
}
