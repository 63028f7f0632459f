//! `wgtrain bench`: the timing tables (per device and batch size, packed against one after
//! another, and the per-kernel profile).

use super::*;

/// Sides of the square products the CPU's GEMM peak is measured on (three, since the fastest
/// size differs between machines, and not only powers of two, whose strides alias in the
/// caches), and how many of each are timed: about a second in all on two cores.
const GEMM_PEAK_SIZES: [usize; 3] = [384, 768, 1024];
const GEMM_PEAK_RUNS: usize = 7;

pub(super) fn bench(bench_args: BenchArgs) -> Result<()> {
    let BenchArgs {
        config: args,
        devices,
        batch_sizes,
        warmup,
        epochs,
        json,
        threads,
        pack,
        profile,
        gpu,
    } = bench_args;
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if pack == Some(0) {
        bail!("--pack must be at least 1");
    }
    let threads = super::threads_flag(threads)?;
    let config = args.load()?;
    let batches: Vec<usize> = match batch_sizes.as_deref() {
        None => vec![config.batch_size],
        Some(list) => list
            .split(',')
            .map(|b| b.trim().parse::<usize>().ok().filter(|&b| b > 0))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!(
                    "--batch-sizes {list:?}: expected positive whole numbers separated by commas"
                )
            })?,
    };
    let kinds = devices
        .split(',')
        .map(|d| match d.trim() {
            "cpu" => Ok(EngineKind::Cpu { threads }),
            "gpu" => Ok(EngineKind::Gpu {
                context: Box::new(GpuContext::open(&gpu.choice(true)).context("bench on gpu")?),
            }),
            other => bail!("--devices: unknown device {other:?} (expected cpu or gpu)"),
        })
        .collect::<Result<Vec<_>>>()?;
    let data = wgtrain::data::Dataset::load(&args.data_dir(), config.val_fraction, config.seed)?;
    for &b in &batches {
        let mut c = config.clone();
        c.batch_size = b;
        c.check_against_data(data.features, data.classes, data.train.len)?;
    }
    // Before the GEMM peak is timed: a network that cannot fit fails at once.
    for kind in &kinds {
        kind.check_memory(&config.layers)?;
    }
    let data = std::sync::Arc::new(wgtrain::bench::training_only(data));
    let flops = wgtrain::bench::epoch_flops(&config.layers, data.train.len);
    let machine = wgtrain::bench::Machine::this(std::env::args().collect::<Vec<_>>().join(" "));
    println!("{}", machine.summary());
    for kind in &kinds {
        if let Some(a) = kind.adapter() {
            println!(
                "adapter: {} ({}, {}), driver {}",
                a.name, a.backend, a.device_type, a.driver
            );
        }
    }
    println!(
        "bench: {} {:?} {}, {} training rows, {:.2} GFLOP per epoch, {warmup} warm-up + {epochs} timed epochs (validation excluded)",
        config.name,
        config.layers,
        config.activation.name(),
        data.train.len,
        flops / 1e9
    );
    // The CPU's floor for this epoch: its FLOPs at the machine's measured GEMM peak.
    let peak = kinds
        .iter()
        .any(|k| matches!(k, EngineKind::Cpu { .. }))
        .then(|| wgtrain::bench::cpu_gemm_peak(&GEMM_PEAK_SIZES, threads, GEMM_PEAK_RUNS));
    if let Some(p) = &peak {
        println!(
            "CPU f32 GEMM peak here: {:.1} GFLOP/s (the CPU path's GEMM, {} thread{}, fastest of {} products at each of {}; fastest at {n}³): floor {:.4} s/epoch",
            p.gflops,
            p.threads,
            if p.threads == 1 { "" } else { "s" },
            p.runs,
            GEMM_PEAK_SIZES.map(|n| format!("{n}³")).join(", "),
            flops / (p.gflops * 1e9),
            n = p.size,
        );
    }
    println!(
        "| device | adapter / threads | batch | median s/epoch (min–max) | samples/s | GFLOP/s | share of floor | dispatches/step | speed vs cpu |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for &b in &batches {
        let mut cpu_median = None;
        for kind in &kinds {
            let mut row = wgtrain::bench::bench_one(kind, &config, &data, b, warmup, epochs)?;
            if row.device == "cpu" {
                cpu_median = Some(row.median_epoch_secs);
                row.share_of_floor = peak.map(|p| row.gflops / p.gflops);
                row.gemm_peak_gflops = peak.map(|p| p.gflops);
            }
            println!(
                "| {} | {} | {} | {:.4} ({:.4}–{:.4}) | {:.0} | {:.1} | {} | {} | {} |",
                row.device,
                row.detail,
                row.batch_size,
                row.median_epoch_secs,
                row.min_epoch_secs,
                row.max_epoch_secs,
                row.samples_per_sec,
                row.gflops,
                row.share_of_floor
                    .map_or("–".into(), |s| format!("{:.0}%", 100.0 * s)),
                row.dispatches_per_step
                    .map_or("–".into(), |d| d.to_string()),
                cpu_median.map_or("–".into(), |c| format!(
                    "{:.2}×",
                    c / row.median_epoch_secs
                )),
            );
            rows.push(row);
        }
    }
    let mut lines: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    if profile {
        for (kind, row) in kinds.iter().cycle().zip(&rows) {
            let EngineKind::Gpu { context } = kind else {
                continue;
            };
            match wgtrain::bench::profile_gpu(context, &config, &data, row.batch_size) {
                Ok(p) => {
                    print_profile(&p, row, data.train.len);
                    let mut value = serde_json::to_value(&p)?;
                    value["adapter"] = context.info.name.clone().into();
                    value["batch_size"] = row.batch_size.into();
                    lines.push(value);
                }
                Err(e) => println!("\nprofile: {}: {e}", context.info.name),
            }
        }
    }
    if let Some(k) = pack {
        println!(
            "\n{k} models (seeds 1–{k}), one epoch of each: packed (GPU: in the same dispatches; CPU: side by side, a share of the threads each) vs one after another"
        );
        println!(
            "| adapter | batch | packed s (min–max) | one after another s (min–max) | packed speed-up | packed samples/s |"
        );
        println!("|---|---|---|---|---|---|");
        for kind in &kinds {
            for &b in &batches {
                let r = match kind {
                    EngineKind::Gpu { context } => {
                        wgtrain::bench::bench_pack(context, &config, &data, b, k, warmup, epochs)?
                    }
                    _ => wgtrain::bench::bench_cpu_pack(
                        &config, &data, b, k, threads, warmup, epochs,
                    )?,
                };
                println!(
                    "| {} | {} | {:.4} ({:.4}–{:.4}) | {:.4} ({:.4}–{:.4}) | {:.2}× | {:.0} |",
                    r.detail,
                    r.batch_size,
                    r.packed_median_secs,
                    r.packed_min_secs,
                    r.packed_max_secs,
                    r.sequential_median_secs,
                    r.sequential_min_secs,
                    r.sequential_max_secs,
                    r.speedup,
                    r.packed_samples_per_sec
                );
                lines.push(serde_json::to_value(&r)?);
            }
        }
    }
    if let Some(path) = json {
        let machine = serde_json::to_value(&machine)?;
        for line in &mut lines {
            line["machine"] = machine.clone();
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        wgtrain::checkpoint::write_atomic(&path, text.as_bytes())?;
    }
    Ok(())
}

