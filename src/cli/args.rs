//! The command line's argument types (clap derive), with the parsers and range checks clap
//! applies as it parses. No work here: `cli` validates further and calls the library.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use wgtrain::config::TrainConfig;
use wgtrain::data;
use wgtrain::gpu::AdapterChoice;

#[derive(Debug, Parser)]
#[command(
    name = "wgtrain",
    version,
    about = "Train fully-connected networks on Fashion-MNIST and friends"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Device {
    /// A real GPU when one exists, else the CPU path.
    Auto,
    Cpu,
    Gpu,
}

#[derive(Debug, Clone, clap::Args)]
pub(super) struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12 or gl [default: all, or WGPU_BACKEND].
    #[arg(long, value_name = "NAME")]
    pub(super) backend: Option<String>,
    /// GPU adapter: an index from `wgtrain devices` or a name substring [default: WGPU_ADAPTER_NAME, else the best].
    #[arg(long, value_name = "INDEX|NAME")]
    pub(super) adapter: Option<String>,
}

/// Where runs train; `train` and `sweep` take the same three flags.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct DeviceArgs {
    /// Where to train.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub(super) device: Device,
    #[command(flatten)]
    pub(super) gpu: GpuArgs,
    /// CPU threads (0 = one per core; at most 1024).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) threads: usize,
}

impl GpuArgs {
    pub(super) fn choice(&self, allow_software: bool) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            allow_software,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct SweepArgs {
    #[command(subcommand)]
    pub(super) action: Option<SweepAction>,
    /// Sweep file (configs/sweeps/*.toml): a grid, a list of runs or a random search, and
    /// optionally a [prune] table.
    #[arg(value_name = "FILE")]
    pub(super) file: Option<PathBuf>,
    /// Output directory [default: runs/sweep-<file name>].
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Override a config key in every run, e.g. --set epochs=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(super) sets: Vec<String>,
    /// Run only the I-th of N disjoint slices of the runs [default: from SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shard-count].
    #[arg(long, value_name = "I/N")]
    pub(super) shard: Option<String>,
    /// Number of shards when the index comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "N", conflicts_with = "shard", allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) shard_count: Option<usize>,
    /// The most runs the sweep may make; a larger grid is refused before any run starts.
    #[arg(long, value_name = "N", default_value_t = wgtrain::sweep::DEFAULT_MAX_RUNS, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) max_runs: usize,
    /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    pub(super) data: Option<PathBuf>,
    #[command(flatten)]
    pub(super) on: DeviceArgs,
    /// Train up to K runs together: on a GPU, runs of the same shape and batch size in the
    /// same dispatches [default: as many as the adapter's limits allow]; on the CPU, side by
    /// side on a share of the cores each [default: one per core]. --pack 1: one at a time.
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) pack: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    /// Devices to time, comma-separated: cpu, gpu. auto: the CPU, and the GPU where wgpu finds
    /// a hardware one; a software adapter (lavapipe, llvmpipe, SwiftShader, WARP) only when
    /// asked for (gpu, or --adapter naming it), as `--device auto` skips it.
    #[arg(long, default_value = "auto")]
    pub(super) devices: String,
    /// Batch sizes, comma-separated [default: the config's].
    #[arg(long, value_name = "LIST")]
    pub(super) batch_sizes: Option<String>,
    /// Untimed epochs first.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) warmup: usize,
    /// Timed epochs (the median is reported).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) epochs: usize,
    /// Also write the rows as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    pub(super) json: Option<PathBuf>,
    /// CPU threads for the CPU path (0 = one per core; at most 1024).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) threads: usize,
    /// Also time K models of the config (seeds 1..K) trained packed — on a GPU in the same
    /// dispatches, on the CPU side by side on a share of the threads each — against the same K
    /// trained one after another.
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) pack: Option<usize>,
    /// On each GPU, also time every kernel family from timestamps written after each dispatch
    /// (where the adapter supports timestamp queries inside passes).
    #[arg(long)]
    pub(super) profile: bool,
    #[command(flatten)]
    pub(super) gpu: GpuArgs,
}

