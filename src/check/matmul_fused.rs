//! matmul.wgsl's fusions that end a step, against the composition of their unfused CPU
//! references: `matmul_update` (weight gradients and the optimiser in one dispatch) and
//! `matmul_softmax_xent` (the output layer, softmax and cross-entropy, and the input gradient
//! below).

use super::matmul::{layer_at, slope_at_output};
use super::rig::*;
use crate::cpu::ops::MatmulMode::{Forward, InputGrad, WeightGrad};

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