/// The per-family table of `bench --profile`, with the wall-clock step from `row` beside it.
fn print_profile(
    p: &wgtrain::gpu::packed::StepProfile,
    row: &wgtrain::bench::BenchRow,
    train_rows: usize,
) {
    let wall = row.median_epoch_secs / train_rows.div_ceil(row.batch_size).max(1) as f64;
    println!(
        "\nprofile: {}, batch {}, the first {} steps of an epoch with a timestamp after every dispatch ({} dispatches per step, {:.4} submissions per step)",
        row.detail, row.batch_size, p.steps, p.dispatches_per_step, p.submissions_per_step
    );
    println!("| kernel family | dispatches/step | GPU µs/step | share of GPU time |");
    println!("|---|---|---|---|");
    let busy: f64 = p.families.iter().map(|f| f.gpu_secs_per_step).sum();
    for f in &p.families {
        println!(
            "| {} | {} | {:.2} | {:.0}% |",
            f.family,
            f.dispatches_per_step,
            1e6 * f.gpu_secs_per_step,
            100.0 * f.gpu_secs_per_step / busy.max(1e-12)
        );
    }
    println!(
        "| first to last timestamp | {} | {:.2} | |",
        p.dispatches_per_step,
        1e6 * p.gpu_secs_per_step
    );
    println!(
        "| host recording (whole epoch, unsubmitted) | {} | {:.2} | |",
        p.dispatches_per_step,
        1e6 * p.record_secs_per_step
    );
    println!(
        "| wall clock (bench median / steps) | | {:.2} | |",
        1e6 * wall
    );
}
