//! The convolution, max pooling and dropout references (`cpu::conv`, `dropout`),
//! against finite differences, against the dense layer they generalise, and (dropout) against
//! the statistics a mask must have; and the fast CPU path's channels-last convolution, pooling
//! and dropout against them.

use wgtrain::cpu::conv::{
    conv2d_backward_input, conv2d_backward_params, conv2d_forward, max_pool2d_backward,
    max_pool2d_forward,
};
use wgtrain::cpu::dropout::{dropout_backward, dropout_forward};
use wgtrain::cpu::ops::linear_forward_reference;
use wgtrain::model::ImageShape;
use wgtrain::model::dropout::DropoutMask;
use wgtrain::model::{Conv2d, MaxPool2d};

use crate::common::{rng, uniform};

/// Shapes that reach every case: padding, stride 2, a kernel of 1 and of 7, a window running
/// off the edge by one pixel, one channel and several.
fn shapes() -> Vec<Conv2d> {
    let conv = |channels, height, width, filters, kernel, stride, padding| Conv2d {
        channels,
        height,
        width,
        filters,
        kernel,
        stride,
        padding,
    };
    vec![
        conv(2, 5, 6, 3, 3, 1, 1),
        conv(1, 7, 7, 2, 3, 2, 0),
        conv(3, 6, 5, 2, 5, 2, 2),
        conv(2, 4, 4, 3, 1, 1, 0),
        conv(1, 8, 9, 2, 7, 1, 3),
    ]
}

/// L = Σ dz · conv(x, w, b) for a fixed dz: its gradient in x, w and b is exactly what the
/// backward passes compute from dz, and L is linear in each, so central differences are exact
/// up to rounding.
fn loss(shape: &Conv2d, x: &[f64], w: &[f64], b: &[f64], dz: &[f64], rows: usize) -> f64 {
    conv2d_forward(shape, x, w, b, rows)
        .iter()
        .zip(dz)
        .map(|(z, g)| z * g)
        .sum()
}

