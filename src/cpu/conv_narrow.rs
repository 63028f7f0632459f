//! The fast CPU convolution for short windows: a first layer over one or three channels,
//! whose K·K·C window values ([`NARROW_WINDOW`] at most) are too few for a GEMM to pay (a
//! 9-deep product reads and writes far more than it computes). Each output position's
//! filters are summed straight from the channels-last input (`cpu::channels_last`), copied
//! into a zero border one image at a time so that every window is K runs of K·C values,
//! the filters' outputs in vector lanes; no im2col matrix is built. Checked against the
//! plain-loop references in `cpu::conv`, on every kernel set this CPU runs.
//!
//! The loops are compiled once for each x86-64 kernel set ([`CpuKernels`]) and run on the set
//! the process runs (`kernels::vector_width_clones`): the same bits on every set, only wider.

use super::conv_chunks::{ConvScratch, Epilogue, Gradient, backward_by_parts, forward_by_chunks};
use super::kernels::{CpuKernels, vector_width_clones};
use super::scalar::Scalar;
use crate::model::{Activation, Conv2d};

/// The longest window (K·K·C values) this path takes: a 3×3 window over three channels is 27,
/// a 5×5 one over one channel 25.
pub const NARROW_WINDOW: usize = 32;

/// Whether `shape`'s window is short enough for this path.
pub fn suits(shape: &Conv2d) -> bool {
    shape.window_len() <= NARROW_WINDOW
}

/// Filters' outputs a block of the inner loops holds at once: a 512-bit register of f32.
const LANES: usize = 16;

/// Forward with the activation: act(b + Σ window · filter), (B, H′, W′, O), from x
/// (B, H, W, C), with the filters transposed to (K, K, C, O), `wt`
/// ([`filters_to_taps_first`]), into `epilogue` (stored, or pooled), an image at a time on
/// each thread, on `kernels`. The bias is added first, then each tap's product in window
/// order.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_narrow<T: Scalar>(
    kernels: CpuKernels,
    shape: &Conv2d,
    activation: Activation,
    x: &[T],
    (wt, b): (&[T], &[T]),
    rows: usize,
    epilogue: Epilogue<'_, T>,
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    assert!(suits(shape), "a window of {} values", shape.window_len());
    assert_eq!((wt.len(), b.len()), (shape.weights_len(), shape.filters));
    let (io, passes) = ((x, rows, epilogue), (activation, threads));
    forward_by_chunks(
        shape,
        io,
        scratch,
        chunking(shape),
        passes,
        |x, _, padded, z| {
            pad_image(shape, x, padded);
            forward_image_on(kernels, shape, padded, wt, b, z);
        },
    );
}

/// Weight and bias gradients from `gradient` (∂L/∂ its output, or through its fused
/// pooling, `cpu::conv_chunks`) and the input `x` (B, H, W, C): `dwt` transposed as the
/// forward's filters, (K, K, C, O). No input gradient: a layer this narrow is a network's
/// first. Summed per part (`conv_chunks::backward_by_parts`), position by position: the same
/// bits on any number of threads.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_params_narrow<T: Scalar>(
    kernels: CpuKernels,
    shape: &Conv2d,
    activation: Activation,
    gradient: Gradient<'_, T>,
    x: &[T],
    rows: usize,
    (dwt, db): (&mut [T], &mut [T]),
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    assert!(suits(shape), "a window of {} values", shape.window_len());
    let io = (gradient, x, rows, (dwt, db), None);
    backward_by_parts(
        shape,
        io,
        scratch,
        chunking(shape),
        (activation, threads),
        |c| {
            if c.first_of_part {
                c.dw.fill(T::zero());
                c.db.fill(T::zero());
            }
            pad_image(shape, c.x, c.cols);
            params_image_on(kernels, shape, c.cols, c.dz, c.dw, c.db);
        },
    );
}

/// How this path goes through a batch (`cpu::conv_chunks`): an image at a time, with its
/// padded copy as the chunk's matrix.
pub fn chunking(shape: &Conv2d) -> (usize, usize) {
    (1, padded_len(shape))
}

/// A convolution's filters (O, C, K, K), as stored, → (K, K, C, O), the order the narrow
/// loops read: each tap's filters' weights side by side.
pub fn filters_to_taps_first<T: Scalar>(shape: &Conv2d, w: &[T], wt: &mut [T]) {
    let (c, k, o) = (shape.channels, shape.kernel, shape.filters);
    for f in 0..o {
        for ch in 0..c {
            for tap in 0..k * k {
                wt[(tap * c + ch) * o + f] = w[(f * c + ch) * k * k + tap];
            }
        }
    }
}

/// (K, K, C, O) → (O, C, K, K): a weight gradient back into the stored order.
pub fn filters_from_taps_first<T: Scalar>(shape: &Conv2d, wt: &[T], w: &mut [T]) {
    let (c, k, o) = (shape.channels, shape.kernel, shape.filters);
    for f in 0..o {
        for ch in 0..c {
            for tap in 0..k * k {
                w[(f * c + ch) * k * k + tap] = wt[(tap * c + ch) * o + f];
            }
        }
    }
}

/// Where a padded image's windows lie: output (y, x)'s window is `kernel` runs of `run`
/// values, the first at `start(y, x)`, each `row` after the one before.
#[derive(Clone, Copy)]
struct Windows {
    kernel: usize,
    run: usize,
    row: usize,
    out_width: usize,
    stride: usize,
}

