//! The fast CPU convolution on channels-last images (`cpu::channels_last`):
//! im2col, then the dense layers' own GEMMs (`cpu::gemm`), checked against the plain-loop
//! references in `cpu::conv`.
//!
//! A batch's im2col matrix is large (the example network's second convolution: 29 MB at batch
//! 128) and each pass would write it to memory and read it back. So the batch goes through in
//! chunks of a few images ([`images_per_chunk`]), each thread building its chunk's matrix in
//! its own buffer ([`ConvScratch`]) and multiplying it while it is still in the core's cache;
//! the backward pass builds it again rather than keeping it.
//!
//! Every (image, output position) becomes a row of `cols` holding the K·K·C input values its
//! window sees, in (kernel row, kernel column, channel) order, zeros on padding:
//! cols (B·H′·W′, K·K·C). Each kernel row of a window is one run of K·C contiguous input
//! values. The convolution is then a dense layer over those rows with the filters in the same
//! order, (O, K·K·C) (`channels_last::filters_to_channels_last`), as its weights, so
//! - forward:       Z (B·H′·W′, O) = cols · Wᵀ + b      `gemm::linear_forward`
//! - weights:       dW (O, K·K·C)  = dZᵀ · cols          `gemm::linear_backward_weight`
//! - input:         dcols           = dZ · W             `gemm::linear_backward_input`,
//!   scattered back onto the pixels each window read (`col2im`);
//!
//! and Z (B·H′·W′, O) is the output, channels-last, as the next layer reads it.

use super::channels_last::per_image;
use super::gemm;
use super::ops;
use super::scalar::Scalar;
use crate::model::{Activation, Conv2d};
use rayon::prelude::*;

/// Length of `cols` for `rows` images: B·H′·W′ rows of K·K·C.
pub fn cols_len(shape: &Conv2d, rows: usize) -> usize {
    shape.positions(rows) * shape.window_len()
}

