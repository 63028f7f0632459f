//! One row of `wgtrain bench`: a config trained on one engine (or packed), timed; the
//! machine it ran on; the CPU's GEMM peak.

use std::sync::Arc;
use web_time::Instant;

use serde::Serialize;

use crate::config::TrainConfig;
use crate::cpu::CpuKernels;
use crate::data::{Dataset, epoch_order};
use crate::device::EngineKind;
use crate::engine::{Engine, EngineError, wait};
use crate::model::Params;

/// Where and when a benchmark ran, printed above its table and written into every `--json`
/// line, so that a figure carries its machine wherever it is copied: with it
/// and each GPU row's adapter and driver, every figure has its machine, adapter, driver,
/// command and date.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// UTC, `YYYY-MM-DD`.
    pub date: String,
    /// The command line as given (program name first).
    pub command: String,
    pub wgtrain_version: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
    /// The CPU's model name (and, on x86, family and model numbers), or "unknown".
    pub cpu: String,
    pub logical_cores: usize,
    /// The widest kernel set the CPU path's GEMM can run here (`avx512f`, `avx2+fma`, …).
    pub simd: &'static str,
    /// The kernel set it ran: `simd`, or what `WGTRAIN_CPU_KERNELS` chose.
    pub cpu_kernels: &'static str,
}

impl Machine {
    pub fn this(command: String) -> Self {
        Machine {
            date: crate::metrics::UtcTime::now().date(),
            command,
            wgtrain_version: env!("CARGO_PKG_VERSION"),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu: cpu_model(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd: CpuKernels::widest().name(),
            cpu_kernels: CpuKernels::active().name(),
        }
    }

    /// One line for the top of a bench's output.
    pub fn summary(&self) -> String {
        format!(
            "machine: {}, {} logical cores, {} {} ({}); CPU kernels {}; wgtrain {}; {} UTC",
            self.cpu,
            self.logical_cores,
            self.os,
            self.arch,
            self.simd,
            match self.cpu_kernels == self.simd {
                true => self.cpu_kernels.to_string(),
                false => format!("{} (by {})", self.cpu_kernels, crate::cpu::kernels::ENV),
            },
            self.wgtrain_version,
            self.date
        )
    }
}

/// /proc/cpuinfo's model name, with family and model where given (the name alone can be as
/// vague as "AMD EPYC", which covers Zen 2 to Zen 5).
fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown".to_string();
    };
    let field = |key: &str| {
        info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(family), Some(model)) => {
            format!("{name} (family {family}, model {model})")
        }
        (Some(name), _, _) => name,
        _ => "unknown".to_string(),
    }
}

/// FLOPs of one training epoch over `rows` rows: the forward products, the weight-gradient
/// products and the input-gradient products of every layer but the first (which backprop does
/// not need), 2 FLOPs per multiply-add. Element-wise work is not counted.
pub fn epoch_flops(widths: &[usize], rows: usize) -> f64 {
    crate::model::Network::dense(widths, crate::model::Activation::None)
        .map_or(0.0, |model| model.epoch_flops(rows))
}

/// What a software adapter computes of the kernels per CPU core, in GFLOP/s, by the adapter's
/// name: lavapipe on two cores of an AMD EPYC trained the paper's momentum model at
/// 0.84 GFLOP/s, 109× below the CPU path beside it (BENCHMARKS.md, 2026-12-02, evening);
/// SwiftShader (Chromium's, through Vulkan) at about 0.13 GFLOP/s there, 157 s an epoch
/// (2026-12-03, the browser page's measurement). Others are taken to be like lavapipe. Only
/// for the estimate given before a long run on a software adapter, which says "roughly".
pub fn software_adapter_gflops_per_core(adapter: &str) -> f64 {
    if adapter.to_ascii_lowercase().contains("swiftshader") {
        0.065
    } else {
        0.42
    }
}

/// The arithmetic of one training epoch of `config` (its model on the training rows the images
/// file in `data_dir` declares, less its validation share); `None` where the file cannot say
/// (the run's own load reports why).
pub fn config_epoch_flops(config: &TrainConfig, data_dir: &std::path::Path) -> Option<f64> {
    let images = crate::data::locate(data_dir, crate::data::TRAIN_IMAGES);
    let declared = crate::data::idx::declared_items(&images)?;
    let (rows, _) = crate::data::split_sizes(declared, config.val_fraction)?;
    let model = crate::run::declared_model(config, data_dir)?;
    Some(model.epoch_flops(rows))
}

