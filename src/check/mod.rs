//! Kernel-versus-reference checks, shared by `wgtrain check` and the tests: each GPU kernel on
//! seeded random inputs of awkward sizes against the CPU path (outputs poisoned with NaN and
//! followed by a sentinel tail that must stay untouched), then one full training epoch of the
//! GPU engine against the CPU engine. Errors are reported as a fraction of each check's
//! tolerance, so 1.0 is the pass mark.

use crate::gpu::kernels::{KERNEL_TABLE, Kernel};
use crate::gpu::{GpuContext, GpuError};

mod conv;
mod engines;
mod kernels;
mod layers;
mod matmul;
mod matmul_fused;
mod rig;

use conv::{check_conv2d, check_max_pool2d};
pub use engines::{EpochCheck, check_epoch, check_packed_epoch};
use engines::{check_epochs, check_network_epoch, check_packed_network_epoch};
use kernels::{check_dropout_forward, check_gather_batch, check_softmax_xent};
use layers::{check_activation, check_update};
use matmul::{check_matmul, check_matmul_gather};
use matmul_fused::{check_matmul_softmax_xent, check_matmul_update};
pub use rig::{CheckRow, SIZES};
use rig::{Rig, cannot_run};

/// How one row of the check table ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    Pass,
    /// The GPU disagreed with the CPU reference beyond tolerance (the worst case).
    Fail(String),
    /// The check could not run at all (no device, a missing limit).
    CannotRun(String),
}

/// The head of `wgtrain check`'s table ([`CheckRow::table_line`] gives its rows).
pub const TABLE_HEAD: &str = "| adapter | check | cases | max rel. error | max error / tolerance | result |\n|---|---|---|---|---|---|";

impl CheckRow {
    /// The row's line in `wgtrain check`'s table, run on `adapter`.
    pub fn table_line(&self, adapter: &str) -> String {
        let result = match self.outcome() {
            RowOutcome::Pass => "pass".to_string(),
            RowOutcome::Fail(detail) => format!("FAIL: {detail}"),
            RowOutcome::CannotRun(why) => format!("cannot run: {why}"),
        };
        format!(
            "| {adapter} | {} | {} | {:.1e} | {:.3} | {result} |",
            self.check, self.cases, self.max_rel_error, self.worst
        )
    }

    pub fn outcome(&self) -> RowOutcome {
        match &self.error {
            Some(e) => RowOutcome::CannotRun(e.clone()),
            None if self.passed() => RowOutcome::Pass,
            None => RowOutcome::Fail(self.detail.clone()),
        }
    }
}

/// Why `wgtrain check` fails.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "no GPU adapters found (hint: `apt-get install mesa-vulkan-drivers` gives lavapipe on Linux)"
    )]
    NoAdapters,
    #[error("no check could run on any adapter")]
    NothingRan,
    #[error("{0} check(s) failed: the GPU disagrees with the CPU reference beyond tolerance")]
    Failed(usize),
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// The check's policy: a mismatch fails it; an adapter or kernel that cannot run at all is
/// listed, and fails it only when nothing ran anywhere.
#[derive(Debug, Default, Clone)]
pub struct CheckTally {
    pub failures: usize,
    pub ran: usize,
    /// `adapter` or `adapter / check` for what could not run.
    pub unrunnable: Vec<String>,
    /// Adapters whose device opened.
    pub adapters: usize,
}

impl CheckTally {
    /// Counts `row`, run on `adapter`.
    pub fn count(&mut self, adapter: &str, row: &CheckRow) {
        match row.outcome() {
            RowOutcome::Pass => self.ran += 1,
            RowOutcome::Fail(_) => {
                self.ran += 1;
                self.failures += 1;
            }
            RowOutcome::CannotRun(_) => self.unrunnable.push(format!("{adapter} / {}", row.check)),
        }
    }

    /// Counts an adapter whose device opened.
    pub fn opened(&mut self) {
        self.adapters += 1;
    }

    /// The one-line verdict: "20 of 20 checks passed on 2 adapters".
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} of {} checks passed on {} adapter{}",
            self.ran - self.failures,
            self.ran,
            self.adapters,
            if self.adapters == 1 { "" } else { "s" }
        );
        if !self.unrunnable.is_empty() {
            line.push_str(&format!("; {} could not run", self.unrunnable.len()));
        }
        line
    }

    /// Counts an adapter whose device could not be opened.
    pub fn unopened(&mut self, adapter: &str) {
        self.unrunnable.push(adapter.to_string());
    }

    pub fn verdict(&self) -> Result<(), CheckError> {
        if self.ran == 0 {
            return Err(CheckError::NothingRan);
        }
        if self.failures > 0 {
            return Err(CheckError::Failed(self.failures));
        }
        Ok(())
    }
}

/// An adapter's opened device, or its name and why it did not open.
pub type AdapterToCheck = Result<GpuContext, (String, String)>;

