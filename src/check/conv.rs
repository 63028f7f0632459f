//! conv.wgsl's and pool.wgsl's entry points against their CPU twins (`cpu::conv`): the
//! convolutions in f64 with a dot-product bound, the pooling in f32 bit for bit.

use super::rig::*;

/// Convolutions every conv2d kernel is checked at, (C, H, W, O, K, stride, padding): padding,
/// stride 2, kernels 1, 3, 5 and 7, pixels no window reaches, one channel and several, and the
/// first layer of a Fashion-MNIST CNN.
const CONV_SHAPES: [[usize; 7]; 6] = [
    [2, 5, 6, 3, 3, 1, 1],
    [1, 7, 7, 2, 3, 2, 0],
    [3, 6, 5, 2, 5, 2, 2],
    [2, 4, 4, 3, 1, 1, 0],
    [1, 8, 9, 2, 7, 1, 3],
    [1, 28, 28, 8, 3, 1, 1],
];

/// One conv.wgsl entry point against its CPU twin (`cpu::conv`, f64), on [`CONV_SHAPES`] with
/// three images each: the dot-product bound over the terms each output sums, from the twin run
/// on the operands' magnitudes.
pub(super) async fn check_conv2d(rig: &Rig<'_>, entry: Kernel) -> Result<CheckRow, GpuError> {
    use crate::cpu::conv::{conv2d_backward_input, conv2d_backward_params, conv2d_forward};
    use crate::model::Conv2d;
    let rows = 3;
    let mut worst = Worst::default();
    for (case, &[channels, height, width, filters, kernel, stride, padding]) in
        CONV_SHAPES.iter().enumerate()
    {
        let shape = Conv2d {
            channels,
            height,
            width,
            filters,
            kernel,
            stride,
            padding,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let x = uniform_f32(&mut rng, rows * shape.in_len(), 1.0);
        let w = uniform_f32(&mut rng, shape.weights_len(), 1.0);
        let b = uniform_f32(&mut rng, filters, 1.0);
        let dz = uniform_f32(&mut rng, rows * shape.out_len(), 1.0);
        let plane = shape.out_height() * shape.out_width();
        // (want, the same on magnitudes, terms per output)
        let (want, bound, terms) = match entry {
            Kernel::Conv2dForward => (
                conv2d_forward(&shape, &f64s(&x), &f64s(&w), &f64s(&b), rows),
                conv2d_forward(&shape, &abs64(&x), &abs64(&w), &abs64(&b), rows),
                channels * kernel * kernel + 1,
            ),
            Kernel::Conv2dBackwardInput => (
                conv2d_backward_input(&shape, &f64s(&dz), &f64s(&w), rows),
                conv2d_backward_input(&shape, &abs64(&dz), &abs64(&w), rows),
                filters * kernel * kernel,
            ),
            _ => {
                let (dw, db) = conv2d_backward_params(&shape, &f64s(&dz), &f64s(&x), rows);
                let (aw, ab) = conv2d_backward_params(&shape, &abs64(&dz), &abs64(&x), rows);
                ([dw, db].concat(), [aw, ab].concat(), rows * plane)
            }
        };
        // A NaN slot first (a kernel ignoring an offset fails), the inputs, then the output
        // (poisoned, the sentinel after it) where the entry point writes.
        let mut work = Work::default();
        work.input(&[f32::NAN]);
        let mut offsets = [0u32; 4]; // x, w, b, z
        let out_at = match entry {
            Kernel::Conv2dForward => {
                offsets[0] = work.input(&x) as u32;
                offsets[1] = work.input(&w) as u32;
                offsets[2] = work.input(&b) as u32;
                offsets[3] = work.output(want.len()) as u32;
                offsets[3]
            }
            Kernel::Conv2dBackwardInput => {
                offsets[1] = work.input(&w) as u32;
                offsets[3] = work.input(&dz) as u32;
                offsets[0] = work.output(want.len()) as u32;
                offsets[0]
            }
            _ => {
                offsets[0] = work.input(&x) as u32;
                offsets[3] = work.input(&dz) as u32;
                offsets[1] = work.output(want.len()) as u32;
                offsets[2] = offsets[1] + shape.weights_len() as u32;
                offsets[1]
            }
        } as usize;
        let buffer = work.buffer(rig)?;
        let params = Conv2dParams::new(&shape, rows as u32, offsets);
        let p = uniform_init(rig.ctx, "conv2d", bytemuck::bytes_of(&params))?;
        let group = bind(rig.ctx, &rig.kernels.work_layout, "conv2d", &[&buffer, &p]);
        let got = rig
            .run(StepUniform::default(), &buffer, |k, pass, s| {
                k.encode_conv_family(pass, entry, &group, s, want.len() as u32)
            })
            .await?[out_at..]
            .to_vec();
        let name = format!(
            "{rows}×{channels}×{height}×{width} → {filters}, {kernel}×{kernel} / {stride}, pad {padding}"
        );
        worst.compare(&name, &got[..want.len()], &want, |i, _| {
            dot_tolerance(terms, bound[i])
        });
        worst.untouched(&name, &got[want.len()..]);
    }
    Ok(worst.row(entry.name()))
}

/// One pool.wgsl entry point against its CPU twin in f32 (`cpu::conv`): the same comparisons
/// and sums in the same order, so the same bits. Distinct random inputs (no NaN: WGSL may fold
/// NaN comparisons), non-overlapping and overlapping windows, edges no window reaches.
pub(super) async fn check_max_pool2d(rig: &Rig<'_>, entry: Kernel) -> Result<CheckRow, GpuError> {
    use crate::cpu::conv::{max_pool2d_backward, max_pool2d_forward};
    use crate::model::MaxPool2d;
    let rows = 3;
    let mut worst = Worst::default();
    for (case, &[channels, height, width, window, stride]) in [
        [3, 6, 6, 2, 2],
        [2, 7, 5, 2, 2],
        [1, 5, 5, 3, 1],
        [8, 28, 28, 2, 2],
    ]
    .iter()
    .enumerate()
    {
        let shape = MaxPool2d {
            channels,
            height,
            width,
            window,
            stride,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let x = uniform_f32(&mut rng, rows * shape.in_len(), 1.0);
        let dz = uniform_f32(&mut rng, rows * shape.out_len(), 1.0);
        let (z, argmax) = max_pool2d_forward(&shape, &x, rows);
        let arg_f32: Vec<f32> = argmax.iter().map(|&a| a as f32).collect();
        let mut work = Work::default();
        work.input(&[f32::NAN]);
        let (want, offsets, out_at) = if entry == Kernel::MaxPool2dForward {
            let x_off = work.input(&x) as u32;
            let z_off = work.output(2 * z.len()) as u32;
            let want = [f64s(&z), f64s(&arg_f32)].concat();
            (want, [x_off, z_off, z_off + z.len() as u32], z_off)
        } else {
            let z_off = work.input(&dz) as u32;
            let arg_off = work.input(&arg_f32) as u32;
            let dx = max_pool2d_backward(&shape, &dz, &argmax, rows);
            let x_off = work.output(dx.len()) as u32;
            (f64s(&dx), [x_off, z_off, arg_off], x_off)
        };
        let buffer = work.buffer(rig)?;
        let params = Pool2dParams::new(&shape, rows as u32, offsets);
        let p = uniform_init(rig.ctx, "max_pool2d", bytemuck::bytes_of(&params))?;
        let group = bind(
            rig.ctx,
            &rig.kernels.work_layout,
            "max_pool2d",
            &[&buffer, &p],
        );
        let invocations = if entry == Kernel::MaxPool2dForward {
            rows * shape.out_len()
        } else {
            rows * shape.in_len()
        };
        let got = rig
            .run(StepUniform::default(), &buffer, |k, pass, s| {
                k.encode_conv_family(pass, entry, &group, s, invocations as u32)
            })
            .await?[out_at as usize..]
            .to_vec();
        let name = format!("{rows}×{channels}×{height}×{width}, {window}×{window} / {stride}");
        worst.compare(&name, &got[..want.len()], &want, |_, _| f64::MIN_POSITIVE);
        worst.untouched(&name, &got[want.len()..]);
    }
    Ok(worst.row(entry.name()))
}
