//! matmul.wgsl's entry points against their CPU twins in `cpu::ops` (f64): the plain matmul
//! in every mode, and the fusions (`matmul_update`, `matmul_softmax_xent`, `matmul_gather`),
//! each against the composition of the unfused references. The tolerances come from the same
//! twins run on the operands' magnitudes (the dot-product bound's Σ|aᵢbᵢ|).

use super::rig::*;
use crate::cpu::ops::MatmulMode::{Forward, InputGrad, WeightGrad};

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
pub(super) fn layer_at(fan_in: usize, fan_out: usize, w_off: usize) -> LayerView {
    LayerView {
        fan_in,
        fan_out,
        weight: w_off,
        bias: w_off + fan_out * fan_in,
    }
}

/// The activation's derivative in f64, written through its output `y` as the kernels take it.
pub(super) fn slope_at_output(y: f64, act: Activation) -> f64 {
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
