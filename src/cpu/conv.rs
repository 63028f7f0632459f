//! 2-D convolution and max pooling, the reference maths: plain loops accumulating in
//! f64, generic over f32 and f64 like `cpu::ops`, the spec a fast path is to be checked against,
//! and the CPU twins of conv.wgsl's and pool.wgsl's entry points of the same names (`wgtrain
//! check` compares them). `docs/derivations.md` derives the backward passes; the shapes and
//! layouts are `model::shape`'s.

use super::scalar::Scalar;

use crate::model::{Conv2d, MaxPool2d};

impl Conv2d {
    /// The input pixel (row, column) that output (y, x) sees through kernel tap (i, j), or
    /// `None` where the tap falls on padding.
    fn tap(&self, y: usize, x: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let row = (y * self.stride + i).checked_sub(self.padding)?;
        let col = (x * self.stride + j).checked_sub(self.padding)?;
        (row < self.height && col < self.width).then_some((row, col))
    }

    /// Every (output position, input position, weight position) the convolution multiplies,
    /// for one image, output channel and input channel: the one place the index arithmetic
    /// lives, shared by the forward pass and both gradients.
    fn products(&self, o: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (oh, ow, k) = (self.out_height(), self.out_width(), self.kernel);
        (0..oh).flat_map(move |y| {
            (0..ow).flat_map(move |x| {
                (0..k).flat_map(move |i| {
                    (0..k).filter_map(move |j| {
                        let (row, col) = self.tap(y, x, i, j)?;
                        Some((
                            (o * oh + y) * ow + x,
                            (c * self.height + row) * self.width + col,
                            ((o * self.channels + c) * k + i) * k + j,
                        ))
                    })
                })
            })
        })
    }
}

/// Reference forward pass: out (B, O, H′, W′) = bias + Σ_c Σ_taps w · x, in f64.
pub fn conv2d_forward<T: Scalar>(shape: &Conv2d, x: &[T], w: &[T], b: &[T], rows: usize) -> Vec<T> {
    let (in_len, out_len, plane) = (
        shape.in_len(),
        shape.out_len(),
        shape.out_height() * shape.out_width(),
    );
    let mut out = vec![T::zero(); rows * out_len];
    for r in 0..rows {
        let mut acc: Vec<f64> = (0..out_len).map(|p| b[p / plane].to_f64()).collect();
        let x = &x[r * in_len..(r + 1) * in_len];
        for o in 0..shape.filters {
            for c in 0..shape.channels {
                for (to, from, tap) in shape.products(o, c) {
                    acc[to] += x[from].to_f64() * w[tap].to_f64();
                }
            }
        }
        for (v, a) in out[r * out_len..(r + 1) * out_len].iter_mut().zip(acc) {
            *v = T::from_f64(a);
        }
    }
    out
}

/// Reference weight and bias gradients from the output gradient `dz` (B, O, H′, W′) and the
/// layer's input `x`: dw (O, C, K, K) = Σ_rows Σ_positions dz · x, db (O) = Σ_rows Σ_positions dz.
pub fn conv2d_backward_params<T: Scalar>(
    shape: &Conv2d,
    dz: &[T],
    x: &[T],
    rows: usize,
) -> (Vec<T>, Vec<T>) {
    let (in_len, out_len, plane) = (
        shape.in_len(),
        shape.out_len(),
        shape.out_height() * shape.out_width(),
    );
    let mut dw = vec![0f64; shape.weights_len()];
    let mut db = vec![0f64; shape.filters];
    for r in 0..rows {
        let (x, dz) = (
            &x[r * in_len..(r + 1) * in_len],
            &dz[r * out_len..(r + 1) * out_len],
        );
        for (p, g) in dz.iter().enumerate() {
            db[p / plane] += (*g).to_f64();
        }
        for o in 0..shape.filters {
            for c in 0..shape.channels {
                for (to, from, tap) in shape.products(o, c) {
                    dw[tap] += dz[to].to_f64() * x[from].to_f64();
                }
            }
        }
    }
    (
        dw.into_iter().map(T::from_f64).collect(),
        db.into_iter().map(T::from_f64).collect(),
    )
}

