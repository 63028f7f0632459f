//! A bench's tables as text: the observer `wgtrain bench` prints through, each line handed to
//! a sink as the library reports the rows it measured.

use super::peak::{FmaPeak, GemmPeak};
use super::plan::{BenchObserver, GEMM_PEAK_SIZES};
use super::rows::{BenchRow, Machine, PackBenchRow};
use crate::config::TrainConfig;
use crate::device::EngineKind;
use crate::engine::EngineError;
use crate::gpu::StepProfile;
use crate::metrics::faster_or_slower;

/// A bench's tables, line by line into `line`.
pub struct BenchText<'a, F: Fn(&str)> {
    pub config: &'a TrainConfig,
    pub kinds: &'a [EngineKind],
    pub warmup: usize,
    pub epochs: usize,
    pub line: F,
}

impl<F: Fn(&str)> BenchObserver for BenchText<'_, F> {
    fn started(&self, machine: &Machine, train_rows: usize, flops: f64) {
        let (config, warmup, epochs) = (self.config, self.warmup, self.epochs);
        (self.line)(&machine.summary());
        for kind in self.kinds {
            if let Some(a) = kind.adapter() {
                (self.line)(&format!(
                    "adapter: {} ({}, {}), driver {}",
                    a.name, a.backend, a.device_type, a.driver
                ));
            }
        }
        (self.line)(&format!(
            "bench: {} {}, {train_rows} training rows, {:.2} GFLOP per epoch, {warmup} warm-up + {epochs} timed epochs (validation excluded)",
            config.name,
            config.model_words(),
            flops / 1e9
        ));
    }

    fn gemm_peak(&self, p: &GemmPeak, fma: &FmaPeak, floor_secs: f64) {
        (self.line)(&format!(
            "CPU f32 GEMM peak here: {:.1} GFLOP/s (the CPU path's GEMM, {} thread{}, fastest of {} products at each of {}; fastest at {n}³): floor {floor_secs:.4} s/epoch",
            p.gflops,
            p.threads,
            if p.threads == 1 { "" } else { "s" },
            p.runs,
            GEMM_PEAK_SIZES.map(|n| format!("{n}³")).join(", "),
            n = p.size,
        ));
        (self.line)(&format!(
            "CPU f32 FMA peak here: {:.1} GFLOP/s ({} FMAs of {} lanes on {} thread{}, registers only); the GEMM peak is {:.0}% of it",
            fma.gflops,
            fma.kernels,
            fma.lanes,
            fma.threads,
            if fma.threads == 1 { "" } else { "s" },
            100.0 * p.gflops / fma.gflops,
        ));
    }

    fn rows_started(&self) {
        (self.line)(
            "| device | adapter / threads | batch | median s/epoch (min–max) | samples/s | GFLOP/s | share of floor | share of FMA peak | dispatches/step | speed vs cpu |",
        );
        (self.line)("|---|---|---|---|---|---|---|---|---|---|");
    }

    fn row(&self, row: &BenchRow, speed_vs_cpu: Option<f64>) {
        (self.line)(&format!(
            "| {} | {} | {} | {:.4} ({:.4}–{:.4}) | {:.0} | {:.1} | {} | {} | {} | {} |",
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
            row.share_of_fma_peak
                .map_or("–".into(), |s| format!("{:.0}%", 100.0 * s)),
            row.dispatches_per_step
                .map_or("–".into(), |d| d.to_string()),
            match speed_vs_cpu {
                _ if row.device == "cpu" => "(the baseline)".into(),
                Some(s) => faster_or_slower(s),
                None => "–".into(),
            },
        ));
    }

    fn profile(
        &self,
        adapter: &str,
        row: &BenchRow,
        train_rows: usize,
        profile: &std::result::Result<StepProfile, EngineError>,
    ) {
        match profile {
            Ok(p) => profile_table(p, row, train_rows)
                .lines()
                .for_each(&self.line),
            Err(e) => (self.line)(&format!("\nprofile: {adapter}: {e}")),
        }
    }

    fn pack_started(&self, k: usize) {
        (self.line)(&format!(
            "\n{k} models (seeds 1–{k}), one epoch of each: packed (GPU: in the same dispatches; CPU: side by side, a share of the threads each) vs one after another"
        ));
        (self.line)(
            "| adapter | batch | packed s (min–max) | one after another s (min–max) | packed | packed samples/s |",
        );
        (self.line)("|---|---|---|---|---|---|");
    }

    fn pack_row(&self, r: &PackBenchRow) {
        (self.line)(&format!(
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
        ));
    }
}

/// The per-family table of `bench --profile`, with the wall-clock step from `row` beside it.
pub fn profile_table(p: &StepProfile, row: &BenchRow, train_rows: usize) -> String {
    let mut table = String::new();
    let mut line = |text: String| {
        table.push_str(&text);
        table.push('\n');
    };
    let wall = row.median_epoch_secs / train_rows.div_ceil(row.batch_size).max(1) as f64;
    line(format!(
        "\nprofile: {}, batch {}, the first {} steps of an epoch with a timestamp after every dispatch ({} dispatches per step, {:.4} submissions per step)",
        row.detail, row.batch_size, p.steps, p.dispatches_per_step, p.submissions_per_step
    ));
    line("| kernel family | dispatches/step | GPU µs/step | share of GPU time |".into());
    line("|---|---|---|---|".into());
    let busy: f64 = p.families.iter().map(|f| f.gpu_secs_per_step).sum();
    for f in &p.families {
        line(format!(
            "| {} | {} | {:.2} | {:.0}% |",
            f.family,
            f.dispatches_per_step,
            1e6 * f.gpu_secs_per_step,
            100.0 * f.gpu_secs_per_step / busy.max(1e-12)
        ));
    }
    line(format!(
        "| first to last timestamp | {} | {:.2} | |",
        p.dispatches_per_step,
        1e6 * p.gpu_secs_per_step
    ));
    line(format!(
        "| host recording (whole epoch, unsubmitted) | {} | {:.2} | |",
        p.dispatches_per_step,
        1e6 * p.record_secs_per_step
    ));
    line(format!(
        "| wall clock (bench median / steps) | | {:.2} | |",
        1e6 * wall
    ));
    table
}
