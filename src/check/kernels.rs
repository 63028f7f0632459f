//! Each GPU kernel against its CPU twin of the same name (`cpu::ops::<kernel>`, f64) on
//! seeded inputs of awkward sizes. The tolerances come from the same twins run on the
//! operands' magnitudes, which give each output's Σ|aᵢbᵢ| (the dot-product bound's measure).

use super::*;
use crate::cpu::ops::MatmulMode::{Forward, InputGrad, WeightGrad};

pub(super) async fn check_gather_batch(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, &features) in SIZES.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let count = 37;
        let mut pixels: Vec<u8> = (0..count * features).map(|_| rng.random::<u8>()).collect();
        pixels[..features].fill(9); // a constant image: z-scores to zeros, never NaN
        let rows = SIZES[case % SIZES.len()].min(count);
        let indices: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..count as u32))
            .collect();
        let want: Vec<f64> = ops::gather_batch(&pixels, features, &indices)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let stats: Vec<f32> = pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (m, s) = crate::data::prep::image_stats(img);
                [m as f32, s as f32]
            })
            .collect();
        let mut padded = pixels.clone();
        padded.resize(pixels.len().next_multiple_of(4), 0);
        let pix = storage_init(rig.ctx, "pixels", &padded)?;
        let stats = rig.f32s("image_stats", &stats)?;
        let idx = storage_init(rig.ctx, "indices", bytemuck::cast_slice(&indices))?;
        // x one slot into the workspace, so that a kernel ignoring x_off fails.
        let mut work = Work::default();
        let x_off = work.input(&[f32::NAN]) + 1;
        work.output(rows * features);
        let x = work.buffer(rig)?;
        let p = uniform_init(
            rig.ctx,
            "gather",
            bytemuck::bytes_of(&GatherParams {
                features: features as u32,
                index_ms: 0,
                work_ms: 0,
                x_off: x_off as u32,
            }),
        )?;
        let group = bind(
            rig.ctx,
            &rig.kernels.gather_layout,
            "gather",
            &[&pix, &stats, &idx, &x, &p],
        );
        let step = StepUniform {
            rows: rows as u32,
            ..Default::default()
        };
        let got = rig
            .run(step, &x, |k, pass, s| {
                k.encode_gather_batch(pass, &group, s, rows as u32, features as u32)
            })
            .await?[x_off..]
            .to_vec();
        let name = format!("{rows}×{features}");
        // f32 (p − mean)·inv_std against the f64 z-score rounded once: a few ulp of |z| ≤ ~30.
        worst.compare(&name, &got[..rows * features], &want, |_, w| {
            1e-6 + 4.0 * f32::EPSILON as f64 * w.abs()
        });
        worst.untouched(&name, &got[rows * features..]);
    }
    Ok(worst.row("gather_batch"))
}