#[derive(Debug, clap::Args)]
pub(super) struct TuneArgs {
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    /// Batch size to tune at [default: the config's].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) batch_size: Option<usize>,
    /// Rounds: every arrangement is timed once per round, in turn.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) rounds: usize,
    /// Untimed epochs before each timing.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) warmup: usize,
    /// Timed epochs per timing (their median is the timing).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole_number)]
    pub(super) epochs: usize,
    /// Print the table without writing the tuning file.
    #[arg(long)]
    pub(super) dry_run: bool,
    #[command(flatten)]
    pub(super) gpu: GpuArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum SweepAction {
    /// Rebuild results.csv and results.md from the finished runs in DIR.
    Report {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub(super) struct ConfigArgs {
    /// Experiment config (TOML); without it, the paper's best model (configs/momentum.toml).
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Override a config key, e.g. --set learning_rate=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(super) sets: Vec<String>,
    /// Seed for the split, initialisation and shuffling (same as --set seed=N; at most
    /// 2^63 − 1, the largest integer config.toml can hold).
    #[arg(long, allow_negative_numbers = true, value_parser = seed_value)]
    pub(super) seed: Option<u64>,
    /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    pub(super) data: Option<PathBuf>,
}

impl ConfigArgs {
    /// The `--set` overrides, with `--seed N` as `seed=N` last.
    pub(super) fn overrides(&self) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(seed) = self.seed {
            sets.push(format!("seed={seed}"));
        }
        sets
    }

    pub(super) fn load(&self) -> Result<TrainConfig> {
        let sets = self.overrides();
        let config = match &self.config {
            Some(path) => TrainConfig::load(path, &sets)?,
            None => {
                TrainConfig::from_toml_str("", Path::new("(built-in default)"), "momentum", &sets)?
            }
        };
        Ok(config)
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(data::default_dir)
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
        /// Finite-difference step, above 0 and at most 0.1; the check passes when every
        /// |difference| ≤ ε² [default: the paper's 1e-2; 1e-4 for a `network`, whose ReLU and
        /// max-pooling kinks a wider stencil crosses].
        #[arg(long)]
        epsilon: Option<f64>,
    },
    /// Train every run of a sweep file (a grid, runs or a random search; pruned if it says so;
    /// resumable, shardable), then write results.csv and results.md.
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
    /// Serve the page that trains in a browser tab on its WebGPU adapter (build it once with
    /// web/build.sh).
    Web {
        /// Directory holding the four MNIST-style IDX files [default: data/fashion-mnist].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Address to listen on; other machines reach the page only if this is not loopback.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port to listen on (0: any free one; the address is printed).
        #[arg(long, default_value_t = 8000)]
        port: u16,
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

#[derive(Debug, clap::Args)]
pub(super) struct TrainArgs {
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    /// Run directory [default: runs/<config-name>-<timestamp>].
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub(super) out: Option<PathBuf>,
    /// Continue the run in DIR from its last.safetensors, with its config.toml (plus any
    /// --set, e.g. --set epochs=N to go further).
    #[arg(long, value_name = "DIR")]
    pub(super) resume: Option<PathBuf>,
    #[command(flatten)]
    pub(super) on: DeviceArgs,
    /// Overwrite a run directory that already holds a run.
    #[arg(long)]
    pub(super) force: bool,
    /// Print nothing per epoch.
    #[arg(long, short)]
    pub(super) quiet: bool,
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

/// `--threads`, checked: at most [`wgtrain::host::MAX_THREADS`].
pub(super) fn threads_flag(threads: usize) -> anyhow::Result<usize> {
    let most = wgtrain::host::MAX_THREADS;
    if threads > most {
        anyhow::bail!("--threads {threads}: at most {most} (0 means one per core)");
    }
    Ok(threads)
}
