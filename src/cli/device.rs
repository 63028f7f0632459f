//! `--device` and its flags turned into an engine, and how the CLI speaks of a device: a note
//! before a long run on a software adapter, durations and speed ratios in words.

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

/// Before a long run on a software adapter (lavapipe, llvmpipe, SwiftShader, WARP), says what
/// it is for and roughly how long `runs` runs, the most arithmetic they can take (`flops`,
/// `None` where that cannot be said), will take there; work estimated under a minute goes
/// without a note.
pub(super) fn note_software_adapter(engine: &EngineKind, runs: usize, flops: Option<f64>) {
    let EngineKind::Gpu { context } = engine else {
        return;
    };
    if !context.info.software {
        return;
    }
    let how_long = match flops.map(|f| wgtrain::bench::software_adapter_secs(f, &context.info.name))
    {
        Some(s) if s < 60.0 => return,
        Some(s) => format!(
            "; {} may take up to roughly {} here",
            if runs == 1 {
                "this run".to_string()
            } else {
                format!("these {runs} runs")
            },
            duration_words(s)
        ),
        None => String::new(),
    };
    eprintln!(
        "note: {} is a software adapter: it runs the GPU kernels on the CPU, to check them rather than to train (typically about 100× slower than --device cpu){how_long}",
        context.describe()
    );
}

/// `42 s`, `17 min`, `3.5 h`.
pub(super) fn duration_words(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

fn device_name(device: Device) -> &'static str {
    match device {
        Device::Auto => "auto",
        Device::Cpu => "cpu",
        Device::Gpu => "gpu",
    }
}
