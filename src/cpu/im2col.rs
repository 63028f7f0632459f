//! The fast CPU convolution (issue 18): im2col, then the dense layers' own GEMMs
//! (`cpu::gemm`), checked against the plain-loop references in `cpu::conv`. Not yet in the
//! training path.
//!
//! Every (image, output position) becomes a row of `cols` holding the C·K·K input values its
//! window sees (zeros on padding): cols (B·H′·W′, C·K·K). The convolution is then a dense layer
//! over those rows with the filters (O, C·K·K) as its weights, so
//! - forward:       Z (B·H′·W′, O) = cols · Wᵀ + b      `gemm::linear_forward`
//! - weights:       dW (O, C·K·K)  = dZᵀ · cols          `gemm::linear_backward_weight`
//! - input:         dcols           = dZ · W             `gemm::linear_backward_input`,
//!   scattered back onto the pixels each window read (`col2im`);
//!
//! with Z and dZ position-major (B, H′, W′, O); `to_position_major` and `to_channel_major`
//! convert from and to the NCHW layout the references and kernels use.

use super::Scalar;
use super::conv::Conv2d;
use super::gemm;

/// Length of `cols` for `rows` images: B·H′·W′ rows of C·K·K.
pub fn cols_len(shape: &Conv2d, rows: usize) -> usize {
    shape.positions(rows) * shape.window_len()
}

/// Runs `f` on each image's (input, output) pair: `input` in chunks of `in_len`, `output` in
/// chunks of `out_len`, on the current rayon pool's threads when `threads` > 1. Images are
/// independent, so the result is the same bits either way.
fn per_image<T: Scalar>(
    input: &[T],
    in_len: usize,
    output: &mut [T],
    out_len: usize,
    threads: usize,
    f: impl Fn(&[T], &mut [T]) + Sync,
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

/// cols (B·H′·W′, C·K·K) from x (B, C, H, W); padding reads as 0.
pub fn im2col<T: Scalar>(shape: &Conv2d, x: &[T], rows: usize, cols: &mut [T], threads: usize) {
    let (oh, ow, k) = (shape.out_height(), shape.out_width(), shape.kernel);
    let (h, w, pad) = (
        shape.height as isize,
        shape.width as isize,
        shape.padding as isize,
    );
    let plane = shape.height * shape.width;
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
                    for (c, channel) in image.chunks_exact(plane).enumerate() {
                        for i in 0..k {
                            let dst = &mut window[(c * k + i) * k..(c * k + i + 1) * k];
                            let row = (y * shape.stride + i) as isize - pad;
                            if row < 0 || row >= h {
                                dst.fill(T::zero());
                            } else if col0 >= 0 && col0 + k as isize <= w {
                                let at = (row * w + col0) as usize;
                                dst.copy_from_slice(&channel[at..at + k]);
                            } else {
                                for (j, d) in dst.iter_mut().enumerate() {
                                    let col = col0 + j as isize;
                                    *d = if (0..w).contains(&col) {
                                        channel[(row * w + col) as usize]
                                    } else {
                                        T::zero()
                                    };
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}

/// dx (B, C, H, W) = the sum, over every window value, of its gradient in `dcols` at the pixel
/// it was read from (im2col's adjoint), in im2col's order.
pub fn col2im<T: Scalar>(shape: &Conv2d, dcols: &[T], rows: usize, dx: &mut [T], threads: usize) {
    let (oh, ow, k) = (shape.out_height(), shape.out_width(), shape.kernel);
    let (h, w, pad) = (
        shape.height as isize,
        shape.width as isize,
        shape.padding as isize,
    );
    let plane = shape.height * shape.width;
    let image_cols = cols_len(shape, 1);
    let dcols = &dcols[..rows * image_cols];
    let dx = &mut dx[..rows * shape.in_len()];
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
                    for (c, channel) in image.chunks_exact_mut(plane).enumerate() {
                        for i in 0..k {
                            let src = &window[(c * k + i) * k..(c * k + i + 1) * k];
                            let row = (y * shape.stride + i) as isize - pad;
                            if row < 0 || row >= h {
                                continue;
                            }
                            for (j, &g) in src.iter().enumerate() {
                                let col = col0 + j as isize;
                                if (0..w).contains(&col) {
                                    let at = (row * w + col) as usize;
                                    channel[at] = channel[at] + g;
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}

/// (B, O, H′, W′) → (B, H′, W′, O).
pub fn to_position_major<T: Scalar>(
    shape: &Conv2d,
    z: &[T],
    rows: usize,
    out: &mut [T],
    threads: usize,
) {
    let plane = shape.out_height() * shape.out_width();
    transpose_images(z, rows, (shape.filters, plane), out, threads);
}

/// (B, H′, W′, O) → (B, O, H′, W′).
pub fn to_channel_major<T: Scalar>(
    shape: &Conv2d,
    z: &[T],
    rows: usize,
    out: &mut [T],
    threads: usize,
) {
    let plane = shape.out_height() * shape.out_width();
    transpose_images(z, rows, (plane, shape.filters), out, threads);
}

/// Each of `rows` images of `z`, a (m, n) row-major matrix, written transposed, (n, m), to
/// `out`.
fn transpose_images<T: Scalar>(
    z: &[T],
    rows: usize,
    (m, n): (usize, usize),
    out: &mut [T],
    threads: usize,
) {
    let len = m * n;
    per_image(
        &z[..rows * len],
        len,
        &mut out[..rows * len],
        len,
        threads,
        |z, out| {
            for i in 0..m {
                for j in 0..n {
                    out[j * m + i] = z[i * n + j];
                }
            }
        },
    );
}

/// Forward: z (B, H′, W′, O), position-major, = cols · wᵀ + b, with `cols` from [`im2col`].
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

/// Weight and bias gradients from dz (B, H′, W′, O), position-major, and the layer's `cols`.
pub fn conv2d_backward_params_im2col<T: Scalar>(
    shape: &Conv2d,
    dz: &[T],
    cols: &[T],
    rows: usize,
    dw: &mut [T],
    db: &mut [T],
    threads: usize,
) {
    let (positions, fan_in) = (shape.positions(rows), shape.window_len());
    gemm::linear_backward_params(dw, db, dz, cols, positions, fan_in, shape.filters, threads);
}

/// Input gradient dx (B, C, H, W) from dz (B, H′, W′, O), position-major: dcols = dz · w, then
/// [`col2im`]. `dcols` is scratch of [`cols_len`].
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
