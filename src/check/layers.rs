//! The kernels a network of layers adds to the fused dense ones, each against its CPU twin of
//! the same name: activation.wgsl's passes (`cpu::ops::activation_forward`,
//! `activation_backward`) and update.wgsl (`cpu::ops::update`).

use super::rig::*;
use crate::gpu::uniforms::{ActivationParams, UpdateParams, activation_code};

/// activation.wgsl's `activation_forward` (or with `backward` its `activation_backward`)
/// against the f64 twin, for every activation, on each size of [`SIZES`], once over the
/// uniform's `len` and once over the step's rows × `per_row`.
pub(super) async fn check_activation(rig: &Rig<'_>, backward: bool) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, &len) in SIZES.iter().enumerate() {
        for (a, &activation) in ACTIVATIONS.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(500 + (4 * case + a) as u64);
            let x = uniform_f32(&mut rng, len, 4.0);
            // The backward pass's `a` is the forward pass's output, as training gives it.
            let mut a32 = x.clone();
            ops::activation_forward(activation, &mut a32);
            let g = uniform_f32(&mut rng, len, 1.0);
            let want = if backward {
                let mut g64 = f64s(&g);
                ops::activation_backward(activation, &f64s(&a32), &mut g64);
                g64
            } else {
                let mut x64 = f64s(&x);
                ops::activation_forward(activation, &mut x64);
                x64
            };
            // The operand one slot in (a kernel ignoring its offset fails), sentinels after.
            let mut work = Work::default();
            let x_off = work.input(&[f32::NAN]) + 1;
            work.input(if backward { &a32 } else { &x });
            work.input(&[f32::NAN; SENTINEL]);
            let g_off = work.input(&g);
            work.input(&[f32::NAN; SENTINEL]);
            let buffer = work.buffer(rig)?;
            // Odd cases count by the step's rows: len = rows × per_row.
            let by_rows = case % 2 == 1;
            let (rows, per_row) = if by_rows { (len, 1) } else { (0, 0) };
            let params = ActivationParams {
                kind: activation_code(activation),
                len: if by_rows { 0 } else { len as u32 },
                per_row,
                work_ms: 0,
                x_off: x_off as u32,
                g_off: g_off as u32,
                _pad: [0; 2],
            };
            let p = uniform_init(rig.ctx, "activation", bytemuck::bytes_of(&params))?;
            let group = bind(
                rig.ctx,
                &rig.kernels.work_layout,
                "activation",
                &[&buffer, &p],
            );
            let step = StepUniform {
                rows: rows as u32,
                ..Default::default()
            };
            let got = rig
                .run(step, &buffer, |k, pass, s| {
                    k.encode_activation(pass, backward, &group, s, len as u32)
                })
                .await?;
            let out = if backward { g_off } else { x_off };
            let name = format!("{len} elements, {}", activation.name());
            // One f32 evaluation against f64: a few ulp of the value, and of 1 for the
            // transcendental ones (WGSL's tanh and exp are not correctly rounded).
            worst.compare(&name, &got[out..out + len], &want, |_, w| {
                1e-6 + 8.0 * f32::EPSILON as f64 * w.abs().max(1.0)
            });
            worst.untouched(&name, &got[out + len..out + len + SENTINEL]);
        }
    }
    let name = if backward {
        "activation_backward"
    } else {
        "activation_forward"
    };
    Ok(worst.row(name))
}

