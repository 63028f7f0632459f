//! The GPU path: WGSL compute shaders (`shaders/`) on wgpu. `context` opens a device,
//! `kernels` builds the pipelines and encodes each entry point, `buffers` allocates and reads
//! back, `workspace` lays out the one buffer every kernel works in, and `packed` is the
//! scheduler that records whole epochs for K models at once, `engine` the single-model engine
//! over it.

pub mod adapter;
pub mod assigned;
pub mod buffers;
pub mod context;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod models;
pub mod network;
pub mod pack;
pub mod packed;
pub mod shaders;
pub mod tuning;
pub mod uniforms;
pub mod workspace;

pub use assigned::{ASSIGNMENT_VARIABLES, AssignedGpus};
pub use context::{
    AdapterChoice, AdapterSummary, GpuContext, GpuError, KNOWN_ADAPTERS, list_adapters,
    resolve_adapter,
};
pub use engine::GpuEngine;
pub use models::GpuModels;
pub use network::NetworkModels;
pub use pack::{GpuPack, PackSeat};
pub use packed::PackedModels;
pub use tuning::{Tuning, TuningFile};
