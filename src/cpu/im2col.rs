//! The fast CPU convolution on channels-last images (`cpu::channels_last`):
//! im2col, then the dense layers' own GEMMs (`cpu::gemm`), checked against the plain-loop
//! references in `cpu::conv`.
//!
//! A batch's im2col matrix is large (the example network's second convolution: 29 MB at batch
//! 128) and each pass would write it to memory and read it back. So the batch goes through in
//! chunks of a few images ([`images_per_chunk`]), each thread building its chunk's matrix in
//! its own buffer (`cpu::conv_chunks`) and multiplying it while it is still in the core's
//! cache; the backward pass builds it again rather than keeping it.
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
use super::conv_chunks::{ConvScratch, Epilogue, Gradient, backward_by_parts, forward_by_chunks};
use super::gemm;
use super::scalar::Scalar;
use crate::model::{Activation, Conv2d};

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

/// Images a chunk of the batch holds for `shape`: as many as fit [`CHUNK_FLOATS`], at least
/// one, at most a part (`conv_chunks::IMAGES_PER_PART`). Fixed by the shape alone, so the sums
/// never depend on the threads.
pub fn images_per_chunk(shape: &Conv2d) -> usize {
    (CHUNK_FLOATS / cols_len(shape, 1).max(1)).clamp(1, super::conv_chunks::IMAGES_PER_PART)
}

/// How this path goes through a batch (`cpu::conv_chunks`): [`images_per_chunk`] images at a
/// time, and the floats of an image's im2col matrix.
pub fn chunking(shape: &Conv2d) -> (usize, usize) {
    (images_per_chunk(shape), cols_len(shape, 1))
}

/// Forward with the activation: act(cols · wᵀ + b), (B, H′, W′, O), from x (B, H, W, C) and
/// the filters `w` channels-last, (O, K, K, C), into `epilogue` (stored, or pooled), a chunk
/// of images at a time on each thread. Each output is its own sum, so the chunks change no
/// bit.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_im2col<T: Scalar>(
    shape: &Conv2d,
    activation: Activation,
    x: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    epilogue: Epilogue<'_, T>,
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    let (fan_in, filters) = (shape.window_len(), shape.filters);
    let (io, passes) = ((x, rows, epilogue), (activation, threads));
    forward_by_chunks(
        shape,
        io,
        scratch,
        chunking(shape),
        passes,
        |x, images, cols, z| {
            let cols = &mut cols[..cols_len(shape, images)];
            im2col(shape, x, images, cols, 1);
            let positions = shape.positions(images);
            gemm::linear_forward_biased(z, cols, w, b, positions, fan_in, filters, 1)
        },
    );
}

/// Backward through the activation and the convolution, from `gradient` (∂L/∂ its output,
/// or through its fused pooling, `cpu::conv_chunks`) and the layer's input `x` (B, H, W, C):
/// the weight gradient `dw` channels-last (O, K, K, C), the bias gradient `db`, and with `dx`
/// the input gradient (B, H, W, C) = col2im(∂L/∂z · w). Each chunk's weight gradient is
/// added onto its part's, the bias gradient row by row: the same values on any number of
/// threads (`conv_chunks::backward_by_parts`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_im2col<T: Scalar>(
    shape: &Conv2d,
    activation: Activation,
    gradient: Gradient<'_, T>,
    x: &[T],
    w: &[T],
    rows: usize,
    grads: (&mut [T], &mut [T]),
    dx: Option<&mut [T]>,
    scratch: &mut ConvScratch<T>,
    threads: usize,
) {
    let (fan_in, filters) = (shape.window_len(), shape.filters);
    let io = (gradient, x, rows, grads, dx);
    backward_by_parts(
        shape,
        io,
        scratch,
        chunking(shape),
        (activation, threads),
        |c| {
            let positions = shape.positions(c.images);
            let cols = &mut c.cols[..cols_len(shape, c.images)];
            im2col(shape, c.x, c.images, cols, 1);
            if c.first_of_part {
                gemm::linear_backward_weight(c.dw, c.dz, cols, positions, fan_in, filters, 1);
                c.db.fill(T::zero());
            } else {
                let (dw, dz) = (&mut *c.dw, c.dz);
                gemm::linear_backward_weight_onto(dw, dz, cols, positions, fan_in, filters, 1);
            }
            for row in c.dz.chunks_exact(filters) {
                c.db.iter_mut().zip(row).for_each(|(d, &g)| *d = *d + g);
            }
            if let Some(dx) = c.dx {
                let dcols = &mut c.dcols[..cols.len()];
                gemm::linear_backward_input(dcols, c.dz, w, positions, fan_in, filters, 1);
                col2im(shape, dcols, c.images, dx, 1);
            }
        },
    );
}