/// cols (B·H′·W′, K·K·C) from x (B, H, W, C); padding reads as 0.
pub fn im2col<T: Scalar>(shape: &Conv2d, x: &[T], rows: usize, cols: &mut [T], threads: usize) {
    let (oh, ow, k, c) = (
        shape.out_height(),
        shape.out_width(),
        shape.kernel,
        shape.channels,
    );
    let (h, w, pad) = (
        shape.height as isize,
        shape.width as isize,
        shape.padding as isize,
    );
    let run = k * c;
    let image_cols = cols_len(shape, 1);
    let x = &x[..rows * shape.in_len()];
    let cols = &mut cols[..rows * image_cols];
    per_image(
        x,
        shape.in_len(),
        cols,
        image_cols,
        threads,
        |image, cols| {
            let mut windows = cols.chunks_exact_mut(shape.window_len());
            for y in 0..oh {
                for xo in 0..ow {
                    let window = windows.next().expect("cols holds a row per position");
                    let col0 = (xo * shape.stride) as isize - pad;
                    for (i, dst) in window.chunks_exact_mut(run).enumerate() {
                        let row = (y * shape.stride + i) as isize - pad;
                        if row < 0 || row >= h {
                            dst.fill(T::zero());
                        } else if col0 >= 0 && col0 + k as isize <= w {
                            let at = (row * w + col0) as usize * c;
                            dst.copy_from_slice(&image[at..at + run]);
                        } else {
                            for (j, dst) in dst.chunks_exact_mut(c).enumerate() {
                                let col = col0 + j as isize;
                                if (0..w).contains(&col) {
                                    let at = (row * w + col) as usize * c;
                                    dst.copy_from_slice(&image[at..at + c]);
                                } else {
                                    dst.fill(T::zero());
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}

/// dx (B, H, W, C) = the sum, over every window value, of its gradient in `dcols` at the pixel
/// it was read from (im2col's adjoint), in im2col's order.
pub fn col2im<T: Scalar>(shape: &Conv2d, dcols: &[T], rows: usize, dx: &mut [T], threads: usize) {
    let (oh, ow, k, c) = (
        shape.out_height(),
        shape.out_width(),
        shape.kernel,
        shape.channels,
    );
    let (h, w, pad) = (
        shape.height as isize,
        shape.width as isize,
        shape.padding as isize,
    );
    let run = k * c;
    let image_cols = cols_len(shape, 1);
    let dcols = &dcols[..rows * image_cols];
    let dx = &mut dx[..rows * shape.in_len()];
    let add = |to: &mut [T], from: &[T]| {
        for (d, &g) in to.iter_mut().zip(from) {
            *d = *d + g;
        }
    };
    per_image(
        dcols,
        image_cols,
        dx,
        shape.in_len(),
        threads,
        |dcols, image| {
            image.fill(T::zero());
            let mut windows = dcols.chunks_exact(shape.window_len());
            for y in 0..oh {
                for xo in 0..ow {
                    let window = windows.next().expect("dcols holds a row per position");
                    let col0 = (xo * shape.stride) as isize - pad;
                    for (i, src) in window.chunks_exact(run).enumerate() {
                        let row = (y * shape.stride + i) as isize - pad;
                        if row < 0 || row >= h {
                            continue;
                        }
                        if col0 >= 0 && col0 + k as isize <= w {
                            let at = (row * w + col0) as usize * c;
                            add(&mut image[at..at + run], src);
                        } else {
                            for (j, src) in src.chunks_exact(c).enumerate() {
                                let col = col0 + j as isize;
                                if (0..w).contains(&col) {
                                    let at = (row * w + col) as usize * c;
                                    add(&mut image[at..at + c], src);
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}

/// Floats of one chunk's im2col matrix, at most: 512 KiB of f32, which a core's L2 cache holds
/// beside the chunk's input and output.
const CHUNK_FLOATS: usize = 1 << 17;

/// Images per part of a convolution's weight gradient: each part's gradient is summed on one
/// thread, in chunk order, and the parts added in order, so the gradient is the same bits on
/// any number of threads. A batch of 128 is 8 parts.
pub const IMAGES_PER_PART: usize = 16;

/// Images a chunk of the batch holds for `shape`: as many as fit [`CHUNK_FLOATS`], at least
/// one, at most a part. Fixed by the shape alone, so the sums never depend on the threads.
pub fn images_per_chunk(shape: &Conv2d) -> usize {
    (CHUNK_FLOATS / cols_len(shape, 1).max(1)).clamp(1, IMAGES_PER_PART)
}

/// Each thread's buffers for the chunked convolution: a chunk's im2col matrix and its
/// gradient, and each part's weight and bias gradients. Grown by the first pass that needs
/// more, then reused.
pub struct ConvScratch<T> {
    cols: Vec<T>,
    dcols: Vec<T>,
    partials: Vec<T>,
}

impl<T: Scalar> Default for ConvScratch<T> {
    fn default() -> Self {
        ConvScratch {
            cols: Vec::new(),
            dcols: Vec::new(),
            partials: Vec::new(),
        }
    }
}

impl<T: Scalar> ConvScratch<T> {
    /// The floats a pass of `rows` images of `shape` on `threads` threads needs here.
    pub fn floats(shape: &Conv2d, rows: usize, threads: usize) -> u128 {
        let chunk = cols_len(shape, images_per_chunk(shape)) as u128;
        let parts = rows.div_ceil(IMAGES_PER_PART) as u128;
        let part = (shape.weights_len() + shape.filters) as u128;
        2 * threads.max(1) as u128 * chunk + parts * part
    }

    /// `threads` chunk buffers for `shape`'s im2col matrix (and as many for its gradient,
    /// with `gradient`), each of `len`.
    fn chunks(&mut self, shape: &Conv2d, threads: usize, gradient: bool) -> (usize, usize) {
        let len = cols_len(shape, images_per_chunk(shape));
        let floats = threads.max(1) * len;
        grow(&mut self.cols, floats);
        if gradient {
            grow(&mut self.dcols, floats);
        }
        (len, floats)
    }
}

fn grow<T: Scalar>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, T::zero());
    }
}

/// Forward with the activation: z (B, H′, W′, O) = act(cols · wᵀ + b) from x (B, H, W, C) and
/// the filters `w` channels-last, (O, K, K, C), a chunk of images at a time on each thread.
/// Each output is its own sum, so the chunks change no bit.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_im2col<T: Scalar>(
    shape: &Conv2d,
    activation: Activation,
    x: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    z: &mut [T],
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    let threads = threads.max(1);
    let per_chunk = images_per_chunk(shape);
    let (chunk_len, floats) = scratch.chunks(shape, threads, false);
    // Whole chunks per thread.
    let per_thread = rows.div_ceil(per_chunk).div_ceil(threads) * per_chunk;
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let (fan_in, filters) = (shape.window_len(), shape.filters);
    let run = |((x, z), cols): ((&[T], &mut [T]), &mut [T])| {
        let chunks = x.chunks(per_chunk * in_len);
        for (x, z) in chunks.zip(z.chunks_mut(per_chunk * out_len)) {
            let images = x.len() / in_len;
            let cols = &mut cols[..cols_len(shape, images)];
            im2col(shape, x, images, cols, 1);
            let positions = shape.positions(images);
            gemm::linear_forward_biased(z, cols, w, b, positions, fan_in, filters, 1);
            ops::activation_forward(activation, z);
        }
    };
    let (x, z) = (&x[..rows * in_len], &mut z[..rows * out_len]);
    let cols = &mut scratch.cols[..floats];
    if threads > 1 {
        (x.par_chunks(per_thread * in_len))
            .zip(z.par_chunks_mut(per_thread * out_len))
            .zip(cols.par_chunks_mut(chunk_len))
            .for_each(run);
    } else {
        run(((x, z), cols));
    }
}

/// One thread's share of [`conv2d_backward_im2col`]: whole parts of the batch.
struct BackwardShare<'a, T> {
    dz: &'a mut [T],
    a_out: &'a [T],
    x: &'a [T],
    dx: Option<&'a mut [T]>,
    partials: &'a mut [T],
    cols: &'a mut [T],
    dcols: &'a mut [T],
}

/// Backward through the activation and the convolution, from ∂L/∂(its output) `dz`
/// (B, H′, W′, O), which becomes ∂L/∂z in place, given the activation's output `a_out` and
/// the layer's input `x` (B, H, W, C): the weight gradient `dw` channels-last (O, K, K, C),
/// the bias gradient `db`, and with `dx` the input gradient (B, H, W, C) = col2im(dz · w).
///
/// The batch is cut into parts of [`IMAGES_PER_PART`] images, each part's gradients summed on
/// one thread chunk by chunk, the threads taking whole parts, and the parts added in order:
/// the same values on any number of threads.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_im2col<T: Scalar>(
    shape: &Conv2d,
    activation: Activation,
    a_out: &[T],
    dz: &mut [T],
    x: &[T],
    w: &[T],
    rows: usize,
    (dw, db): (&mut [T], &mut [T]),
    dx: Option<&mut [T]>,
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    let threads = threads.max(1);
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let (chunk_len, floats) = scratch.chunks(shape, threads, dx.is_some());
    let parts = rows.div_ceil(IMAGES_PER_PART);
    let len = dw.len() + db.len();
    grow(&mut scratch.partials, parts * len);
    let per_thread = parts.div_ceil(threads) * IMAGES_PER_PART;
    let mut dx = dx.map(|dx| dx[..rows * in_len].chunks_mut(per_thread * in_len));
    let mut dcols = scratch.dcols.chunks_mut(chunk_len);
    let shares: Vec<BackwardShare<T>> = (dz[..rows * out_len].chunks_mut(per_thread * out_len))
        .zip(a_out[..rows * out_len].chunks(per_thread * out_len))
        .zip(x[..rows * in_len].chunks(per_thread * in_len))
        .zip(scratch.partials[..parts * len].chunks_mut(per_thread / IMAGES_PER_PART * len))
        .zip(scratch.cols[..floats].chunks_mut(chunk_len))
        .map(|((((dz, a_out), x), partials), cols)| BackwardShare {
            dz,
            a_out,
            x,
            dx: dx.as_mut().and_then(|dx| dx.next()),
            partials,
            cols,
            dcols: dcols.next().unwrap_or_default(),
        })
        .collect();
    let run = |share: BackwardShare<T>| backward_share(shape, activation, w, share);
    if threads > 1 {
        shares.into_par_iter().for_each(run);
    } else {
        shares.into_iter().for_each(run);
    }
    for (i, partial) in scratch.partials[..parts * len]
        .chunks_exact(len)
        .enumerate()
    {
        let (pw, pb) = partial.split_at(dw.len());
        for (out, part) in [(&mut *dw, pw), (&mut *db, pb)] {
            if i == 0 {
                out.copy_from_slice(part);
            } else {
                out.iter_mut().zip(part).for_each(|(o, &p)| *o = *o + p);
            }
        }
    }
}

/// [`conv2d_backward_im2col`] on one thread's parts, each part's gradients into its slot of
/// `partials`.
fn backward_share<T: Scalar>(
    shape: &Conv2d,
    activation: Activation,
    w: &[T],
    share: BackwardShare<T>,
) {
    let BackwardShare {
        dz,
        a_out,
        x,
        dx,
        partials,
        cols,
        dcols,
    } = share;
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let (fan_in, filters) = (shape.window_len(), shape.filters);
    let weights = shape.weights_len();
    let per_chunk = images_per_chunk(shape);
    let mut dx_parts = dx.map(|dx| dx.chunks_mut(IMAGES_PER_PART * in_len));
    let parts = (dz.chunks_mut(IMAGES_PER_PART * out_len))
        .zip(a_out.chunks(IMAGES_PER_PART * out_len))
        .zip(x.chunks(IMAGES_PER_PART * in_len))
        .zip(partials.chunks_mut(weights + filters));
    for (((dz, a_out), x), partial) in parts {
        let (pw, pb) = partial.split_at_mut(weights);
        pb.fill(T::zero());
        let mut dx_chunks = dx_parts
            .as_mut()
            .and_then(|parts| parts.next())
            .map(|dx| dx.chunks_mut(per_chunk * in_len));
        let chunks = (dz.chunks_mut(per_chunk * out_len))
            .zip(a_out.chunks(per_chunk * out_len))
            .zip(x.chunks(per_chunk * in_len));
        for (c, ((dz, a_out), x)) in chunks.enumerate() {
            ops::activation_backward(activation, a_out, dz);
            let images = x.len() / in_len;
            let positions = shape.positions(images);
            let cols = &mut cols[..cols_len(shape, images)];
            im2col(shape, x, images, cols, 1);
            let dims = (positions, fan_in, filters);
            if c == 0 {
                gemm::linear_backward_weight(pw, dz, cols, positions, fan_in, filters, 1);
            } else {
                gemm::linear_backward_weight_onto(pw, dz, cols, dims, 1);
            }
            for row in dz.chunks_exact(filters) {
                pb.iter_mut().zip(row).for_each(|(d, &g)| *d = *d + g);
            }
            if let Some(dx) = dx_chunks.as_mut().and_then(|chunks| chunks.next()) {
                let dcols = &mut dcols[..cols.len()];
                gemm::linear_backward_input(dcols, dz, w, positions, fan_in, filters, 1);
                col2im(shape, dcols, images, dx, 1);
            }
        }
    }
}
