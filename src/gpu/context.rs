//! The wgpu device layer: instance, adapter choice (by backend, index or name; wgpu's
//! WGPU_BACKEND / WGPU_ADAPTER_NAME honoured; else the GPU a scheduler assigned, `assigned`),
//! device with the limits we need, error scopes.

use std::sync::Arc;

pub use super::adapter::AdapterSummary;
use super::assigned::AssignedGpus;
pub use super::error::GpuError;
use super::tuning::{Tuning, TuningFile, TuningOverrides};

/// How to choose an adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterChoice {
    /// `vulkan`, `metal`, `dx12`, `gl`; `None` takes every backend (or WGPU_BACKEND).
    pub backend: Option<String>,
    /// What `wgtrain devices` prints for an adapter: its index, its name (or a
    /// case-insensitive part of it), either qualified by its backend (`vulkan:llvmpipe`,
    /// `gl:1`), or a common name ([`KNOWN_ADAPTERS`]: `lavapipe`, `swiftshader`, `warp`).
    pub adapter: Option<String>,
    /// Accept CPU adapters (lavapipe, llvmpipe, WARP) when no real GPU matches.
    pub allow_software: bool,
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

/// Every adapter wgpu finds for the chosen backend, in a stable order. An adapter's `index`
/// is its place in the list of every backend (or WGPU_BACKEND's), whichever backend is
/// asked for, so that an index `wgtrain devices` prints means one adapter everywhere.
///
/// Awaited: a native caller waits on it, a page awaits it (in a browser nothing may wait for
/// wgpu's enumeration).
pub async fn list_adapters(
    backend: Option<&str>,
) -> Result<Vec<(AdapterSummary, wgpu::Adapter)>, GpuError> {
    let wanted = parse_backends(backend)?;
    let every = parse_backends(None)?;
    let adapters = instance(every).enumerate_adapters(every).await;
    Ok(adapters
        .into_iter()
        .enumerate()
        .filter(|(_, adapter)| wanted.contains(adapter.get_info().backend.into()))
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
                pci_bus_id: info.device_pci_bus_id.clone(),
                chosen_by: None,
            };
            (summary, adapter)
        })
        .collect())
}

/// Names people type for adapters that `wgtrain devices` lists under another name:
/// (what is typed, backend, part of the name wgpu reports, what it is).
pub const KNOWN_ADAPTERS: &[(&str, &str, &str, &str)] = &[
    (
        "lavapipe",
        "vulkan",
        "llvmpipe",
        "Mesa's Vulkan CPU adapter",
    ),
    (
        "swiftshader",
        "vulkan",
        "SwiftShader",
        "Google's Vulkan CPU adapter",
    ),
    (
        "warp",
        "dx12",
        "Microsoft Basic Render Driver",
        "Windows' DX12 CPU adapter",
    ),
];

/// The position in `adapters` of the adapter `query` names: an index `wgtrain devices`
/// printed, a name or part of one (case-insensitive), either after `BACKEND:`, or one of
/// [`KNOWN_ADAPTERS`]. Where several match (Mesa names its Vulkan and GL adapters alike), the
/// first in `devices`' order is taken.
pub fn resolve_adapter(query: &str, adapters: &[AdapterSummary]) -> Result<usize, GpuError> {
    let trimmed = query.trim();
    // `vulkan:llvmpipe`; a name that merely contains a colon is left whole.
    let (mut backend, rest) = trimmed
        .split_once(':')
        .and_then(|(b, rest)| Some((Some(parse_backends(Some(b.trim())).ok()?), rest.trim())))
        .unwrap_or((None, trimmed));
    let on_backend = |s: &AdapterSummary, backend: Option<wgpu::Backends>| {
        backend.is_none_or(|b| parse_backends(Some(&s.backend)).is_ok_and(|own| b.contains(own)))
    };
    let mut meant = String::new();
    let position = match rest.parse::<usize>() {
        Ok(index) => adapters
            .iter()
            .position(|s| s.index == index && on_backend(s, backend)),
        Err(_) => {
            let mut part = rest.to_lowercase();
            if let Some((typed, known_backend, name, what)) =
                KNOWN_ADAPTERS.iter().find(|(typed, ..)| *typed == part)
            {
                meant = format!(" ({typed} is {what}, listed as \"{name}\" on {known_backend})");
                backend = backend.or(parse_backends(Some(known_backend)).ok());
                part = name.to_lowercase();
            }
            adapters
                .iter()
                .position(|s| s.name.to_lowercase().contains(&part) && on_backend(s, backend))
        }
    };
    position.ok_or_else(|| GpuError::AdapterNotFound {
        query: query.to_string(),
        meant,
        available: list_for_message(adapters),
    })
}