/// Before a long run on a software adapter (lavapipe, llvmpipe, SwiftShader, WARP): what it
/// is for and roughly how long `runs` runs, the most arithmetic they can take (`flops`,
/// `None` where that cannot be said), will take there; `None` on any other engine, and for
/// work estimated under a minute.
pub fn software_adapter_note(
    engine: &crate::device::EngineKind,
    runs: usize,
    flops: Option<f64>,
) -> Option<String> {
    let crate::device::EngineKind::Gpu { context } = engine else {
        return None;
    };
    if !context.info.software {
        return None;
    }
    let how_long = match flops.map(|f| software_adapter_secs(f, &context.info.name)) {
        Some(s) if s < 60.0 => return None,
        Some(s) => {
            let these = match runs {
                1 => "this run".to_string(),
                _ => format!("these {runs} runs"),
            };
            let time = crate::metrics::duration_words(s);
            format!("; {these} may take up to roughly {time} here")
        }
        None => String::new(),
    };
    Some(format!(
        "{} is a software adapter: it runs the GPU kernels on the CPU, to check them rather than to train (typically about 100× slower than --device cpu){how_long}",
        context.describe()
    ))
}

/// Roughly how many seconds `flops` of training take on the software adapter named `adapter`,
/// on this machine's cores.
pub fn software_adapter_secs(flops: f64, adapter: &str) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    flops / (software_adapter_gflops_per_core(adapter) * 1e9 * cores)
}

/// One row of the bench table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub device: String,
    pub detail: String,
    pub batch_size: usize,
    pub epochs_measured: usize,
    pub median_epoch_secs: f64,
    pub min_epoch_secs: f64,
    pub max_epoch_secs: f64,
    pub samples_per_sec: f64,
    pub gflops: f64,
    pub flops_per_epoch: f64,
    /// GPU only: dispatches per step and submissions per epoch.
    pub dispatches_per_step: Option<usize>,
    pub submissions_per_epoch: Option<usize>,
    pub train_loss_last_epoch: f64,
    /// CPU only, where the bench measured it: the epoch's GFLOP/s over the machine's
    /// [`super::peak::cpu_gemm_peak`], i.e. the floor (FLOPs at peak) over the median epoch.
    pub share_of_floor: Option<f64>,
    /// CPU only, where the bench measured it: that [`super::peak::cpu_gemm_peak`] in GFLOP/s, so a tool
    /// reading the rows can recompute the floor (`flops_per_epoch` at this rate).
    pub gemm_peak_gflops: Option<f64>,
    /// CPU only, where the bench measured it: the epoch's GFLOP/s over the cores'
    /// [`super::peak::cpu_fma_peak`], which no code on them can pass.
    pub share_of_fma_peak: Option<f64>,
    pub fma_peak_gflops: Option<f64>,
    /// GPU only: the adapter's driver and its version, as wgpu reports them.
    pub adapter_driver: Option<String>,
}

/// The dataset with its validation split cut to one row, so epochs time training alone.
pub fn training_only(mut data: Dataset) -> Dataset {
    data.val = data.val.first(1);
    data
}

/// The median of `v` (sorted in place; the mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median seconds of one call of `f`, over `reps` timed calls after `reps / 4 + 1` untimed:
/// how the `cargo bench` programs time a piece.
pub fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps / 4 + 1 {
        f();
    }
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}

/// A config that does not fit the bench, as the engine error the bench returns.
fn config_error(e: crate::config::ConfigError) -> EngineError {
    EngineError::Mismatch(e.to_string())
}

/// Trains `config` at `batch_size` on `kind` for `warmup + epochs` epochs and times the last `epochs`.
pub fn bench_one(
    kind: &EngineKind,
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
    warmup: usize,
    epochs: usize,
) -> Result<BenchRow, EngineError> {
    let mut config = config.clone();
    config.batch_size = batch_size;
    let hyper = config.hyper();
    let model = config
        .model_for(data.image_size, data.classes)
        .map_err(config_error)?;
    kind.check_memory(&model, batch_size)?;
    let flops = model.epoch_flops(data.train.len);
    let params = Params::init_model(model, config.init, config.seed);
    let mut engine = kind.build(&params, batch_size)?;
    engine.upload(Arc::clone(data))?;
    let mut times = Vec::with_capacity(epochs);
    let mut last_loss = f64::NAN;
    for epoch in 1..=warmup + epochs {
        let order = epoch_order(config.seed, epoch, data.train.len);
        let start = Instant::now();
        let stats = wait(engine.train_epoch(&order, &hyper))?;
        let secs = start.elapsed().as_secs_f64();
        if epoch > warmup {
            times.push(secs);
        }
        last_loss = stats.loss_sum / stats.samples.max(1) as f64;
    }
    let (min, max) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
        (lo.min(t), hi.max(t))
    });
    let med = median(&mut times);
    let (tuning, detail, adapter_driver) = match kind {
        EngineKind::Gpu { context } => {
            let changes = context.tuning.changes();
            let detail = if changes.is_empty() {
                engine.describe()
            } else {
                format!("{} {changes}", engine.describe())
            };
            (
                Some(context.tuning),
                detail,
                Some(context.info.driver.clone()),
            )
        }
        _ => (None, engine.describe(), None),
    };
    let steps = data.train.len.div_ceil(batch_size);
    Ok(BenchRow {
        device: kind.device_name().into(),
        detail,
        batch_size,
        epochs_measured: epochs,
        median_epoch_secs: med,
        min_epoch_secs: min,
        max_epoch_secs: max,
        samples_per_sec: data.train.len as f64 / med,
        gflops: flops / med / 1e9,
        flops_per_epoch: flops,
        dispatches_per_step: engine.dispatches_per_step(),
        submissions_per_epoch: tuning.map(|t| t.submission_parts(steps).len()),
        train_loss_last_epoch: last_loss,
        share_of_floor: None,
        gemm_peak_gflops: None,
        share_of_fma_peak: None,
        fma_peak_gflops: None,
        adapter_driver,
    })
}