/// Reference input gradient: dx (B, C, H, W) = Σ over the outputs each pixel fed of dz · w (the
/// transposed convolution); padding taps receive nothing.
pub fn conv2d_backward_input<T: Scalar>(shape: &Conv2d, dz: &[T], w: &[T], rows: usize) -> Vec<T> {
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let mut dx = vec![T::zero(); rows * in_len];
    for r in 0..rows {
        let dz = &dz[r * out_len..(r + 1) * out_len];
        let mut acc = vec![0f64; in_len];
        for o in 0..shape.filters {
            for c in 0..shape.channels {
                for (to, from, tap) in shape.products(o, c) {
                    acc[from] += dz[to].to_f64() * w[tap].to_f64();
                }
            }
        }
        for (v, a) in dx[r * in_len..(r + 1) * in_len].iter_mut().zip(acc) {
            *v = T::from_f64(a);
        }
    }
    dx
}

/// Max pooling forward: the largest value of each window, and where it was (its index within
/// the image, for the backward pass). A tie goes to the first in row-major order, so every
/// implementation routes the gradient to the same pixel; NaN wins over any number, so a
/// broken input stays visible.
pub fn max_pool2d_forward<T: Scalar>(
    shape: &MaxPool2d,
    x: &[T],
    rows: usize,
) -> (Vec<T>, Vec<u32>) {
    let mut out = vec![T::zero(); rows * shape.out_len()];
    let mut argmax = vec![0u32; rows * shape.out_len()];
    max_pool2d_forward_into(shape, x, rows, &mut out, &mut argmax);
    (out, argmax)
}

/// [`max_pool2d_forward`] into the caller's `out` and `argmax` (rows · C·H′·W′ each).
pub fn max_pool2d_forward_into<T: Scalar>(
    shape: &MaxPool2d,
    x: &[T],
    rows: usize,
    out: &mut [T],
    argmax: &mut [u32],
) {
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    let (oh, ow) = (shape.out_height(), shape.out_width());
    for r in 0..rows {
        let x = &x[r * in_len..(r + 1) * in_len];
        for c in 0..shape.channels {
            for y in 0..oh {
                for xo in 0..ow {
                    let first =
                        (c * shape.height + y * shape.stride) * shape.width + xo * shape.stride;
                    let (mut at, mut best) = (first, x[first]);
                    for i in 0..shape.window {
                        for j in 0..shape.window {
                            let here = first + i * shape.width + j;
                            let v = x[here];
                            if !best.is_nan() && (v > best || v.is_nan()) {
                                (at, best) = (here, v);
                            }
                        }
                    }
                    let to = r * out_len + (c * oh + y) * ow + xo;
                    out[to] = best;
                    argmax[to] = at as u32;
                }
            }
        }
    }
}

/// Max pooling backward: each output's gradient goes to the pixel its window took (summed
/// where overlapping windows took the same pixel); every other pixel gets zero.
pub fn max_pool2d_backward<T: Scalar>(
    shape: &MaxPool2d,
    dz: &[T],
    argmax: &[u32],
    rows: usize,
) -> Vec<T> {
    let mut dx = vec![T::zero(); rows * shape.in_len()];
    max_pool2d_backward_into(shape, dz, argmax, rows, &mut dx);
    dx
}

/// [`max_pool2d_backward`] into the caller's `dx` (rows · C·H·W), which it overwrites.
pub fn max_pool2d_backward_into<T: Scalar>(
    shape: &MaxPool2d,
    dz: &[T],
    argmax: &[u32],
    rows: usize,
    dx: &mut [T],
) {
    let (in_len, out_len) = (shape.in_len(), shape.out_len());
    dx[..rows * in_len].fill(T::zero());
    for r in 0..rows {
        for p in 0..out_len {
            let at = r * in_len + argmax[r * out_len + p] as usize;
            dx[at] = dx[at] + dz[r * out_len + p];
        }
    }
}