/// dropout.wgsl against `dropout::dropout_forward` in f32: the same mask and the same f32
/// product, so the same bits (the tolerance is the smallest positive f64: any difference
/// fails). Seeds with both halves set, several probabilities, each size of [`SIZES`].
pub(super) async fn check_dropout_forward(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, &len) in SIZES.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        for p in [0.0, 0.25, 0.5, 0.9] {
            let mask = crate::model::dropout::DropoutMask::new(
                rng.random::<u64>() | (1 << 63),
                rng.random_range(1..100),
                rng.random_range(0..1000),
                rng.random_range(0..8),
                p,
            );
            let x = uniform_f32(&mut rng, len, 3.0);
            let mut want32 = x.clone();
            crate::cpu::dropout::dropout_forward(&mask, &mut want32);
            // x one slot into the workspace (a kernel ignoring x_off fails), the sentinel after.
            let mut work = Work::default();
            let x_off = work.input(&[f32::NAN]) + 1;
            work.input(&x);
            work.input(&[f32::NAN; SENTINEL]);
            let buffer = work.buffer(rig)?;
            let params = DropoutParams::new(&mask, len as u32, 0, x_off as u32);
            let p_buf = uniform_init(rig.ctx, "dropout", bytemuck::bytes_of(&params))?;
            let group = bind(
                rig.ctx,
                &rig.kernels.work_layout,
                "dropout",
                &[&buffer, &p_buf],
            );
            let got = rig
                .run(StepUniform::default(), &buffer, |k, pass, s| {
                    k.encode_dropout_forward(pass, &group, s, len as u32)
                })
                .await?[x_off..]
                .to_vec();
            let name = format!("{len} elements, p = {p}");
            worst.compare(&name, &got[..len], &f64s(&want32), |_, _| f64::MIN_POSITIVE);
            worst.untouched(&name, &got[len..]);
        }
    }
    Ok(worst.row("dropout_forward"))
}

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
pub(super) async fn check_conv2d(rig: &Rig<'_>, entry: ConvEntry) -> Result<CheckRow, GpuError> {
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
            ConvEntry::Conv2dForward => (
                conv2d_forward(&shape, &f64s(&x), &f64s(&w), &f64s(&b), rows),
                conv2d_forward(&shape, &abs64(&x), &abs64(&w), &abs64(&b), rows),
                channels * kernel * kernel + 1,
            ),
            ConvEntry::Conv2dBackwardInput => (
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
            ConvEntry::Conv2dForward => {
                offsets[0] = work.input(&x) as u32;
                offsets[1] = work.input(&w) as u32;
                offsets[2] = work.input(&b) as u32;
                offsets[3] = work.output(want.len()) as u32;
                offsets[3]
            }
            ConvEntry::Conv2dBackwardInput => {
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
pub(super) async fn check_max_pool2d(
    rig: &Rig<'_>,
    entry: ConvEntry,
) -> Result<CheckRow, GpuError> {
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
        let (want, offsets, out_at) = if entry == ConvEntry::MaxPool2dForward {
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
        let invocations = if entry == ConvEntry::MaxPool2dForward {
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

/// Runs one matmul configuration and returns its output and the sentinel tail after it. A,
/// B and aux are laid out in one workspace after the output; `params`' offsets are relative
/// to their own operand (the bias to B's, or with a bias column to C's).
#[allow(clippy::too_many_arguments)]
async fn run_matmul(
    rig: &Rig<'_>,
    a: &[f32],
    b: &[f32],
    aux: &[f32],
    params: MatmulParams,
    activation: Activation,
    rows: u32,
    out_len: usize,
) -> Result<Vec<f32>, GpuError> {
    // One element in front, so that no operand starts at 0 and an ignored offset shows.
    let mut work = Work::default();
    work.input(&[f32::NAN]);
    let c_at = work.output(out_len) as u32;
    let (a_at, b_at, aux_at) = (work.input(a), work.input(b), work.input(aux));
    let (b_at, aux_at) = (b_at as u32, aux_at as u32);
    let params = MatmulParams {
        a_off: params.a_off + a_at as u32,
        b_off: params.b_off + b_at,
        c_off: params.c_off + c_at,
        aux_off: params.aux_off + aux_at,
        bias_off: params.bias_off + if params.bias_column == 1 { c_at } else { b_at },
        ..params
    };
    let work = work.buffer(rig)?;
    let p = uniform_init(rig.ctx, "matmul", bytemuck::bytes_of(&params))?;
    let models = rig.hidden_activation(activation)?;
    let layout = &rig.kernels.matmul_layout;
    let group = matmul_bind_group(
        rig.ctx,
        layout,
        "matmul",
        &MATMUL_BINDINGS,
        [&work, &models, &p],
        &[],
    );
    let m = if params.rows_dim == 1 { rows } else { params.m };
    let got = rig
        .run(
            StepUniform {
                rows,
                ..Default::default()
            },
            &work,
            |k, pass, s| k.encode_matmul(pass, &group, s, m, params.n + params.bias_column),
        )
        .await?;
    Ok(got[c_at as usize..][..out_len + SENTINEL].to_vec())
}

/// A layer of `fan_in` → `fan_out` whose weights sit at `w_off` of the parameter buffer and
/// its bias right after them, as the flat parameter vector lays a layer out.
fn layer_at(fan_in: usize, fan_out: usize, w_off: usize) -> LayerView {
    LayerView {
        fan_in,
        fan_out,
        weight: w_off,
        bias: w_off + fan_out * fan_in,
    }
}

/// The activation's derivative in f64, written through its output `y` as the kernels take it.
fn slope_at_output(y: f64, act: Activation) -> f64 {
    match act {
        Activation::None => 1.0,
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Relu => f64::from(u8::from(y > 0.0)),
    }
}

pub(super) async fn check_matmul(rig: &Rig<'_>) -> Result<Vec<CheckRow>, GpuError> {
    let (mut fwd, mut wgrad, mut igrad) = (Worst::default(), Worst::default(), Worst::default());
    let shapes: Vec<(usize, usize, usize)> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            (
                r,
                SIZES[(i + 2) % SIZES.len()],
                SIZES[(i + 4) % SIZES.len()],
            )
        })
        .chain([(128, 784, 128), (128, 128, 10)])
        .collect();
    for (case, &(rows, fan_in, fan_out)) in shapes.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + case as u64);
        let act = ACTIVATIONS[case % 4];
        let x = uniform_f32(&mut rng, rows * fan_in, 1.0);
        // Weights placed at an offset inside a larger buffer, as in the flat parameter vector.
        let w_off = 5;
        let mut wbuf = uniform_f32(&mut rng, w_off + fan_out * fan_in + fan_out, 1.0);
        let b_off = w_off + fan_out * fan_in;
        // Large pre-activations too: tanh and sigmoid must stay finite.
        wbuf[b_off] = 40.0;
        let w = &wbuf[w_off..b_off];
        let name = format!("{rows}×{fan_in}→{fan_out} {}", act.name());
        // forward: act(x·wᵀ + b)
        let params = MatmulParams::forward(&layer_at(fan_in, fan_out, w_off), true);
        let got = run_matmul(
            rig,
            &x,
            &wbuf,
            &[0.0],
            params,
            act,
            rows as u32,
            rows * fan_out,
        )
        .await?;
        let (x64, w64, bias) = (f64s(&x), f64s(w), f64s(&wbuf[b_off..b_off + fan_out]));
        let want = ops::matmul(Forward(act), &x64, &w64, &bias, rows, fan_in, fan_out);
        let zeros = vec![0.0; fan_out];
        let abs = ops::matmul(
            Forward(Activation::None),
            &abs64(&x),
            &abs64(w),
            &zeros,
            rows,
            fan_in,
            fan_out,
        );
        // Activations have slope ≤ 1; their own rounding adds a few ulp.
        let tol: Vec<f64> = abs
            .iter()
            .map(|&a| dot_tolerance(fan_in, a) + 1e-6)
            .collect();
        fwd.compare(&name, &got[..rows * fan_out], &want, |i, _| tol[i]);
        fwd.untouched(&name, &got[rows * fan_out..]);

        // weight gradient: dw (O, I) = dzᵀ·a, summed over rows, and the bias gradient
        // db (O) = Σ_r dz as the extra column, written after the weights as in the parameters.
        let dz = uniform_f32(&mut rng, rows * fan_out, 1.0);
        let params = MatmulParams::weight_grad(&layer_at(fan_in, fan_out, 0));
        let got = run_matmul(
            rig,
            &dz,
            &x,
            &[0.0],
            params,
            Activation::None,
            rows as u32,
            fan_out * fan_in + fan_out,
        )
        .await?;
        let out_len = fan_out * fan_in + fan_out;
        let dz64 = f64s(&dz);
        let want = ops::matmul(WeightGrad, &dz64, &x64, &[], rows, fan_in, fan_out);
        let abs = ops::matmul(
            WeightGrad,
            &abs64(&dz),
            &abs64(&x),
            &[],
            rows,
            fan_in,
            fan_out,
        );
        let tol: Vec<f64> = abs.iter().map(|&a| dot_tolerance(rows, a)).collect();
        wgrad.compare(&name, &got[..out_len], &want, |i, _| tol[i]);
        wgrad.untouched(&name, &got[out_len..]);

        // input gradient: (dz·w) ⊙ slope(aux)
        let aux: Vec<f32> = uniform_f32(&mut rng, rows * fan_in, 3.0)
            .into_iter()
            .map(|v| act_ref(v as f64, act) as f32)
            .collect();
        let params = MatmulParams::input_grad(&layer_at(fan_in, fan_out, w_off));
        let got = run_matmul(
            rig,
            &dz,
            &wbuf,
            &aux,
            params,
            act,
            rows as u32,
            rows * fan_in,
        )
        .await?;
        let want = ops::matmul(
            InputGrad(act),
            &dz64,
            &w64,
            &f64s(&aux),
            rows,
            fan_in,
            fan_out,
        );
        // The product before the slope, and its bound.
        let plain = ops::matmul(
            InputGrad(Activation::None),
            &dz64,
            &w64,
            &[],
            rows,
            fan_in,
            fan_out,
        );
        let abs = ops::matmul(
            InputGrad(Activation::None),
            &abs64(&dz),
            &abs64(w),
            &[],
            rows,
            fan_in,
            fan_out,
        );
        let tol: Vec<f64> = abs
            .iter()
            .zip(&plain)
            .map(|(&a, &s)| dot_tolerance(fan_out, a) + 2.0 * f32::EPSILON as f64 * s.abs())
            .collect();
        igrad.compare(&name, &got[..rows * fan_in], &want, |i, _| tol[i]);
        igrad.untouched(&name, &got[rows * fan_in..]);
    }
    Ok(vec![
        fwd.row("matmul forward (+bias, activation)"),
        wgrad.row("matmul weight + bias gradient"),
        igrad.row("matmul input gradient (× slope)"),
    ])
}

pub(super) async fn check_softmax_xent(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, &rows) in SIZES.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(200 + case as u64);
        let classes = [10, 2, 3, 7, 33, 10][case];
        let mut logits = uniform_f32(&mut rng, rows * classes, 4.0);
        logits[0] = 80.0; // overflow guard: exp is taken of z − max only
        let labels: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let indices: Vec<u32> = (0..rows as u32).rev().collect();
        let scale = 1.0 / rows as f32;
        let capacity = rows;
        let mut work = Work::default();
        let logits_off = work.input(&[f32::NAN]) + 1;
        work.input(&logits);
        let dz_off = work.output(rows * classes);
        let row_loss_off = work.input(&vec![f32::NAN; 2 * capacity]);
        let work = work.buffer(rig)?;
        let lab = storage_init(rig.ctx, "labels", bytemuck::cast_slice(&labels))?;
        let idx = storage_init(rig.ctx, "indices", bytemuck::cast_slice(&indices))?;
        let stats = rig.poisoned("stats", 2)?;
        let p = uniform_init(
            rig.ctx,
            "xent",
            bytemuck::bytes_of(&XentParams {
                classes: classes as u32,
                capacity: capacity as u32,
                index_ms: 0,
                slots: 1,
                work_ms: 0,
                logits_off: logits_off as u32,
                dz_off: dz_off as u32,
                row_loss_off: row_loss_off as u32,
            }),
        )?;
        let group = bind(
            rig.ctx,
            &rig.kernels.xent_layout,
            "xent",
            &[&work, &lab, &idx, &stats, &p],
        );
        let step = StepUniform {
            rows: rows as u32,
            scale,
            ..Default::default()
        };
        let got_dz = rig
            .run(step, &work, |k, pass, s| {
                k.encode_softmax_xent(pass, &group, s, rows as u32);
                k.encode_batch_stats(pass, &group, s);
            })
            .await?[dz_off..][..rows * classes + SENTINEL]
            .to_vec();
        let got_stats = rig.run(step, &stats, |_, _, _| {}).await?;
        // Reference in f64 on the rows in index order.
        let row_labels: Vec<u8> = indices.iter().map(|&i| labels[i as usize] as u8).collect();
        let logits64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let mut want_dz = vec![0.0; rows * classes];
        let (loss, correct) = ops::softmax_xent(
            &logits64,
            &row_labels,
            classes,
            scale as f64,
            Some(&mut want_dz),
        );
        let name = format!("{rows}×{classes}");
        worst.compare(&name, &got_dz[..rows * classes], &want_dz, |_, _| 1e-6);
        worst.untouched(&name, &got_dz[rows * classes..]);
        worst.compare(
            &format!("{name} loss sum"),
            &got_stats[..1],
            &[loss],
            |_, w| 1e-5 * w.abs().max(1.0),
        );
        worst.compare(
            &format!("{name} correct"),
            &got_stats[1..2],
            &[correct as f64],
            |_, _| 0.5,
        );
        worst.untouched(&name, &got_stats[2..]);
    }
    Ok(worst.row("softmax_xent + batch_stats"))
}

