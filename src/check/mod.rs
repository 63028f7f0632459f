//! Kernel-versus-reference checks, shared by `wgtrain check` and the tests: each GPU kernel on
//! seeded random inputs of awkward sizes against the CPU path (outputs poisoned with NaN and
//! followed by a sentinel tail that must stay untouched), then one full training epoch of the
//! GPU engine against the CPU engine. Errors are reported as a fraction of each check's
//! tolerance, so 1.0 is the pass mark.

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{GradientReduction, Hyper, Optimizer, TrainConfig};
use crate::cpu::{CpuEngine, ops};
use crate::data::{Dataset, Split, epoch_order};
use crate::engine::Engine;
use crate::gpu::buffers::{bind, staging, storage_init, submit_for_read, uniform_init};
use crate::gpu::kernels::{
    ConvEntry, Kernels, MATMUL_BINDINGS, MATMUL_GATHER_BINDINGS, MATMUL_UPDATE_BINDINGS,
    MATMUL_XENT_BINDINGS, StepRef, matmul_bind_group,
};
use crate::gpu::uniforms::{
    Conv2dParams, DropoutParams, GatherParams, MatmulParams, ModelHyper, Pool2dParams, STEP_STRIDE,
    StepUniform, XentParams, update_tables,
};
use crate::gpu::{GpuContext, GpuEngine, GpuError};
use crate::model::{Activation, Init, LayerView, Params, layer_views};

mod conv;
mod engines;
mod kernels;
mod layers;
mod matmul;
mod matmul_fused;

use conv::{check_conv2d, check_max_pool2d};
pub use engines::{EpochCheck, check_epoch, check_packed_epoch};
use engines::{check_epochs, check_network_epoch, check_packed_network_epoch};
use kernels::{check_dropout_forward, check_gather_batch, check_softmax_xent};
use layers::{check_activation, check_update};
use matmul::{check_matmul, check_matmul_gather};
use matmul_fused::{check_matmul_softmax_xent, check_matmul_update};

/// How one row of the check table ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    Pass,
    /// The GPU disagreed with the CPU reference beyond tolerance (the worst case).
    Fail(String),
    /// The check could not run at all (no device, a missing limit).
    CannotRun(String),
}

impl CheckRow {
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

/// Elements after every output that a kernel must not touch (WebGPU may clamp an
/// out-of-bounds write into the binding instead of faulting).
const SENTINEL: usize = 64;

/// Sizes every kernel is checked at: 1, primes, tile edges ±1, and the paper's widths.
pub const SIZES: &[usize] = &[1, 7, 33, 128, 129, 784];

/// One row of the check table.
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub check: String,
    pub cases: usize,
    /// Largest error over all cases as a fraction of its tolerance (≤ 1 passes).
    pub worst: f64,
    /// Largest relative error of a case, ‖got − want‖∞ / ‖want‖∞ (NaN when nothing compared).
    pub max_rel_error: f64,
    /// The worst case, for a failure report.
    pub detail: String,
    /// Set when the check could not run at all.
    pub error: Option<String>,
}

impl CheckRow {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.worst <= 1.0
    }

    /// Counts a case whose error is `ratio` of its tolerance (NaN counts as infinite) and
    /// `rel` relative: the worst case so far keeps its `detail()`.
    pub fn note(&mut self, ratio: f64, rel: f64, detail: impl FnOnce() -> String) {
        self.max_rel_error = self.max_rel_error.max(rel);
        if ratio > self.worst || ratio.is_nan() {
            self.worst = if ratio.is_nan() { f64::INFINITY } else { ratio };
            self.detail = detail();
        }
    }
}

/// Accumulates the worst (error / tolerance) over many cases.
#[derive(Default)]
struct Worst {
    ratio: f64,
    rel: f64,
    detail: String,
    cases: usize,
}

