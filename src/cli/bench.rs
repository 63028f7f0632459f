//! `wgtrain bench`: the timing tables (per device and batch size, packed against one after
//! another, and the per-kernel profile).

use anyhow::{Context, Result, bail};
use wgtrain::device::{DeviceChoice, EngineKind};
use wgtrain::gpu::{GpuContext, GpuError};

use super::args::BenchArgs;

pub(super) fn bench(a: BenchArgs) -> Result<()> {
    let (warmup, epochs, pack) = (a.warmup, a.epochs, a.pack);
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if pack == Some(0) {
        bail!("--pack must be at least 1");
    }
    let threads = super::args::threads_flag(a.threads)?;
    // Before anything: a JSON path that is a directory, or in none, said in words; the file
    // itself is opened (as a shell's `>` opens it) just before timing, so that one that
    // cannot be written fails first, not after every measurement.
    if let Some(path) = &a.json
        && let Some(problem) = wgtrain::files::output_problem(path)
    {
        bail!("--json {}: {problem}", path.display());
    }
    let config = a.config.load()?;
    let batches = batch_list(a.batch_sizes.as_deref(), config.batch_size)?;
    let kinds = engine_kinds(&a.devices, threads, &a.gpu)?;
    // A software adapter asked for by name: what it is for, and roughly how long its rows
    // (every batch size, warm-up included) will take.
    let flops = wgtrain::bench::config_epoch_flops(&config, &a.config.data_dir())
        .map(|f| f * ((warmup + epochs) * batches.len()) as f64);
    for kind in &kinds {
        super::device::note_software_adapter(kind, 1, flops);
    }
    let plan = wgtrain::bench::BenchPlan {
        config: &config,
        data_dir: a.config.data_dir(),
        kinds: &kinds,
        batches: &batches,
        warmup,
        epochs,
        threads,
        pack,
        profile: a.profile,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let json = (a.json)
        .map(|path| {
            let file = wgtrain::files::create_output(&path)
                .with_context(|| format!("--json {}", path.display()))?;
            Ok::<_, anyhow::Error>((path, file))
        })
        .transpose()?;
    let text = wgtrain::bench::BenchText {
        config: &config,
        kinds: &kinds,
        warmup,
        epochs,
        line: |line: &str| println!("{line}"),
    };
    let lines = wgtrain::bench::run_bench(&plan, &text)?;
    if let Some((path, file)) = json {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        wgtrain::files::write_output(file, text.as_bytes())
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

/// `--batch-sizes`: positive whole numbers separated by commas; none given, the config's.
fn batch_list(batch_sizes: Option<&str>, config_batch: usize) -> Result<Vec<usize>> {
    let Some(list) = batch_sizes else {
        return Ok(vec![config_batch]);
    };
    (list.split(','))
        .map(|b| b.trim().parse::<usize>().ok().filter(|&b| b > 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!("--batch-sizes {list:?}: expected positive whole numbers separated by commas")
        })
}

/// `--devices`: the engines to time (cpu on `threads`, gpu on the adapter `gpu` chooses;
/// `auto`, the CPU and a hardware GPU where there is one, saying so where there is none).
fn engine_kinds(
    devices: &str,
    threads: usize,
    gpu: &super::args::GpuArgs,
) -> Result<Vec<EngineKind>> {
    if devices.trim() == "auto" {
        let cpu = EngineKind::Cpu { threads };
        let chosen = EngineKind::choose(DeviceChoice::Auto, &gpu.choice(false), threads)
            .context("--devices auto")?;
        return Ok(match (chosen.kind, chosen.fell_back) {
            (EngineKind::Cpu { .. }, Some(GpuError::OnlySoftware { found })) => {
                eprintln!(
                    "note: --devices auto: timing the CPU alone: the only GPU adapters here are software ones ({found}), far slower than the CPU path; --devices cpu,gpu times one anyway"
                );
                vec![cpu]
            }
            (EngineKind::Cpu { .. }, fell_back) => {
                let why = fell_back.map_or(String::new(), |e| format!(" ({e})"));
                eprintln!("note: --devices auto found no usable GPU{why}; timing the CPU alone");
                vec![cpu]
            }
            (gpu, _) => vec![cpu, gpu],
        });
    }
    (devices.split(','))
        .map(|d| match d.trim() {
            "cpu" => Ok(EngineKind::Cpu { threads }),
            "gpu" => Ok(EngineKind::Gpu {
                context: Box::new(
                    pollster::block_on(GpuContext::open(&gpu.choice(true)))
                        .context("bench on gpu")?,
                ),
            }),
            "auto" => bail!(
                "--devices: auto stands alone (the CPU, and a hardware GPU where there is one)"
            ),
            other => bail!("--devices: unknown device {other:?} (expected cpu, gpu or auto)"),
        })
        .collect()
}