/// matmul_update: the weight and bias gradients of two layers (each from its own dz and
/// input a of `rows` rows) applied by the optimiser in one dispatch, to parameters inside a
/// larger flat vector, against `ops::matmul_update` in f64. The tolerance
/// carries the gradient's own bound through the optimiser (the update evaluated at g ± that
/// bound), plus the update's roundings.
pub(super) async fn check_matmul_update(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, (optimizer, gamma, l1, l2)) in [
        (Optimizer::Sgd, 0.0, 0.0, 0.0),
        (Optimizer::Sgd, 0.9, 0.0, 0.0),
        (Optimizer::Sgd, 0.9, 1e-2, 1e-3),
        (Optimizer::Adam, 0.0, 1e-3, 1e-2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = ChaCha8Rng::seed_from_u64(400 + case as u64);
        // 300 rows: the batch sums take the rows 256 at a time, so the last case takes two
        // passes, the second short.
        let (rows, fan_in, fan_out) = [(1, 33, 7), (13, 7, 3), (40, 70, 17), (300, 20, 10)][case];
        // Layers 1 and 2 of the network in one dispatch, their tiles one after the other;
        // layer 0 is not in it, and its parameters must stay as they were.
        let widths = [1, 5, fan_in, fan_out];
        let layers = layer_views(&widths);
        let updated = [layers[1], layers[2]];
        let count = layers[2].end();
        let mut hyper: Hyper = TrainConfig::default().hyper();
        (
            hyper.optimizer,
            hyper.momentum_gamma,
            hyper.l1,
            hyper.l2,
            hyper.learning_rate,
        ) = (optimizer, gamma, l1, l2, 0.05);
        // Per updated layer: dz (rows, fan_out) and its input a (rows, fan_in).
        let operands: Vec<(Vec<f32>, Vec<f32>)> = updated
            .iter()
            .map(|v| {
                let dz = uniform_f32(&mut rng, rows * v.fan_out, 0.1);
                (dz, uniform_f32(&mut rng, rows * v.fan_in, 1.0))
            })
            .collect();
        let mut p0 = uniform_f32(&mut rng, count, 1.0);
        p0[layers[2].weight] = 0.0; // sign(0) = 0 on both paths
        let f0 = uniform_f32(&mut rng, count, 0.1);
        let s0: Vec<f32> = uniform_f32(&mut rng, count, 0.1)
            .into_iter()
            .map(f32::abs)
            .collect();
        // The optimiser state the kernel finds: after two steps.
        let state = || {
            let mut state = ops::OptimizerState::<f64>::new(count);
            state.first = f64s(&f0);
            state.second = f64s(&s0);
            state.step = 2;
            state
        };
        // The twin's update and the gradient it applied (zero outside these layers); then the
        // gradient's bound, and the update at g ± that bound.
        let operands64: Vec<(Vec<f64>, Vec<f64>)> =
            operands.iter().map(|(dz, a)| (f64s(dz), f64s(a))).collect();
        let with_layers: Vec<(LayerView, &[f64], &[f64])> = updated
            .iter()
            .zip(&operands64)
            .map(|(v, (dz, a))| (*v, dz.as_slice(), a.as_slice()))
            .collect();
        let mut want = f64s(&p0);
        let grad = ops::matmul_update(&mut want, &with_layers, rows, &mut state(), &hyper);
        let mut bound = vec![0.0f64; count];
        for (v, (dz, a)) in updated.iter().zip(&operands) {
            let abs = ops::matmul(
                WeightGrad,
                &abs64(dz),
                &abs64(a),
                &[],
                rows,
                v.fan_in,
                v.fan_out,
            );
            for (b, a) in bound[v.weight..v.end()].iter_mut().zip(abs) {
                *b = dot_tolerance(rows, a);
            }
        }
        let apply = |g: &[f64]| {
            let mut w = f64s(&p0);
            ops::update(&mut w, g, &mut state(), &layers, &hyper);
            w
        };
        let shifted = |sign: f64| {
            let g: Vec<f64> = grad.iter().zip(&bound).map(|(g, b)| g + sign * b).collect();
            apply(&g)
        };
        let (hi, lo) = (shifted(1.0), shifted(-1.0));
        // The update also folds the step's per-row losses and correct flags into its stats slot.
        let capacity = 320;
        let row_loss: Vec<f32> = (0..2 * capacity)
            .map(|r| {
                if r < capacity {
                    0.25 * r as f32
                } else {
                    (r % 2) as f32
                }
            })
            .collect();
        let (loss, correct) = ops::batch_stats(
            &f64s(&row_loss[..rows]),
            &f64s(&row_loss[capacity..capacity + rows]),
        );
        // The parameters open the workspace (a parameter's index there is its index in the
        // flat vector, and in first and second), the sentinel after them.
        let mut work = Work::default();
        work.input(&p0);
        work.input(&[f32::NAN; SENTINEL]);
        let row_loss_off = work.input(&row_loss) as u32;
        let params: Vec<MatmulParams> = updated
            .iter()
            .zip(&operands)
            .enumerate()
            .map(|(j, (v, (dz, a)))| MatmulParams {
                a_off: work.input(dz) as u32,
                b_off: work.input(a) as u32,
                param_ms: count as u32,
                capacity: capacity as u32,
                row_loss_off,
                slots: 2,
                // The output layer's sums the batch's losses.
                sum_stats: u32::from(j + 1 == updated.len()),
                ..MatmulParams::weight_grad(v)
            })
            .collect();
        let tables = update_tables(&params);
        let [table] = &tables[..] else {
            unreachable!("two layers fit one table")
        };
        let work = work.buffer(rig)?;
        let (fb, sb) = (rig.f32s("first", &f0)?, rig.f32s("second", &s0)?);
        let model = ModelHyper::new(&hyper, Activation::None);
        let models = storage_init(rig.ctx, "model_hyper", bytemuck::bytes_of(&model))?;
        let stats = rig.poisoned("stats", 4)?;
        let p = uniform_init(
            rig.ctx,
            "matmul_update",
            bytemuck::cast_slice(&table.layers),
        )?;
        let group = matmul_bind_group(
            rig.ctx,
            &rig.kernels.matmul_update_layout,
            "matmul_update",
            &MATMUL_UPDATE_BINDINGS,
            [&work, &models, &p],
            &[&fb, &sb, &stats],
        );
        // The reference took its third step (state.step was 2).
        let (c1, c2) = ops::adam_corrections(&hyper, 3);
        let step = StepUniform {
            rows: rows as u32,
            stat_slot: 1,
            adam_c1: c1 as f32,
            adam_c2: c2 as f32,
            ..Default::default()
        };
        let got = rig
            .run(step, &work, |k, pass, s| {
                k.encode_matmul_update(pass, &group, s, table.tiles)
            })
            .await?;
        let name = format!("{rows}×5→{fan_in}→{fan_out} {optimizer:?} γ={gamma} λ1={l1} λ2={l2}");
        // Several roundings, and FMA contraction may differ: 4 ulp of the larger of old and new.
        let first_updated = updated[0].weight;
        let mine = first_updated..count;
        worst.compare(&name, &got[mine.clone()], &want[mine], |j, w| {
            let i = first_updated + j;
            let carried = (hi[i] - w).abs().max((lo[i] - w).abs());
            carried + 4.0 * f32::EPSILON as f64 * w.abs().max(p0[i].abs() as f64) + 1e-7
        });
        // The layer outside the table is not this dispatch's: its parameters stay as they were.
        let before: Vec<f64> = p0[..first_updated].iter().map(|&x| x as f64).collect();
        worst.compare(
            &format!("{name} other layers"),
            &got[..first_updated],
            &before,
            |_, _| f64::MIN_POSITIVE, // exactly: any change fails
        );
        worst.untouched(&name, &got[count..count + SENTINEL]);
        let got_stats = rig.run(step, &stats, |_, _, _| {}).await?;
        worst.compare(
            &format!("{name} batch sums"),
            &got_stats[2..4],
            &[loss, correct],
            |_, w| 1e-6 * w.abs().max(1.0),
        );
        worst.untouched(&format!("{name} stats slot 0"), &got_stats[..2]);
        worst.untouched(&format!("{name} stats tail"), &got_stats[4..]);
    }
    Ok(worst.row(
        "matmul weight + bias gradient + update, two layers in one dispatch (SGD, momentum, Adam, L1, L2) + batch sums",
    ))
}

