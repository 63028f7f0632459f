//! The GPU path: WGSL compute shaders (`shaders/`) on wgpu. `context` opens a device,
//! `kernels` builds the pipelines and encodes each entry point, `buffers` allocates and reads
//! back, `workspace` lays out the one buffer every kernel works in, `plan` is the
//! scheduler that plans a step's dispatches from a network, `models` records whole epochs of
//! them for K models at once, and `engine` is the single-model engine over a pack of one.

pub mod adapter;
pub mod assigned;
pub mod buffers;
pub mod context;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod models;
pub mod pack;
pub mod plan;
pub mod shaders;
pub mod tuning;
pub mod uniforms;
pub mod workspace;

pub use assigned::{ASSIGNMENT_VARIABLES, AssignedGpus};
pub use context::{
    AdapterChoice, AdapterSummary, GpuContext, GpuError, KNOWN_ADAPTERS, adapters_report,
    list_adapters, resolve_adapter,
};
pub use engine::GpuEngine;
pub use models::{EpochJob, GpuModels, PackSharing, StepProfile};
pub use pack::{GpuPack, PackSeat};
pub use tuning::{Tuning, TuningFile};