impl Worst {
    /// Compares `got` to `want` with per-element tolerance `tol(i, want)`; NaN never passes.
    fn compare(&mut self, case: &str, got: &[f32], want: &[f64], tol: impl Fn(usize, f64) -> f64) {
        self.cases += 1;
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (&g, &w) in got.iter().zip(want) {
            diff = diff.max(if g.is_nan() {
                f64::INFINITY
            } else {
                (g as f64 - w).abs()
            });
            norm = norm.max(w.abs());
        }
        if norm > 0.0 || diff > 0.0 {
            self.rel = self.rel.max(diff / norm.max(f64::MIN_POSITIVE));
        }
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let t = tol(i, w);
            let ratio = if g.is_nan() {
                f64::INFINITY
            } else {
                (g as f64 - w).abs() / t
            };
            if ratio > self.ratio || (ratio.is_infinite() && self.ratio.is_finite()) {
                self.ratio = ratio;
                self.detail = format!("{case}: element {i} got {g} want {w} (tolerance {t:.2e})");
            }
        }
        if got.len() < want.len() {
            self.ratio = f64::INFINITY;
            self.detail = format!("{case}: {} outputs, expected {}", got.len(), want.len());
        }
    }

    /// The sentinel tail after an output must still hold the poison.
    fn untouched(&mut self, case: &str, tail: &[f32]) {
        if let Some(i) = tail.iter().position(|v| !v.is_nan()) {
            self.ratio = f64::INFINITY;
            self.detail = format!(
                "{case}: wrote past the end of its output (sentinel {i} = {})",
                tail[i]
            );
        }
    }

    fn row(self, check: &str) -> CheckRow {
        CheckRow {
            check: check.into(),
            cases: self.cases,
            worst: self.ratio,
            max_rel_error: self.rel,
            detail: self.detail,
            error: None,
        }
    }
}

/// Buffers and a one-slot step uniform for running single kernels.
struct Rig<'a> {
    ctx: &'a GpuContext,
    kernels: Kernels,
    step: wgpu::Buffer,
    step_group: wgpu::BindGroup,
}

impl<'a> Rig<'a> {
    fn new(ctx: &'a GpuContext) -> Result<Self, GpuError> {
        let kernels = Kernels::new(ctx)?;
        let step = uniform_init(ctx, "step", &[0u8; STEP_STRIDE as usize])?;
        let step_group = kernels.step_group(ctx, &step);
        Ok(Rig {
            ctx,
            kernels,
            step,
            step_group,
        })
    }

    fn f32s(&self, label: &str, v: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        storage_init(self.ctx, label, bytemuck::cast_slice(v))
    }

    /// A one-model `model_hyper` buffer that names only the hidden activation, which is all
    /// the single-kernel checks read from it.
    fn hidden_activation(&self, activation: Activation) -> Result<wgpu::Buffer, GpuError> {
        let model = ModelHyper {
            activation: crate::gpu::uniforms::activation_code(activation),
            ..Default::default()
        };
        storage_init(self.ctx, "model_hyper", bytemuck::bytes_of(&model))
    }

    /// An output of `len` elements poisoned with NaN, plus the sentinel tail.
    fn poisoned(&self, label: &str, len: usize) -> Result<wgpu::Buffer, GpuError> {
        self.f32s(label, &vec![f32::NAN; len + SENTINEL])
    }

    /// Runs `encode` with the step uniform set to `step`, then reads `buffer` back whole.
    async fn run(
        &self,
        step: StepUniform,
        buffer: &wgpu::Buffer,
        encode: impl FnOnce(&Kernels, &mut wgpu::ComputePass<'_>, StepRef<'_>),
    ) -> Result<Vec<f32>, GpuError> {
        self.ctx
            .queue
            .write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        let out = staging(self.ctx, "check_staging", buffer.size())?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let step = StepRef {
                group: &self.step_group,
                slot: 0,
                models: 1,
            };
            encode(&self.kernels, &mut pass, step);
        }
        encoder.copy_buffer_to_buffer(buffer, 0, &out, 0, buffer.size());
        let raw = self
            .ctx
            .scoped("check", || {
                submit_for_read(self.ctx, encoder, &out, buffer.size())
            })??
            .await?;
        Ok(bytemuck::cast_slice(&raw).to_vec())
    }
}