/// matmul_softmax_xent: the output layer's logits x·wᵀ + b (never stored) through softmax +
/// cross-entropy, against `ops::matmul_softmax_xent` per row, and (but in the last
/// case) the input gradient of the layer below, dz·w ⊙ f'(x). The logits' dot-product bound B
/// carries into the gradient (|Δp| ≤ 2B) and the loss (≤ 2B); the arg-max may differ only
/// where the top two logits are within 2B; dz's tolerance carries through w into the input
/// gradient, beside that product's own bound.
pub(super) async fn check_matmul_softmax_xent(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    let cases = [
        (1, 7, 10),
        (7, 33, 3),
        (33, 128, 16),
        (129, 784, 10),
        (40, 1, 1),
    ];
    for (case, &(rows, fan_in, classes)) in cases.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(500 + case as u64);
        let input_grad = case + 1 < cases.len();
        let act = ACTIVATIONS[case % 4];
        // x: the layer below's activations (dh's slope is taken through them).
        let x: Vec<f32> = uniform_f32(&mut rng, rows * fan_in, 2.0)
            .into_iter()
            .map(|v| act_ref(v as f64, act) as f32)
            .collect();
        let w_off = 5;
        let mut wbuf = uniform_f32(&mut rng, w_off + classes * fan_in + classes, 1.0);
        let b_off = w_off + classes * fan_in;
        wbuf[b_off] = 30.0; // a dominant logit: exp is taken of z − max only
        // Pool labels read through a reversed index list, as a shuffled epoch would.
        let labels: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let indices: Vec<u32> = (0..rows as u32).rev().collect();
        let scale = 1.0 / rows as f32;
        let capacity = rows + 3;
        let (mut want_dz, mut dz_tol) = (vec![0.0; rows * classes], vec![0.0; rows * classes]);
        let (mut want_loss, mut loss_tol) = (vec![0.0; 2 * rows], vec![0.0; 2 * rows]);
        let (mut want_dh, mut dh_tol) = (vec![0.0; rows * fan_in], vec![0.0; rows * fan_in]);
        let w = &wbuf[w_off..b_off];
        let (w64, w_abs) = (f64s(w), abs64(w));
        let (bias, bias_abs) = (f64s(&wbuf[b_off..]), abs64(&wbuf[b_off..]));
        // Row by row (each row's loss and correct flag are the kernel's outputs too).
        for r in 0..rows {
            let row = &x[r * fan_in..(r + 1) * fan_in];
            let x_row = f64s(row);
            let label = labels[indices[r] as usize] as u8;
            let (loss, correct, dz, dh) = ops::matmul_softmax_xent(
                &x_row,
                &w64,
                &bias,
                &[label],
                scale as f64,
                fan_in,
                classes,
                Some(act),
            );
            // The logits' bound B (bias included), and whether their arg-max is clear of it.
            let z = ops::matmul(
                Forward(Activation::None),
                &x_row,
                &w64,
                &bias,
                1,
                fan_in,
                classes,
            );
            let z_abs = ops::matmul(
                Forward(Activation::None),
                &abs64(row),
                &w_abs,
                &bias_abs,
                1,
                fan_in,
                classes,
            );
            let bound = z_abs
                .iter()
                .map(|&a| dot_tolerance(fan_in + 1, a))
                .fold(0.0f64, f64::max);
            let tol = scale as f64 * 2.0 * bound + 1e-6;
            want_dz[r * classes..(r + 1) * classes].copy_from_slice(&dz);
            dz_tol[r * classes..(r + 1) * classes].fill(tol);
            want_loss[r] = loss;
            loss_tol[r] = 2.0 * bound + 1e-5 * loss.abs().max(1.0);
            let mut sorted = z.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let clear = classes == 1 || sorted[0] - sorted[1] > 2.0 * bound;
            want_loss[rows + r] = correct as f64;
            loss_tol[rows + r] = if clear { 0.5 } else { 1.5 };
            // dz's tolerance carried through |w|, beside the product's own bound.
            let dz_abs: Vec<f64> = dz.iter().map(|v| v.abs()).collect();
            let abs = ops::matmul(
                InputGrad(Activation::None),
                &dz_abs,
                &w_abs,
                &[],
                1,
                fan_in,
                classes,
            );
            let carried = ops::matmul(
                InputGrad(Activation::None),
                &vec![tol; classes],
                &w_abs,
                &[],
                1,
                fan_in,
                classes,
            );
            let dh = dh.expect("asked for with Some(act)");
            for i in 0..fan_in {
                let slope = slope_at_output(x_row[i], act);
                want_dh[r * fan_in + i] = dh[i];
                dh_tol[r * fan_in + i] =
                    (carried[i] + dot_tolerance(classes, abs[i])) * slope.abs().max(1.0) + 1e-6;
            }
        }
        // The parameters open the workspace; the batch, dZ, row losses and dh follow.
        let mut work = Work::default();
        work.input(&wbuf);
        let x_at = work.input(&x);
        let dz_at = work.output(rows * classes);
        let row_loss_at = work.output(2 * capacity);
        let dh_at = work.output(rows * fan_in);
        let work = work.buffer(rig)?;
        let lab = storage_init(rig.ctx, "labels", bytemuck::cast_slice(&labels))?;
        let idx = storage_init(rig.ctx, "indices", bytemuck::cast_slice(&indices))?;
        let models = rig.hidden_activation(act)?;
        let params = MatmulParams {
            capacity: capacity as u32,
            input_grad: input_grad as u32,
            a_off: x_at as u32,
            c_off: dz_at as u32,
            row_loss_off: row_loss_at as u32,
            dh_off: dh_at as u32,
            ..MatmulParams::forward(&layer_at(fan_in, classes, w_off), false)
        };
        let p = uniform_init(rig.ctx, "matmul_softmax_xent", bytemuck::bytes_of(&params))?;
        let group = matmul_bind_group(
            rig.ctx,
            &rig.kernels.matmul_xent_layout,
            "matmul_softmax_xent",
            &MATMUL_XENT_BINDINGS,
            [&work, &models, &p],
            &[&lab, &idx],
        );
        let step = StepUniform {
            rows: rows as u32,
            scale,
            ..Default::default()
        };
        let got = rig
            .run(step, &work, |k, pass, s| {
                k.encode_matmul_softmax_xent(pass, &group, s, rows as u32)
            })
            .await?;
        let got_dz = &got[dz_at..][..rows * classes + SENTINEL];
        let got_loss = &got[row_loss_at..][..2 * capacity + SENTINEL];
        let got_dh = &got[dh_at..][..rows * fan_in + SENTINEL];
        let name = format!("{rows}×{fan_in}→{classes}");
        worst.compare(&name, &got_dz[..rows * classes], &want_dz, |i, _| dz_tol[i]);
        worst.untouched(&name, &got_dz[rows * classes..]);
        let got_rows: Vec<f32> = got_loss[..rows]
            .iter()
            .chain(&got_loss[capacity..capacity + rows])
            .copied()
            .collect();
        worst.compare(
            &format!("{name} row losses"),
            &got_rows,
            &want_loss,
            |i, _| loss_tol[i],
        );
        worst.untouched(
            &format!("{name} rows past the batch"),
            &got_loss[rows..capacity],
        );
        worst.untouched(&format!("{name} tail"), &got_loss[capacity + rows..]);
        if input_grad {
            worst.compare(
                &format!("{name} input gradient"),
                &got_dh[..rows * fan_in],
                &want_dh,
                |i, _| dh_tol[i],
            );
            worst.untouched(&format!("{name} input gradient"), &got_dh[rows * fan_in..]);
        } else {
            worst.untouched(&format!("{name} no input gradient"), got_dh);
        }
    }
    Ok(worst.row("matmul forward (+bias) + softmax_xent (+ input gradient below)"))
}