/// `0: llvmpipe (vulkan), 1: llvmpipe (gl)`, or `none`.
fn list_for_message(adapters: &[AdapterSummary]) -> String {
    if adapters.is_empty() {
        return "none".into();
    }
    adapters
        .iter()
        .map(|s| format!("{}: {} ({})", s.index, s.name, s.backend))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The adapter to take when none is named: a discrete GPU before an integrated one, then
/// `devices`' order (which lists Vulkan, Metal and DX12 before GL); a software adapter only
/// when `choice` allows one.
fn best_adapter(adapters: &[AdapterSummary], choice: &AdapterChoice) -> Result<usize, GpuError> {
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
        .filter(|(_, s)| choice.allow_software || !s.software)
        .min_by_key(|(i, s)| (rank(s), *i))
        .map(|(i, _)| i);
    best.ok_or_else(|| {
        if adapters.is_empty() {
            GpuError::NoAdapter {
                backend: choice
                    .backend
                    .as_ref()
                    .map(|b| format!(" for backend {b}"))
                    .unwrap_or_default(),
            }
        } else {
            // Grouped by name: Mesa gives one llvmpipe on Vulkan and one on GL.
            let mut names: Vec<(&str, Vec<&str>)> = Vec::new();
            for s in adapters {
                match names.iter_mut().find(|(name, _)| *name == s.name) {
                    Some((_, backends)) => backends.push(&s.backend),
                    None => names.push((&s.name, vec![&s.backend])),
                }
            }
            let found = names
                .iter()
                .map(|(name, backends)| format!("{name} on {}", backends.join(" and ")))
                .collect::<Vec<_>>()
                .join(", ");
            GpuError::OnlySoftware { found }
        }
    })
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
    /// In a browser: the verdicts of error scopes popped but not yet heard (nothing may wait
    /// for them where they are popped); [`GpuContext::settle`] awaits them.
    #[cfg(target_arch = "wasm32")]
    unheard_scopes: Arc<std::sync::Mutex<Vec<ScopeVerdict>>>,
}

/// What an error scope caught, once its pop resolves: `Err` names the work that failed.
#[cfg(target_arch = "wasm32")]
type ScopeVerdict = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), GpuError>>>>;

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

/// What `wgtrain devices` prints: every adapter of `backend` (all where `None`) with what
/// wgtrain knows of it and the arrangement a run there starts from, how to choose one, and
/// on a scheduler's node which of them the GPU it assigned is (docs/cluster.md).
pub async fn adapters_report(backend: Option<&str>) -> Result<String, GpuError> {
    let adapters = list_adapters(backend).await?;
    if adapters.is_empty() {
        return Ok("no adapters found (hint: `apt-get install mesa-vulkan-drivers` gives lavapipe on Linux)\n".into());
    }
    // What a GPU run on each adapter would start from: `wgtrain tune`'s choice, if any.
    let tuned = TuningFile::load_configured()?;
    let summaries: Vec<_> = adapters.into_iter().map(|(s, _)| s).collect();
    let mut report = tuned.adapters_table(&summaries);
    report.push_str("\nchoose one with --adapter INDEX, NAME (or part of it), BACKEND:NAME or BACKEND:INDEX (vulkan:llvmpipe, gl:1), or lavapipe, swiftshader, warp\n");
    if let Some(assigned) = AssignedGpus::from_env()? {
        let index = summaries[assigned.resolve(&summaries)?].index;
        report.push_str(&format!(
            "{assigned}: this process trains on adapter {index} unless --adapter names another\n"
        ));
    }
    Ok(report)
}

/// `WGTRAIN_GPU_MAX_STORAGE_BINDING`, where it is set.
fn binding_cap_from_env() -> Result<Option<u64>, GpuError> {
    let Ok(value) = std::env::var(MAX_STORAGE_BINDING_VAR) else {
        return Ok(None);
    };
    let cap = value
        .trim()
        .parse::<u64>()
        .map_err(|_| GpuError::BadSetting {
            variable: MAX_STORAGE_BINDING_VAR,
            expected: "a whole number of bytes",
            got: value.clone(),
        })?;
    Ok(Some(cap))
}

