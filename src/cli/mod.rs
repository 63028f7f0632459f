//! Command-line interface: clap parsing, then library calls. Flags are turned into library
//! types and validated before any data is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use wgtrain::config::TrainConfig;
use wgtrain::data;
use wgtrain::engine::{DeviceChoice, EngineKind};
use wgtrain::gpu::{AdapterChoice, GpuContext, list_adapters};
use wgtrain::run::{RunOptions, run_training};
use wgtrain::train::{EpochRecord, Verdict};
use wgtrain::{checkpoint, report};

mod bench;
mod progress;
mod sweep;
mod tune;

use bench::bench;
use progress::EpochProgress;
use sweep::sweep;
use tune::tune;

#[derive(Debug, Parser)]
#[command(
    name = "wgtrain",
    version,
    about = "Train fully-connected networks on Fashion-MNIST and friends"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// A real GPU when one exists, else the CPU path.
    Auto,
    Cpu,
    Gpu,
}

#[derive(Debug, Clone, clap::Args)]
struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12 or gl [default: all, or WGPU_BACKEND].
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// GPU adapter: an index from `wgtrain devices` or a name substring [default: WGPU_ADAPTER_NAME, else the best].
    #[arg(long, value_name = "INDEX|NAME")]
    adapter: Option<String>,
}

/// Where runs train; `train` and `sweep` take the same three flags.
#[derive(Debug, Clone, clap::Args)]
struct DeviceArgs {
    /// Where to train.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    #[command(flatten)]
    gpu: GpuArgs,
    /// CPU threads (0 = one per core; at most 1024).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    threads: usize,
}

impl GpuArgs {
    fn choice(&self, allow_software: bool) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            allow_software,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SweepArgs {
    #[command(subcommand)]
    action: Option<SweepAction>,
    /// Sweep file (configs/sweeps/*.toml).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output directory [default: runs/sweep-<file name>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override a config key in every run, e.g. --set epochs=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run only the I-th of N disjoint slices of the runs [default: from SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shard-count].
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Number of shards when the index comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "N", conflicts_with = "shard", allow_negative_numbers = true, value_parser = whole_number)]
    shard_count: Option<usize>,
    /// The most runs the sweep may make; a larger grid is refused before any run starts.
    #[arg(long, value_name = "N", default_value_t = wgtrain::sweep::DEFAULT_MAX_RUNS, allow_negative_numbers = true, value_parser = whole_number)]
    max_runs: usize,
    /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    on: DeviceArgs,
    /// Train up to K runs together: on a GPU, runs of the same shape and batch size in the
    /// same dispatches [default: as many as the adapter's limits allow]; on the CPU, side by
    /// side on a share of the cores each [default: one per core]. --pack 1: one at a time.
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = whole_number)]
    pack: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Devices to time, comma-separated: cpu, gpu.
    #[arg(long, default_value = "cpu,gpu")]
    devices: String,
    /// Batch sizes, comma-separated [default: the config's].
    #[arg(long, value_name = "LIST")]
    batch_sizes: Option<String>,
    /// Untimed epochs first.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    warmup: usize,
    /// Timed epochs (the median is reported).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = whole_number)]
    epochs: usize,
    /// Also write the rows as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// CPU threads for the CPU path (0 = one per core; at most 1024).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    threads: usize,
    /// Also time K models of the config (seeds 1..K) trained packed — on a GPU in the same
    /// dispatches, on the CPU side by side on a share of the threads each — against the same K
    /// trained one after another.
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = whole_number)]
    pack: Option<usize>,
    /// On each GPU, also time every kernel family from timestamps written after each dispatch
    /// (where the adapter supports timestamp queries inside passes).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Debug, clap::Args)]