/// matmul_gather: the first layer's forward pass with its rows gathered from byte images and
/// z-scored in the tile loads, against `ops::matmul_gather`; the batch it stores for the
/// weight gradient is checked against `ops::gather_batch`.
pub(super) async fn check_matmul_gather(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, &(rows, features, fan_out)) in
        [(1, 7, 3), (33, 129, 17), (129, 784, 128), (7, 1, 33)]
            .iter()
            .enumerate()
    {
        let mut rng = ChaCha8Rng::seed_from_u64(600 + case as u64);
        let act = ACTIVATIONS[case % 4];
        let count = 41;
        let mut pixels: Vec<u8> = (0..count * features).map(|_| rng.random::<u8>()).collect();
        pixels[..features].fill(9); // a constant image: z-scores to zeros, never NaN
        let indices: Vec<u32> = (0..rows)
            .map(|r| {
                if r == 0 {
                    0
                } else {
                    rng.random_range(0..count as u32)
                }
            })
            .collect();
        let stats: Vec<f32> = pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (m, s) = crate::data::prep::image_stats(img);
                [m as f32, s as f32]
            })
            .collect();
        let w_off = 5;
        let wbuf = uniform_f32(&mut rng, w_off + fan_out * features + fan_out, 0.1);
        let b_off = w_off + fan_out * features;
        let w = &wbuf[w_off..b_off];
        let bias = f64s(&wbuf[b_off..b_off + fan_out]);
        let want = ops::matmul_gather(&pixels, features, &indices, &f64s(w), &bias, fan_out, act);
        let batch = ops::gather_batch(&pixels, features, &indices);
        let want_x = f64s(&batch);
        let zeros = vec![0.0; fan_out];
        let abs = ops::matmul(
            Forward(Activation::None),
            &abs64(&batch),
            &abs64(w),
            &zeros,
            rows,
            features,
            fan_out,
        );
        // The z-scores' own few ulp pass through the weights, then the product's bound.
        let tol: Vec<f64> = abs
            .iter()
            .map(|&a| dot_tolerance(features, a) + 4.0 * f32::EPSILON as f64 * a + 1e-6)
            .collect();
        let mut padded = pixels.clone();
        padded.resize(pixels.len().next_multiple_of(4), 0);
        let pix = storage_init(rig.ctx, "pixels", &padded)?;
        let stats = rig.f32s("image_stats", &stats)?;
        let idx = storage_init(rig.ctx, "indices", bytemuck::cast_slice(&indices))?;
        let mut work = Work::default();
        work.input(&wbuf);
        let out_at = work.output(rows * fan_out);
        let x_at = work.output(rows * features);
        let work = work.buffer(rig)?;
        let models = rig.hidden_activation(act)?;
        let params = MatmulParams {
            c_off: out_at as u32,
            x_off: x_at as u32,
            ..MatmulParams::forward(&layer_at(features, fan_out, w_off), true)
        };
        let p = uniform_init(rig.ctx, "matmul_gather", bytemuck::bytes_of(&params))?;
        let group = matmul_bind_group(
            rig.ctx,
            &rig.kernels.matmul_gather_layout,
            "matmul_gather",
            &MATMUL_GATHER_BINDINGS,
            [&work, &models, &p],
            &[&idx, &pix, &stats],
        );
        let step = StepUniform {
            rows: rows as u32,
            ..Default::default()
        };
        let all = rig
            .run(step, &work, |k, pass, s| {
                k.encode_matmul_gather(pass, &group, s, rows as u32, fan_out as u32)
            })
            .await?;
        let got = &all[out_at..][..rows * fan_out + SENTINEL];
        let got_x = &all[x_at..][..rows * features + SENTINEL];
        let name = format!("{rows}×{features}→{fan_out} {}", act.name());
        worst.compare(&name, &got[..rows * fan_out], &want, |i, _| tol[i]);
        worst.untouched(&name, &got[rows * fan_out..]);
        worst.compare(
            &format!("{name} stored batch"),
            &got_x[..rows * features],
            &want_x,
            |_, w| 1e-6 + 4.0 * f32::EPSILON as f64 * w.abs(),
        );
        worst.untouched(&format!("{name} stored batch"), &got_x[rows * features..]);
    }
    Ok(worst.row("matmul forward, gathered (+bias, activation)"))
}