/// One workspace for a single-kernel check, built region by region: inputs as given, outputs
/// poisoned with NaN and followed by the sentinel tail. Offsets are f32 elements, as the
/// kernels' uniforms take them; the check runs one model, so its slice is the whole buffer.
#[derive(Default)]
struct Work {
    values: Vec<f32>,
}

impl Work {
    /// Appends `v` and returns where it starts.
    fn input(&mut self, v: &[f32]) -> usize {
        let at = self.values.len();
        self.values.extend_from_slice(v);
        at
    }

    /// Appends an output of `len` elements (NaN, then the sentinel tail) and returns where it
    /// starts.
    fn output(&mut self, len: usize) -> usize {
        self.input(&vec![f32::NAN; len + SENTINEL])
    }

    fn buffer(&self, rig: &Rig<'_>) -> Result<wgpu::Buffer, GpuError> {
        rig.f32s("workspace", &self.values)
    }
}

fn uniform_f32(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// `v` in f64.
fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |v| in f64: a twin run on these gives each output's Σ|aᵢbᵢ|, the dot-product bound's
/// measure (the products of magnitudes are the magnitudes of the products).
fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

/// The dot-product bound for length-k sums in f32: 2·k·ε·Σ|aᵢbᵢ|, plus a floor.
fn dot_tolerance(k: usize, abs_sum: f64) -> f64 {
    2.0 * k as f64 * f32::EPSILON as f64 * abs_sum + 1e-6
}

fn act_ref(x: f64, a: Activation) -> f64 {
    match a {
        Activation::None => x,
        Activation::Tanh => x.clamp(-15.0, 15.0).tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
    }
}

const ACTIVATIONS: [Activation; 4] = [
    Activation::None,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Relu,
];

/// The WGSL entry points with a check of their own, by name (`check_<kernel>` below), in
/// table order: `wgtrain check` runs them all, and each has a test of its name
/// (`<kernel>_matches_the_cpu_reference`). batch_stats (a split's loss and accuracy sums) is
/// checked by softmax_xent's check, which runs it on the rows it wrote.
pub const KERNELS: [&str; 15] = [
    "gather_batch",
    "activation_forward",
    "activation_backward",
    "dropout_forward",
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_params",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "update",
    "matmul",
    "softmax_xent",
    "matmul_gather",
    "matmul_softmax_xent",
    "matmul_update",
];

/// A row for a check that could not run.
fn cannot_run(name: &str, e: impl std::fmt::Display) -> CheckRow {
    CheckRow {
        max_rel_error: f64::NAN,
        check: name.into(),
        cases: 0,
        worst: 0.0,
        detail: String::new(),
        error: Some(e.to_string()),
    }
}

/// The check of one WGSL entry point (a name of [`KERNELS`]) on one adapter: its rows.
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
        "conv2d_forward" => one(check_conv2d(rig, ConvEntry::Conv2dForward).await),
        "conv2d_backward_input" => one(check_conv2d(rig, ConvEntry::Conv2dBackwardInput).await),
        "conv2d_backward_params" => one(check_conv2d(rig, ConvEntry::Conv2dBackwardParams).await),
        "max_pool2d_forward" => one(check_max_pool2d(rig, ConvEntry::MaxPool2dForward).await),
        "max_pool2d_backward" => one(check_max_pool2d(rig, ConvEntry::MaxPool2dBackward).await),
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
    for kernel in KERNELS {
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
        engines::check_packed_epoch(ctx)
            .await
            .unwrap_or_else(|e| cannot_run("packed epoch", e)),
    ]
}
