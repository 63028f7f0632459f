//! The wgpu device layer: instance, adapter choice (by backend, index or name; wgpu's
//! WGPU_BACKEND / WGPU_ADAPTER_NAME honoured), device with the limits we need, error scopes.

use std::sync::Arc;

use super::tuning::{Tuning, TuningFile, TuningOverrides};

/// Errors from the GPU layer; each names what failed and, where known, what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found{backend} (hint: install a driver; on Linux `apt-get install mesa-vulkan-drivers` gives lavapipe, a CPU Vulkan adapter)"
    )]
    NoAdapter { backend: String },
    #[error("no adapter matches --adapter {query:?}; found: {available}")]
    AdapterNotFound { query: String, available: String },
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

/// How to choose an adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterChoice {
    /// `vulkan`, `metal`, `dx12`, `gl`; `None` takes every backend (or WGPU_BACKEND).
    pub backend: Option<String>,
    /// An index into `wgtrain devices`' list, or a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Accept CPU adapters (lavapipe, llvmpipe, WARP) when no real GPU matches.
    pub allow_software: bool,
}

/// What `wgtrain devices` prints for one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub timestamp_queries: bool,
    pub software: bool,
}

fn parse_backends(backend: Option<&str>) -> Result<wgpu::Backends, GpuError> {
    Ok(match backend.map(str::to_ascii_lowercase).as_deref() {
        None => backends_from_env()?.unwrap_or(wgpu::Backends::all()),
        Some("all") => wgpu::Backends::all(),
        Some("primary") => wgpu::Backends::PRIMARY,
        Some("vulkan") | Some("vk") => wgpu::Backends::VULKAN,
        Some("metal") => wgpu::Backends::METAL,
        Some("dx12") | Some("d3d12") => wgpu::Backends::DX12,
        Some("gl") | Some("gles") | Some("opengl") => wgpu::Backends::GL,
        Some(other) => return Err(GpuError::UnknownBackend(other.to_string())),
    })
}

/// WGPU_BACKEND (comma-separated backend names, as wgpu reads it), checked: wgpu itself skips
/// a name it does not know, so a typo (`vulkna`) would find no adapter without saying why.
fn backends_from_env() -> Result<Option<wgpu::Backends>, GpuError> {
    let Ok(value) = std::env::var("WGPU_BACKEND") else {
        return Ok(None);
    };
    let bad = || GpuError::BadSetting {
        variable: "WGPU_BACKEND",
        expected: "vulkan, metal, dx12 or gl (comma-separated)",
        got: value.clone(),
    };
    let mut backends = wgpu::Backends::empty();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        backends |= parse_backends(Some(name)).map_err(|_| bad())?;
    }
    if backends.is_empty() {
        return Err(bad());
    }
    Ok(Some(backends))
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// Every adapter wgpu finds for the chosen backend, in a stable order.
pub fn list_adapters(
    backend: Option<&str>,
) -> Result<Vec<(AdapterSummary, wgpu::Adapter)>, GpuError> {
    let backends = parse_backends(backend)?;
    let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    Ok(adapters
        .into_iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            let limits = adapter.limits();
            let summary = AdapterSummary {
                index,
                name: info.name.clone(),
                backend: format!("{:?}", info.backend).to_lowercase(),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                timestamp_queries: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
                software: is_software(&info),
            };
            (summary, adapter)
        })
        .collect())
}

/// An open device: what every GPU engine and check holds.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: Arc<AdapterSummary>,
    pub limits: wgpu::Limits,
    /// Chosen for this adapter when it was opened; engines built on this context follow it.
    pub tuning: Tuning,
    /// Set by wgpu's device-lost callback: why the device went away.
    lost: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({} on {})", self.info.name, self.info.backend)
    }
}

/// Invocations per workgroup the kernels need (matmul's 16×16). Their workgroup memory depends
/// on the tuning (`Tuning::workgroup_storage_bytes`).
const NEEDED_INVOCATIONS: u32 = 256;
/// Storage buffers one entry point binds at most (matmul_update and matmul_gather: five; every
/// operand lives in the one workspace buffer), within WebGPU's default of eight.
const NEEDED_STORAGE_BUFFERS: u32 = 5;

/// Caps the largest storage binding wgtrain uses (see [`GpuContext::open`]).
const MAX_STORAGE_BINDING_VAR: &str = "WGTRAIN_GPU_MAX_STORAGE_BINDING";

