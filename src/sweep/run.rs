//! One run of a sweep: its place and settings (`SweepRun`), the tag a sweep writes in its
//! directory, and what a run directory already holds of it (finished, or resumable).

use std::path::Path;

use serde::Deserialize;

use crate::checkpoint::write_atomic;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::rundir::RunDir;

use super::rungs::Prune;

/// One run of a sweep: a setting and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    /// Position in the sweep's fixed order (results are listed in this order).
    pub index: usize,
    /// Directory name under the sweep's output directory: `<setting>-seed<seed>`.
    pub id: String,
    pub setting: String,
    pub seed: u64,
    pub config: TrainConfig,
    /// The setting's overrides, `key=value` with bare strings (for results.csv).
    pub overrides: Vec<String>,
    /// The sweep's pruning, when it prunes (the same for every run of it).
    pub prune: Option<Prune>,
    /// Its setting's Hyperband bracket ([`Prune::brackets_for`]; 0 without brackets).
    pub bracket: usize,
}

pub(super) fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `1 run`, `3 runs`.
pub fn runs_text(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// What a sweep records in each run directory (`sweep_run.json`) for its results table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct RunTag {
    pub index: usize,
    pub setting: String,
    pub seed: u64,
    pub overrides: Vec<String>,
}

impl SweepRun {
    /// Records this run's place in the sweep in its directory.
    pub fn write_tag(&self, dir: &Path) -> Result<()> {
        let tag = RunTag {
            index: self.index,
            setting: self.setting.clone(),
            seed: self.seed,
            overrides: self.overrides.clone(),
        };
        let text = serde_json::to_string(&tag).map_err(|e| Error::Usage(e.to_string()))?;
        write_atomic(&RunDir::new(dir).sweep_tag(), text.as_bytes())?;
        Ok(())
    }
}

pub(crate) fn read_tag(dir: &Path) -> Option<RunTag> {
    serde_json::from_str(&crate::files::read_to_string(RunDir::new(dir).sweep_tag()).ok()?).ok()
}

/// Whether `dir` holds a finished run of exactly `config`. A run that finished with another
/// config (the sweep file or its `--set` changed since) is an error, not a skip: its figures
/// would stand in the results table for a config they do not belong to, and training it over
/// would throw a finished run away.
pub fn is_finished_as(dir: &Path, config: &TrainConfig) -> Result<bool> {
    let run = RunDir::new(dir);
    if !run.is_finished() {
        return Ok(false);
    }
    let written =
        crate::files::read_to_string(run.config()).map_err(|e| Error::io(run.config(), e))?;
    let wanted = config.to_toml();
    match written
        .lines()
        .zip(wanted.lines())
        .find(|(w, n)| w != n)
        .map(|(w, n)| format!("`{w}`, the sweep now says `{n}`"))
        .or_else(|| (written != wanted).then(|| "its config.toml differs".to_string()))
    {
        None => Ok(true),
        Some(difference) => Err(Error::ConfigChanged {
            run: dir.to_path_buf(),
            difference,
        }),
    }
}

/// How many epochs an unfinished run directory holds that a sweep can go on from: its
/// checkpoint's, when the directory holds no finished run, its config.toml is exactly
/// `config` (the sweep file still asks for this run) and its checkpoint loads. `None`: train
/// it from the start.
pub fn resumable_epochs(dir: &Path, config: &TrainConfig) -> Option<usize> {
    let run = RunDir::new(dir);
    if run.is_finished() || run.written_config()? != config.to_toml() {
        return None;
    }
    let checkpoint = crate::checkpoint::load_checkpoint(&run.checkpoint()).ok()?;
    (config.describes(&checkpoint.model) && checkpoint.epochs_done <= config.epochs)
        .then_some(checkpoint.epochs_done)
}

/// The file that marks a directory as a sweep's and records the data its runs train on.
pub const SWEEP_FILE: &str = crate::rundir::SWEEP_RECORD;
