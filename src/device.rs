//! Choosing and building an engine, above both backends: `--device` resolved to an
//! [`EngineKind`] (and why `auto` took the CPU), the memory a model needs on it checked against
//! what the host offers, and the engine built for a model.

use std::sync::Arc;

use crate::engine::{Engine, EngineError};
use crate::model::{Network, Params};

/// Where a run should train, as a user says it (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A real GPU when one opens, else the CPU (a software adapter only when named).
    Auto,
    Cpu,
    /// A GPU, software adapters included.
    Gpu,
}

/// The engine a [`DeviceChoice`] resolved to.
#[derive(Debug, Clone)]
pub struct ChosenEngine {
    pub kind: EngineKind,
    /// Why `Auto` took the CPU: the GPU's own error.
    pub fell_back: Option<crate::gpu::GpuError>,
}

impl EngineKind {
    /// Resolves `device` on the adapter `adapter` names (its `allow_software` is set here),
    /// with `threads` for the CPU. `Auto` falls back to the CPU when no GPU opens, and says
    /// why; a mistyped setting (a tuning variable, the tuning file) is the user's to fix,
    /// and a GPU a scheduler assigned must be found: neither is a reason to train elsewhere.
    pub fn choose(
        device: DeviceChoice,
        adapter: &crate::gpu::AdapterChoice,
        threads: usize,
    ) -> Result<ChosenEngine, crate::gpu::GpuError> {
        use crate::gpu::{GpuContext, GpuError};
        let gpu = |allow_software| {
            let choice = crate::gpu::AdapterChoice {
                allow_software,
                ..adapter.clone()
            };
            pollster::block_on(GpuContext::open(&choice)).map(|context| EngineKind::Gpu {
                context: Box::new(context),
            })
        };
        let chosen = |kind, fell_back| ChosenEngine { kind, fell_back };
        match device {
            DeviceChoice::Cpu => Ok(chosen(EngineKind::Cpu { threads }, None)),
            DeviceChoice::Gpu => Ok(chosen(gpu(true)?, None)),
            DeviceChoice::Auto => match gpu(adapter.adapter.is_some()) {
                Ok(kind) => Ok(chosen(kind, None)),
                // A GPU the scheduler gave this task and wgpu cannot find is no reason to
                // train on the CPU either: the task asked for a GPU.
                Err(
                    e @ (GpuError::BadSetting { .. }
                    | GpuError::TuningFile { .. }
                    | GpuError::AssignedGpuMissing { .. }),
                ) => Err(e),
                Err(e) => Ok(chosen(EngineKind::Cpu { threads }, Some(e))),
            },
        }
    }
}

/// Which engine to build (what `--device` resolves to).
#[derive(Debug, Clone)]
pub enum EngineKind {
    /// The CPU path; `threads = 0` uses every core.
    Cpu { threads: usize },
    /// The wgpu path on an opened device.
    Gpu {
        context: Box<crate::gpu::GpuContext>,
    },
    /// One seat of a GPU pack: the run trains in the same dispatches as the pack's others.
    GpuSeat { seat: Arc<crate::gpu::PackSeat> },
}

impl EngineKind {
    /// Fails, before anything is allocated, when `model` trained at `batch_size` rows a step
    /// cannot fit this machine's memory: what the engine holds (on the CPU) and the host's
    /// copies of the parameters (the caller's, and the checkpoint's four: parameters, best, two
    /// moments), against the memory the OS reports available
    /// ([`crate::host::available_memory_bytes`]: a container's limit counts). Without this, an
    /// absurd config (`layers = [784, 1000000, 10]`) aborts in the allocator or is killed by
    /// the OOM killer instead of getting an error. Where the OS reports nothing, nothing is
    /// checked. (A GPU engine checks its device's limits itself when it is built.)
    pub fn check_memory(&self, model: &Network, batch_size: usize) -> Result<(), EngineError> {
        self.check_memory_within(model, batch_size, crate::host::available_memory_bytes())
    }

    /// Bytes of host memory a run of `model` on this engine certainly holds: the host copies
    /// of the parameters (and best, velocity, Adam moments) and, on the CPU, the engine's own.
    pub fn memory_needed(&self, model: &Network, batch_size: usize) -> u128 {
        let host_copies = 5 * std::mem::size_of::<f32>() as u128 * model.param_count as u128;
        match self {
            EngineKind::Cpu { threads } => {
                let threads = crate::host::resolve_threads(*threads);
                host_copies.saturating_add(crate::cpu::engine_bytes_for(model, threads, batch_size))
            }
            EngineKind::Gpu { .. } | EngineKind::GpuSeat { .. } => host_copies,
        }
    }

    /// [`EngineKind::check_memory`] against `available` bytes (`None`: unknown, no check).
    pub fn check_memory_within(
        &self,
        model: &Network,
        batch_size: usize,
        available: Option<u64>,
    ) -> Result<(), EngineError> {
        self.refuse_beyond(
            model.describe(),
            model.param_count as u128,
            self.memory_needed(model, batch_size),
            available,
        )
    }

    /// The error for `model` of `params` parameters needing `needed` bytes, when more than
    /// `available`.
    fn refuse_beyond(
        &self,
        model: String,
        params: u128,
        needed: u128,
        available: Option<u64>,
    ) -> Result<(), EngineError> {
        match available {
            Some(available) if needed > available as u128 => Err(EngineError::OutOfMemory {
                model,
                params,
                needed_gb: needed as f64 / 1e9,
                available_gb: available as f64 / 1e9,
                device: self.device_name(),
                hint: match self {
                    EngineKind::Cpu { .. } => "narrower layers, or fewer --threads",
                    _ => "narrower layers",
                },
            }),
            _ => Ok(()),
        }
    }

    /// Builds the engine for `params`, trained at up to `batch_size` rows per step.
    pub fn build(
        &self,
        params: &Params,
        batch_size: usize,
    ) -> Result<Box<dyn Engine>, EngineError> {
        match self {
            EngineKind::Cpu { threads } => Ok(Box::new(crate::cpu::CpuEngine::new(
                params, *threads, batch_size,
            )?)),
            EngineKind::Gpu { context } => Ok(Box::new(crate::gpu::GpuEngine::new(
                (**context).clone(),
                params,
                batch_size,
            )?)),
            EngineKind::GpuSeat { seat } => seat.engine(params, batch_size),
        }
    }

    /// The GPU adapter, for GPU engines.
    pub fn adapter(&self) -> Option<&crate::gpu::AdapterSummary> {
        match self {
            EngineKind::Cpu { .. } => None,
            EngineKind::Gpu { context } => Some(&context.info),
            EngineKind::GpuSeat { seat } => Some(seat.adapter()),
        }
    }

    /// The name written to `summary.json`'s `device`.
    pub fn device_name(&self) -> &'static str {
        match self {
            EngineKind::Cpu { .. } => "cpu",
            EngineKind::Gpu { .. } | EngineKind::GpuSeat { .. } => "gpu",
        }
    }
}