/// Which of `summaries` `choice` takes, and who chose it: named by the user, else by a
/// scheduler (the GPU a Slurm task was given), else the best there is.
fn pick_adapter(
    choice: &AdapterChoice,
    summaries: &[AdapterSummary],
) -> Result<(usize, Option<String>), GpuError> {
    let named = match &choice.adapter {
        Some(q) => Some((q.clone(), format!("--adapter {q}"))),
        None => std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|q| (q.clone(), format!("WGPU_ADAPTER_NAME={q}"))),
    };
    Ok(match named {
        Some((q, by)) => (resolve_adapter(&q, summaries)?, Some(by)),
        None => match AssignedGpus::from_env()? {
            Some(assigned) => (assigned.resolve(summaries)?, Some(assigned.to_string())),
            None => (best_adapter(summaries, choice)?, None),
        },
    })
}

/// Fails where `limits` fall short of what the kernels, arranged as `tuning` says, need.
fn check_limits(
    summary: &AdapterSummary,
    tuning: &Tuning,
    limits: &wgpu::Limits,
) -> Result<(), GpuError> {
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
    Ok(())
}

impl GpuContext {
    /// Opens the adapter `choice` picks. Real GPUs come before software ones; a software
    /// adapter is taken only when `allow_software` is set.
    ///
    /// Awaited: a native caller waits on it, a page awaits it (in a browser nothing may wait
    /// for wgpu's adapter list and device).
    pub async fn open(choice: &AdapterChoice) -> Result<Self, GpuError> {
        // A mistyped setting or a broken tuning file is reported first, whatever adapters there
        // are.
        let overrides = TuningOverrides::from_env()?;
        let binding_cap = binding_cap_from_env()?;
        let tuned = TuningFile::load_configured()?;
        let mut adapters = list_adapters(choice.backend.as_deref()).await?;
        let summaries: Vec<AdapterSummary> = adapters.iter().map(|(s, _)| s.clone()).collect();
        let (picked, chosen_by) = pick_adapter(choice, &summaries)?;
        let (mut summary, adapter) = adapters.swap_remove(picked);
        summary.chosen_by = chosen_by;
        let tuning = tuned.tuning_for(&summary, &overrides);
        let mut limits = adapter.limits();
        // WGTRAIN_GPU_MAX_STORAGE_BINDING caps the largest storage binding wgtrain will use, so a
        // big GPU can show how a run behaves on a small one (and the tests can provoke the
        // limit error on any adapter). It can only lower the adapter's own limit.
        if let Some(cap) = binding_cap {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        check_limits(&summary, &tuning, &limits)?;
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
        let (device, queue) =
            adapter
                .request_device(&desc)
                .await
                .map_err(|e| GpuError::RequestDevice {
                    adapter: summary.name.clone(),
                    message: e.to_string(),
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
            #[cfg(target_arch = "wasm32")]
            unheard_scopes: Default::default(),
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes and reports what they caught.
    /// Natively it waits for their verdict here; in a browser, where nothing may wait, the
    /// verdict is heard by the next [`GpuContext::settle`] (every read-back settles once its
    /// bytes are there), so an error still ends the work, one await later.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        // Scopes pop in reverse order, at the call; only their verdicts are awaited.
        let (validation, oom) = (validation.pop(), oom.pop());
        let what = what.to_string();
        let verdict = async move {
            match (oom.await, validation.await) {
                (Some(e), _) => Err(GpuError::Device {
                    what,
                    message: format!("out of memory: {e}"),
                }),
                (None, Some(e)) => Err(GpuError::Device {
                    what,
                    message: e.to_string(),
                }),
                (None, None) => Ok(()),
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(verdict)?;
        #[cfg(target_arch = "wasm32")]
        if let Ok(mut unheard) = self.unheard_scopes.lock() {
            unheard.push(Box::pin(verdict));
        }
        Ok(value)
    }

    /// Awaits the verdict of every error scope [`GpuContext::scoped`] left unheard (in a
    /// browser; natively there are none): the first error, else whether the device was lost.
    pub async fn settle(&self) -> Result<(), GpuError> {
        #[cfg(target_arch = "wasm32")]
        {
            let unheard = match self.unheard_scopes.lock() {
                Ok(mut unheard) => std::mem::take(&mut *unheard),
                Err(_) => Vec::new(),
            };
            for verdict in unheard {
                verdict.await?;
            }
        }
        self.check_lost()
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
