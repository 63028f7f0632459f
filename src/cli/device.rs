//! `--device` and its flags turned into an engine, and the notes the CLI gives about the
//! device it took.

use anyhow::{Context, Result};
use wgtrain::device::{DeviceChoice, EngineKind};

use super::args::{Device, DeviceArgs, threads_flag};

/// The engine `--device`, `--threads` and the GPU flags say, with a note where `auto` took the
/// CPU.
pub(super) fn engine_kind(on: &DeviceArgs) -> Result<EngineKind> {
    let threads = threads_flag(on.threads)?;
    let device = match on.device {
        Device::Auto => DeviceChoice::Auto,
        Device::Cpu => DeviceChoice::Cpu,
        Device::Gpu => DeviceChoice::Gpu,
    };
    let chosen = EngineKind::choose(device, &on.gpu.choice(false), threads)
        .with_context(|| format!("--device {}", device_name(on.device)))?;
    match &chosen.fell_back {
        Some(e @ wgtrain::gpu::GpuError::OnlySoftware { .. }) => {
            eprintln!("note: --device auto: training on the CPU: {e}")
        }
        Some(e) => eprintln!("note: --device auto found no usable GPU ({e}); training on the CPU"),
        None => {}
    }
    Ok(chosen.kind)
}

/// Before a long run on a software adapter, the library's note on what it is for and how
/// long it may take.
pub(super) fn note_software_adapter(engine: &EngineKind, runs: usize, flops: Option<f64>) {
    if let Some(note) = wgtrain::bench::software_adapter_note(engine, runs, flops) {
        eprintln!("note: {note}");
    }
}

fn device_name(device: Device) -> &'static str {
    match device {
        Device::Auto => "auto",
        Device::Cpu => "cpu",
        Device::Gpu => "gpu",
    }
}