/// Packed versus one after another: `models` copies of a config (seeds 1..=models) trained on
/// one GPU, timed per epoch both ways in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct PackBenchRow {
    pub detail: String,
    pub models: usize,
    pub batch_size: usize,
    pub epochs_measured: usize,
    /// Seconds for one epoch of every model, trained in the same dispatches.
    pub packed_median_secs: f64,
    pub packed_min_secs: f64,
    pub packed_max_secs: f64,
    /// Seconds for one epoch of every model, each on its own engine, one after another.
    pub sequential_median_secs: f64,
    pub sequential_min_secs: f64,
    pub sequential_max_secs: f64,
    /// sequential / packed, of the medians.
    pub speedup: f64,
    /// Training samples per second over all models, packed.
    pub packed_samples_per_sec: f64,
}

/// Times `models` models of `config` at `batch_size` packed and one after another, alternating
/// the two every epoch so drift on a noisy machine hits both alike.
///
/// On the GPU, packed means in the same dispatches (one `GpuModels`); see
/// [`bench_cpu_pack`] for the CPU's version.
pub fn bench_pack(
    ctx: &crate::gpu::GpuContext,
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
    models: usize,
    warmup: usize,
    epochs: usize,
) -> Result<PackBenchRow, EngineError> {
    use crate::gpu::{EpochJob, GpuEngine, GpuModels};
    let mut config = config.clone();
    config.batch_size = batch_size;
    let hyper = config.hyper();
    let seeds: Vec<u64> = (1..=models as u64).collect();
    let model = (config.model_for(data.image_size, data.classes)).map_err(config_error)?;
    let inits: Vec<Params> = seeds
        .iter()
        .map(|&s| Params::init_model(Arc::clone(&model), config.init, s))
        .collect();
    let mut pack = GpuModels::new(ctx.clone(), &model, batch_size, models)?;
    let mut alone = Vec::with_capacity(models);
    for (m, params) in inits.iter().enumerate() {
        pack.init_model(m, params)?;
        pack.upload(m, data)?;
        let mut engine = GpuEngine::new(ctx.clone(), params, batch_size)?;
        engine.upload(Arc::clone(data))?;
        alone.push(engine);
    }
    let (packed_times, sequential_times) = time_alternately(
        &seeds,
        data.train.len,
        warmup,
        epochs,
        |orders| {
            let jobs: Vec<Option<EpochJob<'_>>> = orders
                .iter()
                .map(|order| {
                    Some(EpochJob {
                        order,
                        hyper: &hyper,
                    })
                })
                .collect();
            for r in pollster::block_on(pack.train_epoch(&jobs))?
                .into_iter()
                .flatten()
            {
                r?;
            }
            Ok(())
        },
        |orders| {
            for (engine, order) in alone.iter_mut().zip(orders) {
                wait(engine.train_epoch(order, &hyper))?;
            }
            Ok(())
        },
    )?;
    Ok(pack_row(
        pack.describe(),
        models,
        batch_size,
        epochs,
        packed_times,
        sequential_times,
        data.train.len,
    ))
}

/// Per-kernel-family GPU time of `config` at `batch_size` on `ctx` (after one warm-up epoch),
/// from timestamps written after every dispatch of an epoch's first steps.
pub fn profile_gpu(
    ctx: &crate::gpu::GpuContext,
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
) -> Result<crate::gpu::StepProfile, EngineError> {
    use crate::gpu::{EpochJob, GpuModels};
    let mut config = config.clone();
    config.batch_size = batch_size;
    let hyper = config.hyper();
    let model = (config.model_for(data.image_size, data.classes)).map_err(config_error)?;
    let params = Params::init_model(Arc::clone(&model), config.init, config.seed);
    let mut models = GpuModels::new(ctx.clone(), &model, batch_size, 1)?;
    if !models.can_profile() {
        return Err(EngineError::Unsupported {
            adapter: ctx.info.name.clone(),
            what: "write timestamps inside compute passes (TIMESTAMP_QUERY_INSIDE_PASSES)",
        });
    }
    models.init_model(0, &params)?;
    models.upload(0, data)?;
    let order = |epoch| epoch_order(config.seed, epoch, data.train.len);
    let (warm, profiled) = (order(1), order(2));
    pollster::block_on(models.train_epoch(&[Some(EpochJob {
        order: &warm,
        hyper: &hyper,
    })]))?;
    models.profile_steps(&[Some(EpochJob {
        order: &profiled,
        hyper: &hyper,
    })])
}

