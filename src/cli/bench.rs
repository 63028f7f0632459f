//! `wgtrain bench`: the timing tables (per device and batch size, packed against one after
//! another, and the per-kernel profile).

use anyhow::{Context, Result, bail};
use wgtrain::device::EngineKind;
use wgtrain::gpu::GpuContext;

use super::args::BenchArgs;
use wgtrain::metrics::faster_or_slower;
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
    let threads = super::args::threads_flag(threads)?;
    // Before anything: a JSON path that is a directory, or in none, said in words; the file
    // itself is opened (as a shell's `>` opens it) just before timing, so that one that
    // cannot be written fails first, not after every measurement.
    if let Some(problem) = json.as_deref().and_then(wgtrain::files::output_problem) {
        bail!("--json {}: {problem}", json.unwrap_or_default().display());
    }
    let config = args.load()?;
    let batches = batch_list(batch_sizes.as_deref(), config.batch_size)?;
    let kinds = engine_kinds(&devices, threads, &gpu)?;
    let plan = wgtrain::bench::BenchPlan {
        config: &config,
        data_dir: args.data_dir(),
        kinds: &kinds,
        batches: &batches,
        warmup,
        epochs,
        threads,
        pack,
        profile,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let json = json
        .map(|path| {
            let file = wgtrain::files::create_output(&path)
                .with_context(|| format!("--json {}", path.display()))?;
            Ok::<_, anyhow::Error>((path, file))
        })
        .transpose()?;
    let lines = wgtrain::bench::run_bench(
        &plan,
        &BenchPrinter {
            config: &config,
            kinds: &kinds,
            warmup,
            epochs,
        },
    )?;
    if let Some((path, file)) = json {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        wgtrain::files::write_output(file, text.as_bytes())
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

/// `--batch-sizes`: positive whole numbers separated by commas; none given, the config's.
fn batch_list(batch_sizes: Option<&str>, config_batch: usize) -> Result<Vec<usize>> {
    let Some(list) = batch_sizes else {
        return Ok(vec![config_batch]);
    };
    (list.split(','))
        .map(|b| b.trim().parse::<usize>().ok().filter(|&b| b > 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!("--batch-sizes {list:?}: expected positive whole numbers separated by commas")
        })
}

/// `--devices`: the engines to time (cpu on `threads`, gpu on the adapter `gpu` chooses).
fn engine_kinds(
    devices: &str,
    threads: usize,
    gpu: &super::args::GpuArgs,
) -> Result<Vec<EngineKind>> {
    (devices.split(','))
        .map(|d| match d.trim() {
            "cpu" => Ok(EngineKind::Cpu { threads }),
            "gpu" => Ok(EngineKind::Gpu {
                context: Box::new(
                    pollster::block_on(GpuContext::open(&gpu.choice(true)))
                        .context("bench on gpu")?,
                ),
            }),
            other => bail!("--devices: unknown device {other:?} (expected cpu or gpu)"),
        })
        .collect()
}

/// Prints a bench's tables as the library reports their rows.
struct BenchPrinter<'a> {
    config: &'a wgtrain::config::TrainConfig,
    kinds: &'a [EngineKind],
    warmup: usize,
    epochs: usize,
}

impl wgtrain::bench::BenchObserver for BenchPrinter<'_> {
    fn started(&self, machine: &wgtrain::bench::Machine, train_rows: usize, flops: f64) {
        let (config, warmup, epochs) = (self.config, self.warmup, self.epochs);
        println!("{}", machine.summary());
        for kind in self.kinds {
            if let Some(a) = kind.adapter() {
                println!(
                    "adapter: {} ({}, {}), driver {}",
                    a.name, a.backend, a.device_type, a.driver
                );
            }
        }
        println!(
            "bench: {} {}, {train_rows} training rows, {:.2} GFLOP per epoch, {warmup} warm-up + {epochs} timed epochs (validation excluded)",
            config.name,
            config.model_words(),
            flops / 1e9
        );
    }

    fn gemm_peak(&self, p: &wgtrain::bench::GemmPeak, floor_secs: f64) {
        println!(
            "CPU f32 GEMM peak here: {:.1} GFLOP/s (the CPU path's GEMM, {} thread{}, fastest of {} products at each of {}; fastest at {n}³): floor {floor_secs:.4} s/epoch",
            p.gflops,
            p.threads,
            if p.threads == 1 { "" } else { "s" },
            p.runs,
            wgtrain::bench::GEMM_PEAK_SIZES
                .map(|n| format!("{n}³"))
                .join(", "),
            n = p.size,
        );
    }

    fn rows_started(&self) {
        println!(
            "| device | adapter / threads | batch | median s/epoch (min–max) | samples/s | GFLOP/s | share of floor | dispatches/step | speed vs cpu |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    }

    fn row(&self, row: &wgtrain::bench::BenchRow, speed_vs_cpu: Option<f64>) {
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
            match speed_vs_cpu {
                _ if row.device == "cpu" => "(the baseline)".into(),
                Some(s) => faster_or_slower(s),
                None => "–".into(),
            },
        );
    }

    fn profile(
        &self,
        adapter: &str,
        row: &wgtrain::bench::BenchRow,
        train_rows: usize,
        profile: &std::result::Result<wgtrain::gpu::StepProfile, wgtrain::engine::EngineError>,
    ) {
        match profile {
            Ok(p) => print_profile(p, row, train_rows),
            Err(e) => println!("\nprofile: {adapter}: {e}"),
        }
    }

    fn pack_started(&self, k: usize) {
        println!(
            "\n{k} models (seeds 1–{k}), one epoch of each: packed (GPU: in the same dispatches; CPU: side by side, a share of the threads each) vs one after another"
        );
        println!(
            "| adapter | batch | packed s (min–max) | one after another s (min–max) | packed | packed samples/s |"
        );
        println!("|---|---|---|---|---|---|");
    }

    fn pack_row(&self, r: &wgtrain::bench::PackBenchRow) {
        println!(
            "| {} | {} | {:.4} ({:.4}–{:.4}) | {:.4} ({:.4}–{:.4}) | {} | {:.0} |",
            r.detail,
            r.batch_size,
            r.packed_median_secs,
            r.packed_min_secs,
            r.packed_max_secs,
            r.sequential_median_secs,
            r.sequential_min_secs,
            r.sequential_max_secs,
            faster_or_slower(r.speedup),
            r.packed_samples_per_sec
        );
    }
}

/// The per-family table of `bench --profile`, with the wall-clock step from `row` beside it.
fn print_profile(p: &wgtrain::gpu::StepProfile, row: &wgtrain::bench::BenchRow, train_rows: usize) {
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
