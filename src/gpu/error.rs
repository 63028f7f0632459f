//! The GPU layer's errors: each names what failed and, where known, what to do.

/// Errors from the GPU layer; each names what failed and, where known, what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found{backend} (hint: install a driver; on Linux `apt-get install mesa-vulkan-drivers` gives lavapipe, a CPU Vulkan adapter)"
    )]
    NoAdapter { backend: String },
    #[error("no adapter matches --adapter {query:?}{meant}; found: {available}")]
    AdapterNotFound {
        query: String,
        /// What a well-known name stands for (`lavapipe` is Mesa's Vulkan CPU adapter …).
        meant: String,
        available: String,
    },
    #[error(
        "the only adapters here are software ones ({found}), which run GPU kernels on the CPU far slower than the CPU path (hint: --device gpu uses one anyway, to check the GPU path)"
    )]
    OnlySoftware { found: String },
    #[error(
        "{assigned} gives this process GPU {id}, but wgpu finds {found} (hint: install the GPU's Vulkan driver where the task runs, name an adapter with --adapter, or train with --device cpu)"
    )]
    AssignedGpuMissing {
        /// `CUDA_VISIBLE_DEVICES=1`.
        assigned: String,
        id: usize,
        found: String,
    },
    #[error("unknown backend {0:?} (expected vulkan, metal, dx12 or gl)")]
    UnknownBackend(String),
    #[error("adapter {adapter}: {limit} is {available}, wgtrain needs {needed}")]
    Limit {
        adapter: String,
        limit: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("adapter {adapter}: could not open a device: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("kernel {kernel}: {message}")]
    Shader { kernel: String, message: String },
    #[error("out of GPU memory allocating {label} ({bytes} bytes)")]
    OutOfMemory { label: String, bytes: u64 },
    #[error("GPU error during {what}: {message}")]
    Device { what: String, message: String },
    #[error(
        "GPU device {adapter} was lost ({reason}) (hint: rerun with --device cpu, or update the driver)"
    )]
    DeviceLost { adapter: String, reason: String },
    #[error("{variable} must be {expected}, got {got:?}")]
    BadSetting {
        variable: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error(
        "tuning file {path}: {message} (hint: delete it, or run `wgtrain tune` again to rewrite it)"
    )]
    TuningFile { path: String, message: String },
}