/// Central difference of `f` in each element of `v`.
fn numerical_gradient(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let eps = 1e-3;
    (0..v.len())
        .map(|i| {
            let mut up = v.to_vec();
            let mut down = v.to_vec();
            up[i] += eps;
            down[i] -= eps;
            (f(&up) - f(&down)) / (2.0 * eps)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-8 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let mut r = rng(18);
    let rows = 2;
    for shape in shapes() {
        shape.validate().unwrap();
        let x = uniform(&mut r, rows * shape.in_len());
        let w = uniform(&mut r, shape.weights_len());
        let b = uniform(&mut r, shape.filters);
        let dz = uniform(&mut r, rows * shape.out_len());
        let (dw, db) = conv2d_backward_params(&shape, &dz, &x, rows);
        let dx = conv2d_backward_input(&shape, &dz, &w, rows);
        let what = format!("{shape:?}");
        assert_close(
            &format!("dx {what}"),
            &dx,
            &numerical_gradient(&x, |x| loss(&shape, x, &w, &b, &dz, rows)),
        );
        assert_close(
            &format!("dw {what}"),
            &dw,
            &numerical_gradient(&w, |w| loss(&shape, &x, w, &b, &dz, rows)),
        );
        assert_close(
            &format!("db {what}"),
            &db,
            &numerical_gradient(&b, |b| loss(&shape, &x, &w, b, &dz, rows)),
        );
    }
}

#[test]
fn a_conv2d_whose_kernel_covers_the_image_is_the_dense_layer() {
    // With K = H = W, no padding, each filter sees the whole image once: the layer is a dense
    // one whose weight rows are the filters flattened, (O, C·K·K) as (O, I).
    let shape = Conv2d {
        channels: 2,
        height: 3,
        width: 3,
        filters: 4,
        kernel: 3,
        stride: 1,
        padding: 0,
    };
    let mut r = rng(7);
    let rows = 5;
    let x = uniform(&mut r, rows * shape.in_len());
    let w = uniform(&mut r, shape.weights_len());
    let b = uniform(&mut r, shape.filters);
    assert_eq!((shape.out_height(), shape.out_width()), (1, 1));
    let conv = conv2d_forward(&shape, &x, &w, &b, rows);
    let dense = linear_forward_reference(&x, &w, &b, rows, shape.in_len(), shape.filters);
    assert_close("conv vs dense", &conv, &dense);
}

#[test]
fn conv2d_in_f32_agrees_with_f64() {
    let mut r = rng(3);
    let rows = 3;
    for shape in shapes() {
        let x = uniform(&mut r, rows * shape.in_len());
        let w = uniform(&mut r, shape.weights_len());
        let b = uniform(&mut r, shape.filters);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let wide = conv2d_forward(&shape, &x, &w, &b, rows);
        let narrow = conv2d_forward(&shape, &to32(&x), &to32(&w), &to32(&b), rows);
        for (n, w) in narrow.iter().zip(&wide) {
            // Inputs rounded to f32 (2^-24 relative each) over at most 7·7·3 products.
            assert!((*n as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "{n} vs {w}");
        }
    }
}

#[test]
fn conv2d_shapes_out_of_range_are_refused_naming_the_problem() {
    let good = shapes()[0];
    for (bad, words) in [
        (
            Conv2d { kernel: 8, ..good },
            "kernel 8 is not between 1 and 7",
        ),
        (Conv2d { kernel: 0, ..good }, "kernel 0"),
        (Conv2d { stride: 3, ..good }, "stride 3 is not 1 or 2"),
        (Conv2d { padding: 3, ..good }, "padding 3 is not below"),
        (Conv2d { filters: 0, ..good }, "at least one"),
        (
            Conv2d {
                height: 1,
                padding: 0,
                ..good
            },
            "does not fit a 1×6 input",
        ),
    ] {
        let e = bad.validate().unwrap_err();
        assert!(e.contains(words), "{bad:?}: {e}");
    }
}

/// Pooling shapes that reach every case: windows tiling the image, a last row and column in
/// no window (7 × 5 with 2 × 2 windows), and overlapping windows, where one pixel may be the
/// maximum of several.
fn pool_shapes() -> [MaxPool2d; 3] {
    let pool = |channels, height, width, window, stride| MaxPool2d {
        channels,
        height,
        width,
        window,
        stride,
    };
    [
        pool(3, 6, 6, 2, 2),
        pool(2, 7, 5, 2, 2),
        pool(2, 5, 5, 3, 1),
    ]
}

#[test]
fn max_pool2d_routes_each_gradient_to_the_pixel_its_window_took() {
    let mut r = rng(11);
    let rows = 2;
    for shape in pool_shapes() {
        shape.validate().unwrap();
        let x = uniform(&mut r, rows * shape.in_len());
        let dz = uniform(&mut r, rows * shape.out_len());
        let (out, argmax) = max_pool2d_forward(&shape, &x, rows);
        let dx = max_pool2d_backward(&shape, &dz, &argmax, rows);
        let loss = |x: &[f64]| -> f64 {
            let (out, _) = max_pool2d_forward(&shape, x, rows);
            out.iter().zip(&dz).map(|(o, g)| o * g).sum()
        };
        // Distinct random values: a small step changes no window's choice.
        assert_close(&format!("{shape:?}"), &dx, &numerical_gradient(&x, loss));
        for (p, (&v, &at)) in out.iter().zip(&argmax).enumerate() {
            let image = p / shape.out_len();
            assert_eq!(v, x[image * shape.in_len() + at as usize]);
        }
    }
    // A tie goes to the first pixel in row-major order; NaN wins.
    let one = MaxPool2d {
        channels: 1,
        height: 2,
        width: 2,
        window: 2,
        stride: 2,
    };
    assert_eq!(max_pool2d_forward(&one, &[1.0, 3.0, 3.0, 2.0], 1).1, [1]);
    let (out, at) = max_pool2d_forward(&one, &[1.0, f64::NAN, 3.0, 2.0], 1);
    assert!(out[0].is_nan());
    assert_eq!(at, [1]);
    let e = MaxPool2d { height: 1, ..one }.validate().unwrap_err();
    assert!(e.contains("does not fit a 1×2 input"), "{e}");
}

#[test]
fn dropout_masks_drop_about_p_and_change_with_every_counter() {
    let n = 200_000u32;
    let p = 0.25;
    let base = DropoutMask::new(42, 3, 17, 1, p);
    let kept = |m: &DropoutMask| (0..n).map(|e| m.keeps(e)).collect::<Vec<bool>>();
    let mask = kept(&base);
    let dropped = mask.iter().filter(|k| !**k).count() as f64 / n as f64;
    assert!((dropped - p).abs() < 0.005, "dropped {dropped}");
    assert_eq!(kept(&base), mask, "a pure function of its counters");
    // Another seed, epoch, step or layer: an independent mask, which disagrees with this one
    // on a fraction 2p(1 − p) = 0.375 of elements.
    for other in [
        DropoutMask { seed: 43, ..base },
        DropoutMask {
            seed: 42 | (1 << 40),
            ..base
        },
        DropoutMask { epoch: 4, ..base },
        DropoutMask { step: 18, ..base },
        DropoutMask { layer: 2, ..base },
    ] {
        let differ = kept(&other)
            .iter()
            .zip(&mask)
            .filter(|(a, b)| a != b)
            .count() as f64;
        assert!(
            (differ / n as f64 - 0.375).abs() < 0.01,
            "{other:?}: {differ}"
        );
    }
    // p = 0 keeps everything unscaled; a kept value is scaled by 1 / (1 − p), and the gradient
    // goes through where the value did, scaled alike.
    let none = DropoutMask::new(42, 3, 17, 1, 0.0);
    assert!((0..1000).all(|e| none.keeps(e)));
    assert_eq!(none.scale_f32(), 1.0);
    let mut x: Vec<f64> = (0..1000).map(|i| i as f64 + 1.0).collect();
    let mut g = x.clone();
    dropout_forward(&base, &mut x);
    dropout_backward(&base, &mut g);
    for (e, (v, d)) in x.iter().zip(&g).enumerate() {
        let want = if base.keeps(e as u32) {
            (e as f64 + 1.0) * (1.0 / 0.75)
        } else {
            0.0
        };
        assert_eq!((*v, *d), (want, want), "element {e}");
    }
}

/// What a convolution and its activation give for a batch, by the references, and what a fast path
/// gave: its output (channels-first) or the pooling's, and the gradients.
#[derive(Debug, Clone, PartialEq)]
struct ConvResults {
    out: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
    /// Empty where the path computes no input gradient.
    dx: Vec<f64>,
}

/// The operands of one case, channels-first: input, filters, bias, and the gradient of the
/// activation's output (stored) or of the pooling's.
struct ConvCase {
    shape: Conv2d,
    activation: wgtrain::model::Activation,
    pool: Option<MaxPool2d>,
    rows: usize,
    x: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
    dout: Vec<f64>,
}

impl ConvCase {
    fn reference(&self) -> ConvResults {
        use wgtrain::cpu::ops::{activation_backward, activation_forward};
        let (shape, rows, act) = (&self.shape, self.rows, self.activation);
        let mut a = conv2d_forward(shape, &self.x, &self.w, &self.b, rows);
        activation_forward(act, &mut a);
        let (out, mut da) = match &self.pool {
            None => (a.clone(), self.dout.clone()),
            Some(pool) => {
                let (pooled, argmax) = max_pool2d_forward(pool, &a, rows);
                (pooled, max_pool2d_backward(pool, &self.dout, &argmax, rows))
            }
        };
        activation_backward(act, &a, &mut da);
        let (dw, db) = conv2d_backward_params(shape, &da, &self.x, rows);
        let dx = conv2d_backward_input(shape, &da, &self.w, rows);
        ConvResults { out, dw, db, dx }
    }

    /// The fast path: im2col (`narrow` None) or the narrow one on a kernel set, channels-last
    /// inside, on `threads` threads.
    fn fast(
        &self,
        narrow: Option<wgtrain::cpu::kernels::CpuKernels>,
        threads: usize,
    ) -> ConvResults {
        use wgtrain::cpu::channels_last::{
            filters_to_channels_first, filters_to_channels_last, to_channels_first,
            to_channels_last,
        };
        use wgtrain::cpu::conv_chunks::{ConvScratch, Epilogue, Gradient};
        use wgtrain::cpu::conv_narrow::{
            conv2d_backward_params_narrow, conv2d_forward_narrow, filters_from_taps_first,
            filters_to_taps_first,
        };
        use wgtrain::cpu::im2col::{conv2d_backward_im2col, conv2d_forward_im2col};
        let (shape, rows, act) = (&self.shape, self.rows, self.activation);
        let (input, conv_out) = (image_in(shape), image_out(shape));
        let out_image = match &self.pool {
            Some(p) => ImageShape {
                channels: p.channels,
                height: p.out_height(),
                width: p.out_width(),
            },
            None => conv_out,
        };
        let cl = |image: &ImageShape, v: &[f64]| {
            let mut out = vec![f64::NAN; v.len()];
            to_channels_last(image, v, rows, &mut out, threads);
            out
        };
        let cf = |image: &ImageShape, v: &[f64]| {
            let mut out = vec![f64::NAN; v.len()];
            to_channels_first(image, v, rows, &mut out, threads);
            out
        };
        let (x, dout) = (cl(&input, &self.x), cl(&out_image, &self.dout));
        let mut filters = vec![f64::NAN; self.w.len()];
        match narrow {
            Some(_) => filters_to_taps_first(shape, &self.w, &mut filters),
            None => filters_to_channels_last(shape, &self.w, &mut filters),
        }
        let mut scratch = ConvScratch::default();
        let mut out = vec![f64::NAN; rows * out_image.len()];
        let mut argmax = vec![0u32; out.len()];
        let epilogue = match self.pool {
            Some(shape) => Epilogue::Pool {
                shape,
                out: &mut out,
                argmax: &mut argmax,
            },
            None => Epilogue::Store { out: &mut out },
        };
        let b = &self.b;
        match narrow {
            Some(kernels) => conv2d_forward_narrow(
                kernels,
                shape,
                act,
                &x,
                (&filters, b),
                rows,
                epilogue,
                &mut scratch,
                threads,
            ),
            None => conv2d_forward_im2col(
                shape,
                act,
                &x,
                &filters,
                b,
                rows,
                epilogue,
                &mut scratch,
                threads,
            ),
        }
        let mut dz = dout.clone();
        let gradient = match self.pool {
            Some(shape) => Gradient::Pooled {
                shape,
                dpool: &dout,
                pooled: &out,
                argmax: &argmax,
            },
            None => Gradient::Stored {
                dz: &mut dz,
                a_out: &out,
            },
        };
        let (mut dw, mut db) = (vec![f64::NAN; self.w.len()], vec![f64::NAN; self.b.len()]);
        let mut dx = vec![f64::NAN; x.len()];
        let mut stored = vec![f64::NAN; dw.len()];
        let grads = (&mut dw[..], &mut db[..]);
        match narrow {
            Some(kernels) => {
                conv2d_backward_params_narrow(
                    kernels,
                    shape,
                    act,
                    gradient,
                    &x,
                    rows,
                    grads,
                    &mut scratch,
                    threads,
                );
                filters_from_taps_first(shape, &dw, &mut stored);
                dx.clear();
            }
            None => {
                conv2d_backward_im2col(
                    shape,
                    act,
                    gradient,
                    &x,
                    &filters,
                    rows,
                    grads,
                    Some(&mut dx),
                    &mut scratch,
                    threads,
                );
                filters_to_channels_first(shape, &dw, &mut stored);
                dx = cf(&input, &dx);
            }
        }
        ConvResults {
            out: cf(&out_image, &out),
            dw: stored,
            db,
            dx,
        }
    }
}

#[test]
fn conv2d_fast_paths_match_the_reference_stored_and_pooled_on_every_kernel_set() {
    use wgtrain::cpu::conv_chunks::IMAGES_PER_PART;
    use wgtrain::cpu::conv_narrow;
    use wgtrain::cpu::im2col::images_per_chunk;
    use wgtrain::cpu::kernels::CpuKernels;
    use wgtrain::model::Activation::{Relu, Tanh};
    let mut r = rng(5);
    let mut shapes = shapes();
    // configs/cnn.toml's two convolutions: the first narrow, the second an image to a chunk.
    let conv = |channels, side, filters| Conv2d {
        channels,
        height: side,
        width: side,
        filters,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    shapes.extend([conv(1, 28, 32), conv(32, 14, 64)]);
    let mut narrow_cases = 0;
    for (case, shape) in shapes.into_iter().enumerate() {
        // One thread, or the parts split across threads: the same results. A batch of more
        // than a part, with a last chunk and a last part shorter than the others.
        let threads = 1 + case % 3;
        let rows = IMAGES_PER_PART + images_per_chunk(&shape) + 1;
        let pooling = |window| MaxPool2d {
            channels: shape.filters,
            height: shape.out_height(),
            width: shape.out_width(),
            window,
            stride: 2,
        };
        // Stored; pooled by 2×2 windows; pooled by overlapping 3×3 ones, through tanh (whose
        // derivative, unlike ReLU's, is not 0 or 1).
        let kinds = [
            (None, Relu),
            (Some(pooling(2)), Relu),
            (Some(pooling(3)), Tanh),
        ];
        let kinds = kinds
            .into_iter()
            .filter(|(p, _)| p.is_none_or(|p| p.validate().is_ok()));
        for (pool, activation) in kinds {
            let out_len = pool.map_or(shape.out_len(), |p| p.out_len());
            let case = ConvCase {
                shape,
                activation,
                pool,
                rows,
                x: uniform(&mut r, rows * shape.in_len()),
                w: uniform(&mut r, shape.weights_len()),
                b: uniform(&mut r, shape.filters),
                dout: uniform(&mut r, rows * out_len),
            };
            let what = format!(
                "{shape:?}, {activation:?}, pooled by {pool:?}, {rows} images on {threads} thread(s)"
            );
            let want = case.reference();
            let fast = case.fast(None, threads);
            let other = if threads == 1 { 3 } else { 1 };
            let on_other = case.fast(None, other);
            assert_eq!(fast, on_other, "{what}: the same bits on {other} thread(s)");
            assert_close(&format!("im2col out {what}"), &fast.out, &want.out);
            assert_close(&format!("im2col dw {what}"), &fast.dw, &want.dw);
            assert_close(&format!("im2col db {what}"), &fast.db, &want.db);
            assert_close(&format!("im2col dx {what}"), &fast.dx, &want.dx);
            if !conv_narrow::suits(&shape) {
                continue;
            }
            narrow_cases += 1;
            let sets = CpuKernels::runnable();
            let on_sets: Vec<ConvResults> =
                sets.iter().map(|&k| case.fast(Some(k), threads)).collect();
            for (kernels, got) in sets.iter().zip(&on_sets) {
                let what = format!("narrow on {kernels:?}: {what}");
                assert_close(&format!("out {what}"), &got.out, &want.out);
                assert_close(&format!("dw {what}"), &got.dw, &want.dw);
                assert_close(&format!("db {what}"), &got.db, &want.db);
                assert_eq!(
                    got, &on_sets[0],
                    "{what}: every kernel set gives the same bits"
                );
            }
        }
    }
    assert!(
        narrow_cases >= 4,
        "the narrow path was tried on {narrow_cases} cases"
    );
}

fn image_in(shape: &Conv2d) -> ImageShape {
    ImageShape {
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
    }
}

fn image_out(shape: &Conv2d) -> ImageShape {
    ImageShape {
        channels: shape.filters,
        height: shape.out_height(),
        width: shape.out_width(),
    }
}

#[test]
fn max_pool2d_channels_last_takes_the_references_pixels_bit_for_bit() {
    use wgtrain::cpu::channels_last::{self as cl, to_channels_first, to_channels_last};
    let mut r = rng(13);
    let rows = 3;
    for shape in pool_shapes() {
        let input = ImageShape {
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
        };
        let output = ImageShape {
            height: shape.out_height(),
            width: shape.out_width(),
            ..input
        };
        // Four levels, so windows tie, and a NaN here and there.
        let mut x: Vec<f32> = uniform(&mut r, rows * shape.in_len())
            .iter()
            .map(|v| (v * 2.0).round() as f32)
            .collect();
        for v in x.iter_mut().step_by(17) {
            *v = f32::NAN;
        }
        let dz: Vec<f32> = uniform(&mut r, rows * shape.out_len())
            .iter()
            .map(|&v| v as f32)
            .collect();
        let (want, want_at) = max_pool2d_forward(&shape, &x, rows);
        let want_dx = max_pool2d_backward(&shape, &dz, &want_at, rows);

        let mut x_cl = vec![f32::NAN; x.len()];
        to_channels_last(&input, &x, rows, &mut x_cl, 1);
        let (mut out_cl, mut at) = (vec![0.0f32; want.len()], vec![0u32; want.len()]);
        cl::max_pool2d_forward(&shape, &x_cl, rows, &mut out_cl, &mut at);
        let mut out = vec![0.0f32; want.len()];
        to_channels_first(&output, &out_cl, rows, &mut out, 1);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&want), "{shape:?}");
        // The reference's argmax is an index into the channels-first image, c·H·W + pixel.
        let plane = shape.out_height() * shape.out_width();
        for (o, &pixel) in at.iter().enumerate() {
            let (image, within) = (o / shape.out_len(), o % shape.out_len());
            let (p, c) = (within / shape.channels, within % shape.channels);
            let reference = want_at[image * shape.out_len() + c * plane + p];
            assert_eq!(
                reference as usize,
                c * shape.height * shape.width + pixel as usize
            );
        }

        let mut dz_cl = vec![0.0f32; dz.len()];
        to_channels_last(&output, &dz, rows, &mut dz_cl, 1);
        let mut dx_cl = vec![f32::NAN; x.len()];
        cl::max_pool2d_backward(&shape, &dz_cl, &at, rows, &mut dx_cl);
        let mut dx = vec![0.0f32; x.len()];
        to_channels_first(&input, &dx_cl, rows, &mut dx, 1);
        assert_eq!(bits(&dx), bits(&want_dx), "{shape:?}");
    }
}

#[test]
fn dropout_on_channels_last_images_draws_the_channels_first_mask() {
    use wgtrain::cpu::channels_last::{self as cl, to_channels_first, to_channels_last};
    let shape = ImageShape {
        channels: 5,
        height: 3,
        width: 4,
    };
    let rows = 4;
    let x: Vec<f32> = (0..rows * shape.len()).map(|v| v as f32 + 1.0).collect();
    let mask = DropoutMask::new(9, 2, 3, 1, 0.5);
    let mut want = x.clone();
    dropout_forward(&mask, &mut want);
    let mut x_cl = vec![0.0f32; x.len()];
    to_channels_last(&shape, &x, rows, &mut x_cl, 1);
    // Masked in two parts of whole images, as two threads would.
    let (first, second) = x_cl.split_at_mut(shape.len());
    cl::dropout_forward(&mask, first, 0, &shape);
    cl::dropout_forward(&mask, second, 1, &shape);
    let mut got = vec![0.0f32; x.len()];
    to_channels_first(&shape, &x_cl, rows, &mut got, 1);
    assert_eq!(got, want);
    assert!(got.contains(&0.0) && got.iter().any(|&v| v != 0.0));
}
