//! `wgtrain bench` as a whole: the checks before anything is timed, the CPU's GEMM peak, every
//! (batch size, device) row with its share of the floor, the GPU profiles and the packed
//! tables, and the JSON lines. It reports through a [`BenchObserver`] and prints nothing.

use std::path::PathBuf;
use std::sync::Arc;

use super::peak::{FmaPeak, GemmPeak, cpu_fma_peak, cpu_gemm_peak};
use super::rows::{
    BenchRow, Machine, PackBenchRow, bench_cpu_pack, bench_one, bench_pack, profile_gpu,
    training_only,
};
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::device::EngineKind;
use crate::engine::EngineError;
use crate::error::{Error, Result};
use crate::gpu::StepProfile;

/// Sides of the square products the CPU's GEMM peak is measured on (three, since the fastest
/// size differs between machines, and not only powers of two, whose strides alias in the
/// caches), and how many of each are timed: about a second in all on two cores.
pub const GEMM_PEAK_SIZES: [usize; 3] = [384, 768, 1024];
pub const GEMM_PEAK_RUNS: usize = 7;

/// Timings of the FMA peak (the fastest counts): a fraction of a second in all.
pub const FMA_PEAK_RUNS: usize = 5;

/// What to time.
pub struct BenchPlan<'a> {
    pub config: &'a TrainConfig,
    pub data_dir: PathBuf,
    pub kinds: &'a [EngineKind],
    pub batches: &'a [usize],
    pub warmup: usize,
    pub epochs: usize,
    /// CPU threads (0: one per core), for the GEMM peak and the CPU pack.
    pub threads: usize,
    /// Also time this many models packed against one after another.
    pub pack: Option<usize>,
    /// Also profile every kernel family on each GPU.
    pub profile: bool,
    /// The command line, recorded with the machine.
    pub command: String,
}

/// What a bench reports as it goes; every method has a do-nothing default.
pub trait BenchObserver {
    /// Before anything is timed: the machine, and the workload's training rows and FLOPs.
    fn started(&self, _machine: &Machine, _train_rows: usize, _flops_per_epoch: f64) {}
    /// The CPU's GEMM peak, its cores' FMA peak, and the epoch's floor at the GEMM peak
    /// (seconds).
    fn gemm_peak(&self, _peak: &GemmPeak, _fma: &FmaPeak, _floor_secs: f64) {}
    /// The main table starts.
    fn rows_started(&self) {}
    /// A row of the main table, with its speed relative to the CPU row of its batch size.
    fn row(&self, _row: &BenchRow, _speed_vs_cpu: Option<f64>) {}
    /// A GPU's per-kernel profile beside its row, or why it could not be taken.
    fn profile(
        &self,
        _adapter: &str,
        _row: &BenchRow,
        _train_rows: usize,
        _profile: &std::result::Result<StepProfile, EngineError>,
    ) {
    }
    /// The packed table starts (`models` models each).
    fn pack_started(&self, _models: usize) {}
    fn pack_row(&self, _row: &PackBenchRow) {}
}

/// `value` as a JSON value.
fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Usage(e.to_string()))
}

/// `bench --profile`: each GPU row's steps profiled, reported, and as JSON lines.
fn profile_lines(
    plan: &BenchPlan<'_>,
    observer: &dyn BenchObserver,
    data: &Arc<Dataset>,
    rows: &[BenchRow],
) -> Result<Vec<serde_json::Value>> {
    let (config, mut lines) = (plan.config, Vec::new());
    for (kind, row) in plan.kinds.iter().cycle().zip(rows) {
        let EngineKind::Gpu { context } = kind else {
            continue;
        };
        let profile = profile_gpu(context, config, data, row.batch_size);
        observer.profile(&context.info.name, row, data.train.len, &profile);
        if let Ok(p) = &profile {
            let mut value = json(p)?;
            value["adapter"] = context.info.name.clone().into();
            value["batch_size"] = row.batch_size.into();
            lines.push(value);
        }
    }
    Ok(lines)
}