/// The CPU's packing: `models` models of `config` trained side by side, each on its own thread
/// with `threads / models` GEMM threads, against the same models one after another on all
/// `threads` (what `sweep --device cpu` does with and without `--pack 1`), alternating every
/// epoch.
pub fn bench_cpu_pack(
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
    models: usize,
    threads: usize,
    warmup: usize,
    epochs: usize,
) -> Result<PackBenchRow, EngineError> {
    use crate::cpu::CpuEngine;

    let mut config = config.clone();
    config.batch_size = batch_size;
    let hyper = config.hyper();
    let threads = crate::host::resolve_threads(threads);
    let share = (threads / models).max(1);
    let seeds: Vec<u64> = (1..=models as u64).collect();
    let build = |threads: usize| -> Result<Vec<CpuEngine>, EngineError> {
        seeds
            .iter()
            .map(|&s| {
                let model = config.model_for(data.image_size, data.classes);
                let params = Params::init_model(model.map_err(config_error)?, config.init, s);
                let mut engine = CpuEngine::new(&params, threads, batch_size)?;
                engine.upload(Arc::clone(data))?;
                Ok(engine)
            })
            .collect()
    };
    let (mut packed, mut alone) = (build(share)?, build(threads)?);
    let (packed_times, alone_times) = time_alternately(
        &seeds,
        data.train.len,
        warmup,
        epochs,
        |orders| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = packed
                    .iter_mut()
                    .zip(orders)
                    .map(|(engine, order)| scope.spawn(|| wait(engine.train_epoch(order, &hyper))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or(Err(EngineError::Panicked {
                            what: "a benchmark thread",
                        }))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?;
            Ok(())
        },
        |orders| {
            for (engine, order) in alone.iter_mut().zip(orders) {
                wait(engine.train_epoch(order, &hyper))?;
            }
            Ok(())
        },
    )?;
    Ok(pack_row(
        format!("cpu ({models} side by side × {share} thread(s) vs one at a time × {threads})"),
        models,
        batch_size,
        epochs,
        packed_times,
        alone_times,
        data.train.len,
    ))
}

/// Runs `packed` and then `one_by_one` once per epoch (each given every model's order for that
/// epoch, from `seeds`), `warmup + epochs` times, and returns the last `epochs` seconds of each.
fn time_alternately(
    seeds: &[u64],
    train_rows: usize,
    warmup: usize,
    epochs: usize,
    mut packed: impl FnMut(&[Vec<u32>]) -> Result<(), EngineError>,
    mut one_by_one: impl FnMut(&[Vec<u32>]) -> Result<(), EngineError>,
) -> Result<(Vec<f64>, Vec<f64>), EngineError> {
    let (mut packed_times, mut one_by_one_times) = (Vec::new(), Vec::new());
    for epoch in 1..=warmup + epochs {
        let orders: Vec<Vec<u32>> = seeds
            .iter()
            .map(|&s| epoch_order(s, epoch, train_rows))
            .collect();
        let start = Instant::now();
        packed(&orders)?;
        let packed_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        one_by_one(&orders)?;
        if epoch > warmup {
            packed_times.push(packed_secs);
            one_by_one_times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok((packed_times, one_by_one_times))
}

fn pack_row(
    detail: String,
    models: usize,
    batch_size: usize,
    epochs: usize,
    mut packed: Vec<f64>,
    mut sequential: Vec<f64>,
    train_rows: usize,
) -> PackBenchRow {
    let range = |v: &[f64]| {
        v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        })
    };
    let (packed_min, packed_max) = range(&packed);
    let (sequential_min, sequential_max) = range(&sequential);
    let packed_median = median(&mut packed);
    let sequential_median = median(&mut sequential);
    PackBenchRow {
        detail,
        models,
        batch_size,
        epochs_measured: epochs,
        packed_median_secs: packed_median,
        packed_min_secs: packed_min,
        packed_max_secs: packed_max,
        sequential_median_secs: sequential_median,
        sequential_min_secs: sequential_min,
        sequential_max_secs: sequential_max,
        speedup: sequential_median / packed_median,
        packed_samples_per_sec: (models * train_rows) as f64 / packed_median,
    }
}
