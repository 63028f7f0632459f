//! The fast CPU convolution on channels-last images (`cpu::channels_last`):
//! im2col, then the dense layers' own GEMMs (`cpu::gemm`), checked against the plain-loop
//! references in `cpu::conv`.
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
use super::scalar::Scalar;
use crate::model::Conv2d;

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

/// Forward: z (B, H′, W′, O) = cols · wᵀ + b, with `cols` from [`im2col`] and the filters
/// `w` channels-last, (O, K, K, C).
pub fn conv2d_forward_im2col<T: Scalar>(
    shape: &Conv2d,
    cols: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    z: &mut [T],
    threads: usize,
) {
    let (positions, fan_in) = (shape.positions(rows), shape.window_len());
    gemm::linear_forward_biased(z, cols, w, b, positions, fan_in, shape.filters, threads);
}

/// Images per part of a convolution's weight gradient ([`conv2d_backward_params_im2col`]):
/// a batch of 128 is 2 parts, one per thread of a 2-core machine.
pub const IMAGES_PER_PART: usize = 64;

/// Weight and bias gradients from dz (B, H′, W′, O) and the layer's `cols`: `dw` channels-last,
/// (O, K, K, C).
///
/// The product sums over every output position of the batch into a few thousand values,
/// a shape the GEMM's own threads split badly (they split the output). So the batch is cut
/// into parts of [`IMAGES_PER_PART`] whole images, each part's gradient summed on one thread
/// into `partials` (grown to fit once), the threads taking parts, and the parts added in
/// order: the same values on any number of threads.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_params_im2col<T: Scalar>(
    shape: &Conv2d,
    dz: &[T],
    cols: &[T],
    rows: usize,
    dw: &mut [T],
    db: &mut [T],
    partials: &mut Vec<T>,
    threads: usize,
) {
    use rayon::prelude::*;
    let (fan_in, filters) = (shape.window_len(), shape.filters);
    let parts = rows.div_ceil(IMAGES_PER_PART);
    if parts <= 1 {
        let positions = shape.positions(rows);
        return gemm::linear_backward_params(dw, db, dz, cols, positions, fan_in, filters, 1);
    }
    let len = dw.len() + db.len();
    if partials.len() < parts * len {
        partials.resize(parts * len, T::zero());
    }
    let dz_part = shape.positions(IMAGES_PER_PART) * filters;
    let cols_part = cols_len(shape, IMAGES_PER_PART);
    let part_gradient = |((partial, dz), cols): ((&mut [T], &[T]), &[T])| {
        let (pw, pb) = partial.split_at_mut(dw.len());
        let positions = dz.len() / filters;
        gemm::linear_backward_params(pw, pb, dz, cols, positions, fan_in, filters, 1);
    };
    let (partials, dz, cols) = (
        &mut partials[..parts * len],
        &dz[..shape.positions(rows) * filters],
        &cols[..cols_len(shape, rows)],
    );
    if threads > 1 {
        (partials.par_chunks_mut(len))
            .zip(dz.par_chunks(dz_part))
            .zip(cols.par_chunks(cols_part))
            .for_each(part_gradient);
    } else {
        (partials.chunks_mut(len))
            .zip(dz.chunks(dz_part))
            .zip(cols.chunks(cols_part))
            .for_each(part_gradient);
    }
    for (i, partial) in partials.chunks_exact(len).enumerate() {
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

/// Input gradient dx (B, H, W, C) from dz (B, H′, W′, O) and the channels-last filters `w`:
/// dcols = dz · w, then [`col2im`]. `dcols` is scratch of [`cols_len`].
pub fn conv2d_backward_input_im2col<T: Scalar>(
    shape: &Conv2d,
    dz: &[T],
    w: &[T],
    rows: usize,
    dcols: &mut [T],
    dx: &mut [T],
    threads: usize,
) {
    let (positions, fan_in) = (shape.positions(rows), shape.window_len());
    gemm::linear_backward_input(dcols, dz, w, positions, fan_in, shape.filters, threads);
    col2im(shape, dcols, rows, dx, threads);
}