/// update.wgsl against `ops::update` in f64: SGD, momentum with both penalties, Adam, on
/// weights (penalised) and biases (not), the moments after two earlier steps.
pub(super) async fn check_update(rig: &Rig<'_>) -> Result<CheckRow, GpuError> {
    let mut worst = Worst::default();
    for (case, (optimizer, gamma, l1, l2)) in [
        (Optimizer::Sgd, 0.0, 0.0, 0.0),
        (Optimizer::Sgd, 0.9, 1e-2, 1e-3),
        (Optimizer::Adam, 0.0, 1e-3, 1e-2),
    ]
    .into_iter()
    .enumerate()
    {
        for (&len, penalised) in SIZES.iter().zip([true, false].into_iter().cycle()) {
            let mut rng = ChaCha8Rng::seed_from_u64(600 + 10 * case as u64 + len as u64);
            let mut hyper: Hyper = TrainConfig::default().hyper();
            (
                hyper.optimizer,
                hyper.momentum_gamma,
                hyper.l1,
                hyper.l2,
                hyper.learning_rate,
            ) = (optimizer, gamma, l1, l2, 0.05);
            let mut w0 = uniform_f32(&mut rng, len, 1.0);
            w0[0] = 0.0; // sign(0) = 0 on both paths
            let g = uniform_f32(&mut rng, len, 0.1);
            let f0 = uniform_f32(&mut rng, len, 0.1);
            let s0: Vec<f32> = uniform_f32(&mut rng, len, 0.1)
                .into_iter()
                .map(f32::abs)
                .collect();
            // The twin's view of one tensor: all weights (penalised) or all biases (not).
            let view = if penalised {
                LayerView {
                    fan_in: len,
                    fan_out: 1,
                    weight: 0,
                    bias: len,
                }
            } else {
                LayerView {
                    fan_in: 0,
                    fan_out: len,
                    weight: 0,
                    bias: 0,
                }
            };
            let mut state = ops::OptimizerState::<f64>::new(len);
            state.first = f64s(&f0);
            state.second = f64s(&s0);
            state.step = 2;
            let mut want = f64s(&w0);
            ops::update(&mut want, &f64s(&g), &mut state, &[view], &hyper);
            // Parameters one slot in, the gradient after them, sentinels between.
            let mut work = Work::default();
            let param_off = work.input(&[f32::NAN]) + 1;
            work.input(&w0);
            work.input(&[f32::NAN; SENTINEL]);
            let grad_off = work.input(&g);
            let buffer = work.buffer(rig)?;
            // The moments are indexed as the parameters are (param_off on).
            let pad = |v: &[f32]| {
                let mut padded = vec![0.0f32; param_off];
                padded.extend_from_slice(v);
                padded
            };
            let (fb, sb) = (
                rig.f32s("first", &pad(&f0))?,
                rig.f32s("second", &pad(&s0))?,
            );
            let model = ModelHyper::new(&hyper, Activation::None);
            let models = storage_init(rig.ctx, "model_hyper", bytemuck::bytes_of(&model))?;
            let params = UpdateParams {
                param_off: param_off as u32,
                grad_off: grad_off as u32,
                len: len as u32,
                penalised: penalised as u32,
                work_ms: 0,
                param_ms: 0,
                _pad: [0; 2],
            };
            let p = uniform_init(rig.ctx, "update", bytemuck::bytes_of(&params))?;
            let group = bind(
                rig.ctx,
                &rig.kernels.update_layout,
                "update",
                &[&buffer, &models, &fb, &sb, &p],
            );
            let (c1, c2) = ops::adam_corrections(&hyper, 3);
            let step = StepUniform {
                adam_c1: c1 as f32,
                adam_c2: c2 as f32,
                ..Default::default()
            };
            let got = rig
                .run(step, &buffer, |k, pass, s| {
                    k.encode_update(pass, &group, s, len as u32)
                })
                .await?;
            let kind = if penalised { "weights" } else { "biases" };
            let name = format!("{len} {kind}, {optimizer:?} γ={gamma} λ1={l1} λ2={l2}");
            // A few roundings, and FMA contraction may differ: 8 ulp of the larger of the old
            // and new value (Adam's step divides, so its rounding scales with the step).
            worst.compare(&name, &got[param_off..param_off + len], &want, |i, w| {
                1e-7 + 8.0 * f32::EPSILON as f64 * w.abs().max(w0[i].abs() as f64)
            });
            worst.untouched(&name, &got[param_off + len..param_off + len + SENTINEL]);
        }
    }
    Ok(worst.row("update"))
}