impl Windows {
    fn of(shape: &Conv2d) -> Self {
        let c = shape.channels;
        Windows {
            kernel: shape.kernel,
            run: shape.kernel * c,
            row: padded_width(shape) * c,
            out_width: shape.out_width(),
            stride: shape.stride,
        }
    }

    /// Output position p's window's first value.
    #[inline(always)]
    fn start(&self, p: usize, channels: usize) -> usize {
        let (y, x) = (p / self.out_width, p % self.out_width);
        y * self.stride * self.row + x * self.stride * channels
    }
}

fn padded_width(shape: &Conv2d) -> usize {
    shape.width + 2 * shape.padding
}

/// Floats of one image with its zero border: (H + 2P, W + 2P, C).
fn padded_len(shape: &Conv2d) -> usize {
    (shape.height + 2 * shape.padding) * padded_width(shape) * shape.channels
}

/// Image `x` (H, W, C) inside a zero border, into `padded` (H + 2P, W + 2P, C).
fn pad_image<T: Scalar>(shape: &Conv2d, x: &[T], padded: &mut [T]) {
    let (c, pad) = (shape.channels, shape.padding);
    let (run, row) = (shape.width * c, padded_width(shape) * c);
    let padded = &mut padded[..padded_len(shape)];
    if pad > 0 {
        padded.fill(T::zero());
    }
    for (y, from) in x.chunks_exact(run).enumerate() {
        let at = (y + pad) * row + pad * c;
        padded[at..at + run].copy_from_slice(from);
    }
}

/// One padded image's forward (without the activation), `z` (H′·W′, O).
#[inline(always)]
fn forward_image<T: Scalar>(shape: &Conv2d, xp: &[T], wt: &[T], b: &[T], z: &mut [T]) {
    let (o, c, windows) = (shape.filters, shape.channels, Windows::of(shape));
    for (p, out) in z.chunks_exact_mut(o).enumerate() {
        let start = windows.start(p, c);
        let mut f = 0;
        while f + LANES <= o {
            let out = &mut out[f..f + LANES];
            forward_block::<T, LANES>(xp, start, windows, wt, b, (o, f), out);
            f += LANES;
        }
        for f in f..o {
            forward_block::<T, 1>(xp, start, windows, wt, b, (o, f), &mut out[f..f + 1]);
        }
    }
}

/// Filters f..f + L of one position: b + Σ_t window[t] · wt[t, f..f + L], in L lanes.
#[inline(always)]
fn forward_block<T: Scalar, const L: usize>(
    xp: &[T],
    start: usize,
    windows: Windows,
    wt: &[T],
    b: &[T],
    (o, f): (usize, usize),
    out: &mut [T],
) {
    let mut acc = [T::zero(); L];
    acc.copy_from_slice(&b[f..f + L]);
    let mut t = 0;
    for i in 0..windows.kernel {
        let at = start + i * windows.row;
        for &v in &xp[at..at + windows.run] {
            let w = &wt[t * o + f..t * o + f + L];
            for (a, &w) in acc.iter_mut().zip(w) {
                *a = *a + v * w;
            }
            t += 1;
        }
    }
    out.copy_from_slice(&acc);
}

/// One padded image's share of the weight and bias gradients, added onto `dwt` (K·K·C, O) and
/// `db` (O): for each position in order, each tap's value times the position's ∂L/∂z.
#[inline(always)]
fn params_image<T: Scalar>(shape: &Conv2d, xp: &[T], dz: &[T], dwt: &mut [T], db: &mut [T]) {
    let (o, c, windows) = (shape.filters, shape.channels, Windows::of(shape));
    for (p, g) in dz.chunks_exact(o).enumerate() {
        let start = windows.start(p, c);
        let mut f = 0;
        while f + LANES <= o {
            params_block::<T, LANES>(xp, start, windows, g, (o, f), dwt, db);
            f += LANES;
        }
        for f in f..o {
            params_block::<T, 1>(xp, start, windows, g, (o, f), dwt, db);
        }
    }
}

/// Filters f..f + L of one position's gradient: db += g, dwt[t] += window[t] · g.
#[inline(always)]
fn params_block<T: Scalar, const L: usize>(
    xp: &[T],
    start: usize,
    windows: Windows,
    g: &[T],
    (o, f): (usize, usize),
    dwt: &mut [T],
    db: &mut [T],
) {
    let mut gl = [T::zero(); L];
    gl.copy_from_slice(&g[f..f + L]);
    for (d, &g) in db[f..f + L].iter_mut().zip(&gl) {
        *d = *d + g;
    }
    let mut t = 0;
    for i in 0..windows.kernel {
        let at = start + i * windows.row;
        for &v in &xp[at..at + windows.run] {
            let dw = &mut dwt[t * o + f..t * o + f + L];
            for (d, &g) in dw.iter_mut().zip(&gl) {
                *d = *d + v * g;
            }
            t += 1;
        }
    }
}

vector_width_clones! {
    /// [`forward_image`] compiled for `kernels`' vector width.
    fn forward_image_on(shape: &Conv2d, xp: &[T], wt: &[T], b: &[T], z: &mut [T]) => forward_image
}

vector_width_clones! {
    /// [`params_image`] compiled for `kernels`' vector width.
    fn params_image_on(shape: &Conv2d, xp: &[T], dz: &[T], dwt: &mut [T], db: &mut [T]) => params_image
}