struct TuneArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Batch size to tune at [default: the config's].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    batch_size: Option<usize>,
    /// Rounds: every arrangement is timed once per round, in turn.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    rounds: usize,
    /// Untimed epochs before each timing.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole_number)]
    warmup: usize,
    /// Timed epochs per timing (their median is the timing).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    epochs: usize,
    /// Print the table without writing the tuning file.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Debug, Subcommand)]
enum SweepAction {
    /// Rebuild results.csv and results.md from the finished runs in DIR.
    Report {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Experiment config (TOML); without it, the paper's best model (configs/momentum.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set learning_rate=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seed for the split, initialisation and shuffling (same as --set seed=N; at most
    /// 2^63 − 1, the largest integer config.toml can hold).
    #[arg(long, allow_negative_numbers = true, value_parser = seed_value)]
    seed: Option<u64>,
    /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl ConfigArgs {
    /// The `--set` overrides, with `--seed N` as `seed=N` last.
    fn overrides(&self) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(seed) = self.seed {
            sets.push(format!("seed={seed}"));
        }
        sets
    }

    fn load(&self) -> Result<TrainConfig> {
        let sets = self.overrides();
        let config = match &self.config {
            Some(path) => TrainConfig::load(path, &sets)?,
            None => {
                TrainConfig::from_toml_str("", Path::new("(built-in default)"), "momentum", &sets)?
            }
        };
        Ok(config)
    }

    fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(data::default_dir)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a network and write a run directory.
    Train(TrainArgs),
    /// Test accuracy and loss of a saved model.
    Eval {
        /// A model.safetensors written by `wgtrain train`.
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
        /// CPU threads (0 = one per core; at most 1024).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
        threads: usize,
    },
    /// Classify PNG/JPEG pictures, or every image of an IDX file, with a saved model.
    Predict {
        /// A model.safetensors written by `wgtrain train`.
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// Pictures (PNG, JPEG) or IDX image files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Classes shown per image.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = whole_number)]
        top: usize,
        /// Class names, comma-separated [default: Fashion-MNIST's for 10 classes, else numbers].
        #[arg(long, value_name = "NAMES")]
        class_names: Option<String>,
        /// One JSON line per image.
        #[arg(long)]
        json: bool,
    },
    /// Numerical gradient check of backprop (the paper's Table 3).
    Gradcheck {
        #[command(flatten)]
        config: ConfigArgs,
        /// Training images the objective averages over.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = whole_number)]
        samples: usize,
        /// Weights checked per layer (plus one bias).
        #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
        per_layer: usize,
        /// Finite-difference step; the check passes when every |difference| ≤ ε².
        #[arg(long, default_value_t = 1e-2)]
        epsilon: f64,
    },
    /// Train every run of a sweep file (resumable, shardable), then write results.csv and results.md.
    Sweep(SweepArgs),
    /// Time training epochs on each device (default: the paper's momentum experiment).
    Bench(BenchArgs),
    /// Time every kernel arrangement on one GPU adapter and keep the fastest for it (speed
    /// only: every arrangement trains to the same bits).
    Tune(TuneArgs),
    /// List the GPU adapters wgpu finds, with the limits that matter here.
    Devices {
        /// List only this backend's adapters: vulkan, metal, dx12 or gl [default: all].
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
    },
    /// Check every GPU kernel and a full training step against the CPU path.
    Check {
        /// Check every adapter found (software ones included), not just the chosen one.
        #[arg(long)]
        all_adapters: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Draw accuracy and loss curves of one or more runs (overlaid) as PNG and SVG.
    Plot {
        /// Run directories (each with metrics.csv; finished or not).
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Where the pictures go [default: the run directory for one run, else plots/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Results table (Markdown) from run directories, grouped by experiment.
    Table {
        /// Run directories (each with config.toml and summary.json; unfinished runs are left out).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(&args),
        Command::Eval {
            model,
            data,
            json,
            threads,
        } => eval(&model, data, json, threads),
        Command::Gradcheck {
            config,
            samples,
            per_layer,
            epsilon,
        } => gradcheck(&config, samples, per_layer, epsilon),
        Command::Devices { backend } => devices(backend.as_deref()),
        Command::Predict {
            model,
            files,
            top,
            class_names,
            json,
        } => predict(&model, &files, top, class_names.as_deref(), json),
        Command::Sweep(args) => sweep(args),
        Command::Bench(args) => bench(args),
        Command::Tune(args) => tune(args),
        Command::Check { all_adapters, gpu } => check(all_adapters, &gpu),
        Command::Table { runs } => table(&runs),
        Command::Plot { runs, out } => plot(&runs, out),
    }
}

/// A count flag's value: a whole number ≥ 0, with a message that says so for `-1` (clap
/// would otherwise take `-1` for an unknown flag, and say "unexpected argument").
fn whole_number(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n < 0 => Err(format!(
            "{n} is negative; expected a whole number, 0 or more"
        )),
        Ok(n) => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A `--seed` value: 0 ..= 2^63 − 1, the integers config.toml (TOML) can hold.
fn seed_value(text: &str) -> std::result::Result<u64, String> {
    const MOST: u64 = i64::MAX as u64;
    match text.trim().parse::<i128>() {
        Ok(n) if (0..=MOST as i128).contains(&n) => Ok(n as u64),
        Ok(n) => Err(format!(
            "{n} is not in 0..={MOST}: a seed is a whole number from 0 to 2^63 − 1, the largest config.toml can hold"
        )),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A `--threads` value, refused above [`wgtrain::cpu::MAX_THREADS`] rather than clamped, so
/// that a typo fails where the user can see it.
fn threads_flag(threads: usize) -> Result<usize> {
    let most = wgtrain::cpu::MAX_THREADS;
    if threads > most {
        bail!("--threads {threads}: at most {most} (0 means one per core)");
    }
    Ok(threads)
}

fn engine_kind(on: &DeviceArgs) -> Result<EngineKind> {
    let threads = threads_flag(on.threads)?;
    let device = match on.device {
        Device::Auto => DeviceChoice::Auto,
        Device::Cpu => DeviceChoice::Cpu,
        Device::Gpu => DeviceChoice::Gpu,
    };
    let chosen = EngineKind::choose(device, &on.gpu.choice(false), threads)
        .with_context(|| format!("--device {}", device_name(on.device)))?;
    if let Some(e) = &chosen.fell_back {
        eprintln!("note: --device auto found no usable GPU ({e}); training on the CPU");
    }
    Ok(chosen.kind)
}

fn device_name(device: Device) -> &'static str {
    match device {
        Device::Auto => "auto",
        Device::Cpu => "cpu",
        Device::Gpu => "gpu",
    }
}

fn predict(
    model: &Path,
    files: &[PathBuf],
    top: usize,
    class_names: Option<&str>,
    json: bool,
) -> Result<()> {
    if top == 0 {
        bail!("--top must be at least 1");
    }
    let params = checkpoint::load_model(model)?;
    let classes = *params.widths.last().unwrap_or(&0);
    let names = wgtrain::predict::class_names(classes, class_names)?;
    for p in wgtrain::predict::predict_files(&params, files, top)? {
        let name = match p.index {
            Some(i) => format!("{}[{i}]", p.file.display()),
            None => p.file.display().to_string(),
        };
        if json {
            let top: Vec<_> = p
                .top
                .iter()
                .map(|&(label, probability)| serde_json::json!({"class": names[label], "label": label, "probability": probability}))
                .collect();
            let mut line = serde_json::json!({"file": p.file, "index": p.index, "top": top});
            if let Some(warning) = &p.warning {
                line["warning"] = serde_json::json!(warning);
            }
            println!("{line}");
        } else {
            let shown: Vec<String> = p
                .top
                .iter()
                .map(|&(label, prob)| format!("{} {:.1}%", names[label], 100.0 * prob))
                .collect();
            println!("{name}: {}", shown.join(", "));
        }
        if let Some(warning) = &p.warning {
            eprintln!("warning: {name}: {warning}");
        }
    }
    Ok(())
}

fn devices(backend: Option<&str>) -> Result<()> {
    let adapters = list_adapters(backend)?;
    if adapters.is_empty() {
        println!(
            "no adapters found (hint: `apt-get install mesa-vulkan-drivers` gives lavapipe on Linux)"
        );
        return Ok(());
    }
    // What a GPU run on each adapter would start from: `wgtrain tune`'s choice, if any.
    let tuned = wgtrain::gpu::TuningFile::load_configured()?;
    println!(
        "| index | name | backend | type | driver | max storage binding (bytes) | max workgroup storage (bytes) | max invocations/workgroup | timestamps | tuning |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (s, _) in adapters {
        let tuning = match tuned.find(&s) {
            Some(t) => format!("tuned: {}", t.label()),
            None => "defaults".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.index,
            s.name,
            s.backend,
            s.device_type,
            s.driver,
            s.max_storage_buffer_binding_size,
            s.max_compute_workgroup_storage_size,
            s.max_compute_invocations_per_workgroup,
            if s.timestamp_queries { "yes" } else { "no" },
            tuning
        );
    }
    Ok(())
}

fn check(all_adapters: bool, gpu: &GpuArgs) -> Result<()> {
    use wgtrain::check::{CheckTally, RowOutcome, adapters_to_check, run_all};
    let contexts = adapters_to_check(all_adapters, &gpu.choice(true))?;
    let mut tally = CheckTally::default();
    println!("| adapter | check | cases | max rel. error | max error / tolerance | result |");
    println!("|---|---|---|---|---|---|");
    for ctx in contexts {
        let ctx = match ctx {
            Ok(c) => c,
            Err((name, why)) => {
                println!("| {name} | (open device) | – | – | – | cannot run: {why} |");
                tally.unopened(&name);
                continue;
            }
        };
        for row in run_all(&ctx) {
            tally.count(&ctx.describe(), &row);
            let result = match row.outcome() {
                RowOutcome::Pass => "pass".to_string(),
                RowOutcome::Fail(detail) => format!("FAIL: {detail}"),
                RowOutcome::CannotRun(why) => format!("cannot run: {why}"),
            };
            println!(
                "| {} | {} | {} | {:.1e} | {:.3} | {result} |",
                ctx.describe(),
                row.check,
                row.cases,
                row.max_rel_error,
                row.worst
            );
        }
    }
    if !tally.unrunnable.is_empty() {
        eprintln!("note: could not run on: {}", tally.unrunnable.join("; "));
    }
    Ok(tally.verdict()?)
}

/// A flag the first Ctrl-C sets (training then stops after the epoch in progress, with its
/// checkpoint written); a second Ctrl-C exits at once, the last checkpoint still intact.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&flag);
    let installed = ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this epoch and saving (Ctrl-C again to quit now)");
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will stop training without a final save ({e})");
    }
    flag
}

/// `runs/<name>-<UTC timestamp>`.
fn default_run_dir(name: &str) -> PathBuf {
    let t = wgtrain::metrics::UtcTime::now();
    PathBuf::from("runs").join(format!(
        "{name}-{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    ))
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run directory [default: runs/<config-name>-<timestamp>].
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its last.safetensors, with its config.toml (plus any
    /// --set, e.g. --set epochs=N to go further).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    on: DeviceArgs,
    /// Overwrite a run directory that already holds a run.
    #[arg(long)]
    force: bool,
    /// Print nothing per epoch.
    #[arg(long, short)]
    quiet: bool,
}

fn train(t: &TrainArgs) -> Result<()> {
    let TrainArgs {
        config: args,
        out,
        resume,
        on,
        force,
        quiet,
    } = t;
    let (out, force, quiet) = (out.clone(), *force, *quiet);
    // The config is validated before any device is opened or data read.
    let config = match &resume {
        Some(dir) => {
            if args.config.is_some() {
                bail!(
                    "--resume takes the run's own config.toml; drop --config (use --set to change keys)"
                );
            }
            wgtrain::rundir::RunDir::new(dir)
                .read_config_with(&args.overrides())
                .with_context(|| format!("--resume {}", dir.display()))?
        }
        None => args.load()?,
    };
    let engine = engine_kind(on)?;
    let out = resume
        .clone()
        .or(out)
        .unwrap_or_else(|| default_run_dir(&config.name));
    let opts = RunOptions {
        out: out.clone(),
        force,
        data_dir: args.data.clone(),
        engine,
        resume: resume.is_some(),
        interrupt: Some(interrupt_flag()),
        datasets: None,
    };
    let epochs = config.epochs;
    let progress_display = EpochProgress::new(&config.name, epochs, quiet);
    let trained = std::cell::Cell::new(0usize);
    let progress = |r: &EpochRecord, v: Verdict| {
        trained.set(trained.get() + 1);
        progress_display.epoch(r, v)
    };
    let result = match on.device {
        Device::Auto => {
            wgtrain::run::run_training_or_cpu(&config, &opts, on.threads, progress, |e| {
                eprintln!("warning: the GPU cannot run this ({e}); training on the CPU instead")
            })
        }
        _ => run_training(&config, &opts, progress),
    };
    progress_display.finish();
    let summary = result
        .with_context(|| format!("training {} (run directory {})", config.name, out.display()))?;
    if let Some(warning) = &summary.warning {
        eprintln!("warning: {warning}");
    }
    if resume.is_some() && trained.get() == 0 {
        eprintln!(
            "note: {} had nothing left to train ({} epochs done{}); --set epochs=N goes further{}",
            out.display(),
            summary.epochs_run,
            if summary.stopped_early {
                ", stopped early"
            } else {
                ""
            },
            if summary.stopped_early {
                ", with a larger patience or early_stopping=false"
            } else {
                ""
            }
        );
    }
    println!(
        "{}: test accuracy {:.2}%, test loss {:.4} (best epoch {} of {}{}) on {} in {:.1}s → {}",
        summary.name,
        100.0 * summary.test_accuracy,
        summary.test_loss,
        summary.best_epoch,
        summary.epochs_run,
        if summary.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        summary.device_detail,
        summary.seconds,
        out.display()
    );
    Ok(())
}

fn eval(model: &Path, data_dir: Option<PathBuf>, json: bool, threads: usize) -> Result<()> {
    let threads = threads_flag(threads)?;
    let data_dir = data_dir.unwrap_or_else(data::default_dir);
    let report = wgtrain::eval::evaluate_model(model, &data_dir, threads)?;
    let stats = &report.stats;
    if json {
        println!(
            "{}",
            serde_json::json!({"model": model, "test_accuracy": stats.accuracy, "test_loss": stats.loss, "samples": stats.samples})
        );
    } else {
        println!(
            "{}: test accuracy {:.2}%, test loss {:.4} over {} images",
            model.display(),
            100.0 * stats.accuracy,
            stats.loss,
            stats.samples
        );
        for (c, name) in report.names.iter().enumerate() {
            let (accuracy, total) = report.class_accuracy(c);
            println!("  {name:<12} {:6.2}% of {}", 100.0 * accuracy, total.max(1));
        }
        println!("confusion matrix: {}", report.confusion_png.display());
    }
    Ok(())
}

fn gradcheck(args: &ConfigArgs, samples: usize, per_layer: usize, epsilon: f64) -> Result<()> {
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    if !(epsilon.is_finite() && epsilon > 0.0) {
        bail!("--epsilon must be a finite number > 0");
    }
    let config = args.load()?;
    let report =
        wgtrain::gradcheck::check_config(&config, &args.data_dir(), samples, per_layer, epsilon)?;
    let tolerance = report.tolerance();
    println!(
        "gradient check: {} {:?} {}, {} training images, ε = {epsilon:e}, pass when |difference| ≤ ε² = {tolerance:e}",
        config.name,
        config.layers,
        config.activation.name(),
        report.samples
    );
    println!("| parameter | numerical | backprop | abs difference |");
    println!("|---|---|---|---|");
    for row in &report.rows {
        println!(
            "| {} | {:.8e} | {:.8e} | {:.3e} |",
            row.parameter, row.numerical, row.backprop, row.difference
        );
    }
    let failed = report.failures();
    if failed > 0 {
        bail!(
            "gradient check failed: {failed} of {} differences exceed ε² = {tolerance:e}",
            report.rows.len()
        );
    }
    println!(
        "passed: all {} differences ≤ {tolerance:e}",
        report.rows.len()
    );
    Ok(())
}

fn plot(runs: &[PathBuf], out: Option<PathBuf>) -> Result<()> {
    let curves = runs
        .iter()
        .map(|dir| wgtrain::plot::RunCurves::read(dir))
        .collect::<wgtrain::Result<Vec<_>>>()?;
    let out = out.unwrap_or_else(|| {
        if runs.len() == 1 {
            runs[0].clone()
        } else {
            PathBuf::from("plots")
        }
    });
    wgtrain::error::ensure_dir(&out, "--out")?;
    let title = if curves.len() == 1 {
        curves[0].label.clone()
    } else {
        format!("{} runs", curves.len())
    };
    wgtrain::plot::plot_run_curves(&out, &curves, &title)?;
    println!(
        "wrote accuracy.png, accuracy.svg, loss.png, loss.svg in {}",
        out.display()
    );
    Ok(())
}

fn table(runs: &[PathBuf]) -> Result<()> {
    let (records, unfinished) = report::read_finished(runs)?;
    for dir in &unfinished {
        eprintln!(
            "note: {} left out: the run has not finished (no summary.json; `wgtrain train --resume {}` finishes it)",
            dir.display(),
            dir.display()
        );
    }
    if records.is_empty() {
        bail!("no finished run among the {} given", runs.len());
    }
    print!("{}", report::markdown_table(&records));
    Ok(())
}
