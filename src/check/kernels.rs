//! The element-wise kernels against their CPU twins of the same name on seeded inputs of
//! awkward sizes: `gather_batch`, `dropout_forward` and `softmax_xent` (the activation and
//! update kernels are `layers.rs`', convolution and pooling `conv.rs`', the matmul family
//! `matmul.rs`' and `matmul_fused.rs`').

use super::rig::*;

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
