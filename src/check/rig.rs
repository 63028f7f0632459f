//! The checks' harness: a device's rig (pipelines, a workspace), seeded inputs, the worst
//! error so far against each output's tolerance, and the row a check reports. Every check
//! module imports this (and the paths re-exported here) and nothing of `check/mod.rs`.

pub(super) use std::sync::Arc;

pub(super) use rand::{RngExt, SeedableRng};
pub(super) use rand_chacha::ChaCha8Rng;

pub(super) use crate::config::{GradientReduction, Hyper, Optimizer, TrainConfig};
pub(super) use crate::cpu::{CpuEngine, ops};
pub(super) use crate::data::{Dataset, Split, epoch_order};
pub(super) use crate::engine::Engine;
pub(super) use crate::gpu::buffers::{bind, staging, storage_init, submit_for_read, uniform_init};
pub(super) use crate::gpu::kernels::{
    Kernel, Kernels, MATMUL_BINDINGS, MATMUL_GATHER_BINDINGS, MATMUL_UPDATE_BINDINGS,
    MATMUL_XENT_BINDINGS, StepRef, matmul_bind_group,
};
pub(super) use crate::gpu::uniforms::{
    Conv2dParams, DropoutParams, GatherParams, MatmulParams, ModelHyper, Pool2dParams, STEP_STRIDE,
    StepUniform, XentParams, update_tables,
};
pub(super) use crate::gpu::{GpuContext, GpuEngine, GpuError};
pub(super) use crate::model::{Activation, Init, LayerView, Params, layer_views};

/// Elements after every output that a kernel must not touch (WebGPU may clamp an
/// out-of-bounds write into the binding instead of faulting).
pub(super) const SENTINEL: usize = 64;

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
pub(super) struct Worst {
    pub(super) ratio: f64,
    pub(super) rel: f64,
    pub(super) detail: String,
    pub(super) cases: usize,
}

impl Worst {
    /// Compares `got` to `want` with per-element tolerance `tol(i, want)`; NaN never passes.
    pub(super) fn compare(
        &mut self,
        case: &str,
        got: &[f32],
        want: &[f64],
        tol: impl Fn(usize, f64) -> f64,
    ) {
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
    pub(super) fn untouched(&mut self, case: &str, tail: &[f32]) {
        if let Some(i) = tail.iter().position(|v| !v.is_nan()) {
            self.ratio = f64::INFINITY;
            self.detail = format!(
                "{case}: wrote past the end of its output (sentinel {i} = {})",
                tail[i]
            );
        }
    }

    pub(super) fn row(self, check: &str) -> CheckRow {
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
pub(super) struct Rig<'a> {
    pub(super) ctx: &'a GpuContext,
    pub(super) kernels: Kernels,
    pub(super) step: wgpu::Buffer,
    pub(super) step_group: wgpu::BindGroup,
}

impl<'a> Rig<'a> {
    pub(super) fn new(ctx: &'a GpuContext) -> Result<Self, GpuError> {
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

    pub(super) fn f32s(&self, label: &str, v: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        storage_init(self.ctx, label, bytemuck::cast_slice(v))
    }

    /// A one-model `model_hyper` buffer that names only the hidden activation, which is all
    /// the single-kernel checks read from it.
    pub(super) fn hidden_activation(
        &self,
        activation: Activation,
    ) -> Result<wgpu::Buffer, GpuError> {
        let model = ModelHyper {
            activation: crate::gpu::uniforms::activation_code(activation),
            ..Default::default()
        };
        storage_init(self.ctx, "model_hyper", bytemuck::bytes_of(&model))
    }

    /// An output of `len` elements poisoned with NaN, plus the sentinel tail.
    pub(super) fn poisoned(&self, label: &str, len: usize) -> Result<wgpu::Buffer, GpuError> {
        self.f32s(label, &vec![f32::NAN; len + SENTINEL])
    }

    /// Runs `encode` with the step uniform set to `step`, then reads `buffer` back whole.
    pub(super) async fn run(
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
pub(super) struct Work {
    pub(super) values: Vec<f32>,
}

impl Work {
    /// Appends `v` and returns where it starts.
    pub(super) fn input(&mut self, v: &[f32]) -> usize {
        let at = self.values.len();
        self.values.extend_from_slice(v);
        at
    }

    /// Appends an output of `len` elements (NaN, then the sentinel tail) and returns where it
    /// starts.
    pub(super) fn output(&mut self, len: usize) -> usize {
        self.input(&vec![f32::NAN; len + SENTINEL])
    }

    pub(super) fn buffer(&self, rig: &Rig<'_>) -> Result<wgpu::Buffer, GpuError> {
        rig.f32s("workspace", &self.values)
    }
}

pub(super) fn uniform_f32(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// `v` in f64.
pub(super) fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |v| in f64: a twin run on these gives each output's Σ|aᵢbᵢ|, the dot-product bound's
/// measure (the products of magnitudes are the magnitudes of the products).
pub(super) fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

/// The dot-product bound for length-k sums in f32: 2·k·ε·Σ|aᵢbᵢ|, plus a floor.
pub(super) fn dot_tolerance(k: usize, abs_sum: f64) -> f64 {
    2.0 * k as f64 * f32::EPSILON as f64 * abs_sum + 1e-6
}

pub(super) fn act_ref(x: f64, a: Activation) -> f64 {
    match a {
        Activation::None => x,
        Activation::Tanh => x.clamp(-15.0, 15.0).tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
    }
}

pub(super) const ACTIVATIONS: [Activation; 4] = [
    Activation::None,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Relu,
];

/// A row for a check that could not run.
pub(super) fn cannot_run(name: &str, e: impl std::fmt::Display) -> CheckRow {
    CheckRow {
        max_rel_error: f64::NAN,
        check: name.into(),
        cases: 0,
        worst: 0.0,
        detail: String::new(),
        error: Some(e.to_string()),
    }
}