impl GpuContext {
    /// Opens the adapter `choice` picks. Real GPUs come before software ones; a software
    /// adapter is taken only when `allow_software` is set.
    pub fn open(choice: &AdapterChoice) -> Result<Self, GpuError> {
        // A mistyped setting or a broken tuning file is reported first, whatever adapters there
        // are.
        let overrides = TuningOverrides::from_env()?;
        let binding_cap = match std::env::var(MAX_STORAGE_BINDING_VAR) {
            Ok(value) => Some(
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| GpuError::BadSetting {
                        variable: MAX_STORAGE_BINDING_VAR,
                        expected: "a whole number of bytes",
                        got: value.clone(),
                    })?,
            ),
            Err(_) => None,
        };
        let tuned = TuningFile::load_configured()?;
        // Without a backend named, look at the primary backends (Vulkan, Metal, DX12) first and
        // at GL only when they have nothing: GL's EGL probe is slow and noisy on headless Linux.
        let mut adapters = match choice.backend.as_deref() {
            Some(b) => list_adapters(Some(b))?,
            None if std::env::var_os("WGPU_BACKEND").is_some() => list_adapters(None)?,
            None => {
                let primary = list_adapters(Some("primary"))?;
                if primary.is_empty() {
                    list_adapters(Some("gl"))?
                } else {
                    primary
                }
            }
        };
        let available = || {
            adapters
                .iter()
                .map(|(s, _)| format!("{}: {} ({})", s.index, s.name, s.backend))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let query = choice
            .adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let picked = match &query {
            Some(q) => {
                let position = match q.parse::<usize>() {
                    Ok(i) => adapters.iter().position(|(s, _)| s.index == i),
                    Err(_) => {
                        let q = q.to_lowercase();
                        adapters
                            .iter()
                            .position(|(s, _)| s.name.to_lowercase().contains(&q))
                    }
                };
                position.ok_or_else(|| GpuError::AdapterNotFound {
                    query: q.clone(),
                    available: available(),
                })?
            }
            None => {
                let rank = |s: &AdapterSummary| match s.device_type.as_str() {
                    "DiscreteGpu" => 0,
                    "IntegratedGpu" => 1,
                    "VirtualGpu" => 2,
                    "Other" => 3,
                    _ => 4,
                };
                let best = adapters
                    .iter()
                    .enumerate()
                    .filter(|(_, (s, _))| choice.allow_software || !s.software)
                    .min_by_key(|(i, (s, _))| (rank(s), *i))
                    .map(|(i, _)| i);
                best.ok_or_else(|| GpuError::NoAdapter {
                    backend: match (&choice.backend, adapters.is_empty()) {
                        (Some(b), _) => format!(" for backend {b}"),
                        (None, false) => {
                            " (only software adapters, and this choice takes none)".into()
                        }
                        (None, true) => String::new(),
                    },
                })?
            }
        };
        let (summary, adapter) = adapters.swap_remove(picked);
        let tuning = tuned.tuning_for(&summary, &overrides);
        let mut limits = adapter.limits();
        // WGTRAIN_GPU_MAX_STORAGE_BINDING caps the largest storage binding wgtrain will use, so a
        // big GPU can show how a run behaves on a small one (and the tests can provoke the
        // limit error on any adapter). It can only lower the adapter's own limit.
        if let Some(cap) = binding_cap {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        for (limit, needed, available) in [
            (
                "max_compute_workgroup_storage_size",
                tuning.workgroup_storage_bytes() as u64,
                limits.max_compute_workgroup_storage_size as u64,
            ),
            (
                "max_compute_invocations_per_workgroup",
                NEEDED_INVOCATIONS as u64,
                limits.max_compute_invocations_per_workgroup as u64,
            ),
            (
                "max_storage_buffers_per_shader_stage",
                NEEDED_STORAGE_BUFFERS as u64,
                limits.max_storage_buffers_per_shader_stage as u64,
            ),
        ] {
            if available < needed {
                return Err(GpuError::Limit {
                    adapter: summary.name.clone(),
                    limit,
                    needed,
                    available,
                });
            }
        }
        // Ask for what the adapter has (within its own limits), not the WebGPU defaults: the
        // resident dataset wants the largest storage bindings the adapter allows.
        // Timestamps only serve `bench --profile`; take them where the adapter has them.
        let timestamps =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: adapter.features() & timestamps,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            GpuError::RequestDevice {
                adapter: summary.name.clone(),
                message: e.to_string(),
            }
        })?;
        // The default handler panics; errors we care about are caught with scopes, and any
        // other is reported on stderr rather than aborting the process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| eprintln!("wgpu: {e}")));
        let lost = Arc::new(std::sync::Mutex::new(None));
        let flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = flag.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        Ok(GpuContext {
            device,
            queue,
            info: Arc::new(summary),
            limits,
            tuning,
            lost,
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes and reports what they caught.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match (o, v) {
            (Some(e), _) => Err(GpuError::Device {
                what: what.to_string(),
                message: format!("out of memory: {e}"),
            }),
            (None, Some(e)) => Err(GpuError::Device {
                what: what.to_string(),
                message: e.to_string(),
            }),
            (None, None) => Ok(value),
        }
    }

    /// `Err(DeviceLost)` once wgpu has reported the device lost.
    pub fn check_lost(&self) -> Result<(), GpuError> {
        match self.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Err(GpuError::DeviceLost {
                adapter: self.info.name.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// One line naming the adapter.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }
}