/// The devices to check: every adapter found (`all`, on `choice`'s backend, software ones
/// included), each opened or (name, why not); or the one `choice` picks.
pub fn adapters_to_check(
    all: bool,
    choice: &crate::gpu::AdapterChoice,
) -> Result<Vec<AdapterToCheck>, CheckError> {
    let contexts: Vec<_> = if all {
        pollster::block_on(crate::gpu::list_adapters(choice.backend.as_deref()))?
            .into_iter()
            .map(|(s, _)| {
                let one = crate::gpu::AdapterChoice {
                    // By index: two adapters may share a name (two of one GPU model).
                    backend: Some(s.backend.clone()),
                    adapter: Some(s.index.to_string()),
                    allow_software: true,
                };
                pollster::block_on(GpuContext::open(&one))
                    .map_err(|e| (format!("{} ({})", s.name, s.backend), e.to_string()))
            })
            .collect()
    } else {
        vec![Ok(pollster::block_on(GpuContext::open(choice))?)]
    };
    if contexts.is_empty() {
        return Err(CheckError::NoAdapters);
    }
    Ok(contexts)
}

/// The WGSL entry points with a check of their own, by name (`check_<kernel>` below), in
/// [`KERNEL_TABLE`] order: `wgtrain check` runs them all, and each has a test of its name
/// (`<kernel>_matches_the_cpu_reference`). batch_stats (a split's loss and accuracy sums) is
/// checked by softmax_xent's check, which runs it on the rows it wrote.
pub fn kernels() -> Vec<&'static str> {
    (KERNEL_TABLE.iter())
        .filter(|row| row.0 != Kernel::BatchStats)
        .map(|row| row.1)
        .collect()
}

/// The check of one WGSL entry point (a name of [`kernels`]) on one adapter: its rows.
pub fn run_kernel(ctx: &GpuContext, kernel: &str) -> Vec<CheckRow> {
    match Rig::new(ctx) {
        Ok(rig) => pollster::block_on(kernel_rows(&rig, kernel)),
        Err(e) => vec![cannot_run("build pipelines", e)],
    }
}

async fn kernel_rows(rig: &Rig<'_>, kernel: &str) -> Vec<CheckRow> {
    let one = |r: Result<CheckRow, GpuError>| vec![r.unwrap_or_else(|e| cannot_run(kernel, e))];
    match kernel {
        "gather_batch" => one(check_gather_batch(rig).await),
        "activation_forward" => one(check_activation(rig, false).await),
        "activation_backward" => one(check_activation(rig, true).await),
        "dropout_forward" => one(check_dropout_forward(rig).await),
        "conv2d_forward" => one(check_conv2d(rig, Kernel::Conv2dForward).await),
        "conv2d_backward_input" => one(check_conv2d(rig, Kernel::Conv2dBackwardInput).await),
        "conv2d_backward_params" => one(check_conv2d(rig, Kernel::Conv2dBackwardParams).await),
        "max_pool2d_forward" => one(check_max_pool2d(rig, Kernel::MaxPool2dForward).await),
        "max_pool2d_backward" => one(check_max_pool2d(rig, Kernel::MaxPool2dBackward).await),
        "update" => one(check_update(rig).await),
        "matmul" => check_matmul(rig)
            .await
            .unwrap_or_else(|e| vec![cannot_run(kernel, e)]),
        "softmax_xent" => one(check_softmax_xent(rig).await),
        "matmul_gather" => one(check_matmul_gather(rig).await),
        "matmul_softmax_xent" => one(check_matmul_softmax_xent(rig).await),
        "matmul_update" => one(check_matmul_update(rig).await),
        other => vec![cannot_run(other, "no such kernel check")],
    }
}

/// Every check on one adapter, in table order: each kernel, then whole epochs. Awaited: the
/// CLI waits on it, a browser page awaits it.
pub async fn run_all(ctx: &GpuContext) -> Vec<CheckRow> {
    let rig = match Rig::new(ctx) {
        Ok(r) => r,
        Err(e) => return vec![cannot_run("build pipelines", e)],
    };
    let mut rows = Vec::new();
    for kernel in kernels() {
        rows.extend(kernel_rows(&rig, kernel).await);
    }
    rows.extend(run_engines(ctx).await);
    rows
}

/// The whole-epoch checks: the GPU engine against the CPU engine, and packed models against
/// each trained alone.
pub async fn run_engines(ctx: &GpuContext) -> Vec<CheckRow> {
    vec![
        check_epochs(ctx).await,
        check_network_epoch(ctx).await,
        check_packed_network_epoch(ctx)
            .await
            .unwrap_or_else(|e| cannot_run("packed network epoch", e)),
        check_packed_epoch(ctx)
            .await
            .unwrap_or_else(|e| cannot_run("packed epoch", e)),
    ]
}
