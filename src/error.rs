//! The crate's error type: one enum per area, gathered here.

use std::path::PathBuf;

pub use crate::checkpoint::CheckpointError;
pub use crate::config::ConfigError;
pub use crate::data::DataError;
pub use crate::engine::EngineError;
pub use crate::train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "run directory {path} already holds a run (hint: pass --force to overwrite it, or choose another --out)"
    )]
    RunExists { path: PathBuf },
    #[error(
        "{what} {path} holds files wgtrain did not write ({names}) (hint: choose a new or empty directory{force})"
    )]
    ForeignFiles {
        what: &'static str,
        path: PathBuf,
        names: String,
        /// How to write beside them anyway, where the command can (`, or --force …`).
        force: &'static str,
    },
    #[error(
        "run directory {path} is in use by another wgtrain process (hint: wait for it to end, or choose another --out)"
    )]
    RunInUse { path: PathBuf },
    #[error(
        "{what} trained on the data in {recorded}, and the data in {dir} is not the same: {difference} (hint: give --data the directory it started with, or start anew in another directory)"
    )]
    DataChanged {
        /// `run DIR` or `sweep DIR`.
        what: String,
        recorded: PathBuf,
        dir: PathBuf,
        difference: String,
    },
    #[error("{what} {path} is not a directory (hint: {hint})")]
    NotADirectory {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error(
        "{path}: holds epochs {found} where the checkpoint has epochs 1 to {epochs} done (the file was edited, or belongs to another run) (hint: restore it, or train the run again with --force)"
    )]
    MetricsMismatch {
        path: PathBuf,
        /// The epochs the file holds, as listed.
        found: String,
        epochs: usize,
    },
    #[error(
        "run {run} finished with another config than the sweep now gives it: {difference} (hint: a changed sweep goes in another --out; or remove the run to train it again)"
    )]
    ConfigChanged { run: PathBuf, difference: String },
    #[error(
        "sweep {path} was judged by {was}, and the sweep file now says {now}: its runs were pruned (or not) by other rungs than the file's (hint: a changed sweep goes in another --out)"
    )]
    PruneChanged {
        path: PathBuf,
        was: String,
        now: String,
    },
    #[error(
        "the sweep makes {runs} runs ({settings} settings × {seeds} seeds), more than the {max_runs} allowed (hint: trim the grid, or pass --max-runs N to allow more)"
    )]
    SweepTooLarge {
        runs: String,
        /// The settings, as counted (`grid of 10 l1 × … = N`).
        settings: String,
        seeds: usize,
        max_runs: usize,
    },
    #[error(
        "{path} holds no sweep (no sweep.json, no run a sweep trained) (hint: give the --out directory of `wgtrain sweep`)"
    )]
    NotASweep { path: PathBuf },
    #[error(
        "{path} was not written by `wgtrain sweep`; not replacing it (hint: move it away, or report into the sweep's own directory)"
    )]
    NotOurs { path: PathBuf },
    /// A sweep's run failed in a way that ends the sweep (divergence does not).
    #[error("sweep run {id}: {source}")]
    SweepRun { id: String, source: Box<Error> },
    /// A thread running part of the work panicked (its message is on stderr).
    #[error("{what} panicked")]
    Panicked { what: &'static str },
    #[error("{0}")]
    Usage(String),
    #[error(
        "interrupted after epoch {epoch}; the run is saved (hint: continue with `wgtrain train --resume {dir}`)"
    )]
    Interrupted { epoch: usize, dir: PathBuf },
    /// A run stopped at a pruning sweep's rung, saved, to go on if the rung keeps it.
    #[error("paused after epoch {epoch} at a pruning rung; the run is saved")]
    Paused { epoch: usize },
    #[error(
        "interrupted; {saved} run{} saved mid-way (hint: the same command again goes on: finished runs are skipped, saved ones continue from their last epoch)",
        if *saved == 1 { "" } else { "s" }
    )]
    SweepInterrupted { saved: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Creates `path` and its parents unless it is a directory already; a file, a device
/// (`/dev/full`) or anything else in its place is [`Error::NotADirectory`] naming `what` it
/// was meant to be, rather than the OS's "File exists".
pub fn ensure_dir(path: &std::path::Path, what: &'static str) -> Result<()> {
    refuse_non_directory(path, what)?;
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Fails when something other than a directory is at `path` (checked before any work, so a
/// run that could never be written is refused before it trains).
pub fn refuse_non_directory(path: &std::path::Path, what: &'static str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::NotADirectory {
            what,
            path: path.to_path_buf(),
            hint: "name a directory, or a path that does not exist yet",
        });
    }
    Ok(())
}

impl Error {
    /// The GPU's own error when this is one (a run `--device auto` may take to the CPU).
    pub fn gpu_cause(&self) -> Option<&crate::gpu::GpuError> {
        match self {
            Error::Engine(EngineError::Gpu(e)) => Some(e),
            _ => None,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