/// `bench --pack K`: K models packed against one after another, per device and batch size,
/// reported, and as JSON lines.
fn pack_lines(
    plan: &BenchPlan<'_>,
    observer: &dyn BenchObserver,
    data: &Arc<Dataset>,
    k: usize,
) -> Result<Vec<serde_json::Value>> {
    let (config, mut lines) = (plan.config, Vec::new());
    let (warmup, epochs) = (plan.warmup, plan.epochs);
    observer.pack_started(k);
    for kind in plan.kinds {
        for &b in plan.batches {
            let r = match kind {
                EngineKind::Gpu { context } => {
                    bench_pack(context, config, data, b, k, warmup, epochs)?
                }
                _ => bench_cpu_pack(config, data, b, k, plan.threads, warmup, epochs)?,
            };
            observer.pack_row(&r);
            lines.push(json(&r)?);
        }
    }
    Ok(lines)
}

/// Runs `plan`, reporting to `observer`; returns the JSON lines (`--json`), each carrying the
/// machine.
pub fn run_bench(
    plan: &BenchPlan<'_>,
    observer: &dyn BenchObserver,
) -> Result<Vec<serde_json::Value>> {
    let config = plan.config;
    let data = Dataset::load(&plan.data_dir, config.val_fraction, config.seed)?;
    for &b in plan.batches {
        let mut c = config.clone();
        c.batch_size = b;
        c.check_against_data(data.features, data.classes, data.train.len)?;
    }
    let model = config.model_for(data.image_size, data.classes)?;
    // Before the GEMM peak is timed: a network that cannot fit fails at once.
    for kind in plan.kinds {
        for &b in plan.batches {
            kind.check_memory(&model, b)?;
        }
    }
    let data = Arc::new(training_only(data));
    let flops = model.epoch_flops(data.train.len);
    let machine = Machine::this(plan.command.clone());
    observer.started(&machine, data.train.len, flops);
    // The CPU's floor for this epoch: its FLOPs at the machine's measured GEMM peak; and
    // what the cores could do at most, which that GEMM is held to.
    let peaks = plan
        .kinds
        .iter()
        .any(|k| matches!(k, EngineKind::Cpu { .. }))
        .then(|| {
            (
                cpu_gemm_peak(&GEMM_PEAK_SIZES, plan.threads, GEMM_PEAK_RUNS),
                cpu_fma_peak(plan.threads, FMA_PEAK_RUNS),
            )
        });
    if let Some((p, fma)) = &peaks {
        observer.gemm_peak(p, fma, flops / (p.gflops * 1e9));
    }
    let mut rows = Vec::new();
    observer.rows_started();
    for &b in plan.batches {
        let mut cpu_median = None;
        for kind in plan.kinds {
            let mut row = bench_one(kind, config, &data, b, plan.warmup, plan.epochs)?;
            if row.device == "cpu" {
                cpu_median = Some(row.median_epoch_secs);
                if let Some((p, fma)) = &peaks {
                    row.share_of_floor = Some(row.gflops / p.gflops);
                    row.gemm_peak_gflops = Some(p.gflops);
                    row.share_of_fma_peak = Some(row.gflops / fma.gflops);
                    row.fma_peak_gflops = Some(fma.gflops);
                }
            }
            observer.row(&row, cpu_median.map(|c| c / row.median_epoch_secs));
            rows.push(row);
        }
    }
    let mut lines: Vec<serde_json::Value> = rows.iter().map(json).collect::<Result<_>>()?;
    if plan.profile {
        lines.extend(profile_lines(plan, observer, &data, &rows)?);
    }
    if let Some(k) = plan.pack {
        lines.extend(pack_lines(plan, observer, &data, k)?);
    }
    let machine = json(&machine)?;
    for line in &mut lines {
        line["machine"] = machine.clone();
    }
    Ok(lines)
}
