//! Sweeps: a base config, a list or grid of overrides and a list of seeds, expanded into runs
//! in a fixed order; each run trains into its own directory under one output directory, so a
//! rerun skips finished runs and any number of shards (`--shard I/N`, Slurm arrays, Kubernetes
//! indexed jobs) can share the directory. Results are rebuilt from whatever has finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checkpoint::write_atomic;
use crate::config::{ConfigError, TrainConfig};
use crate::error::{Error, Result};
use crate::report::{RunRecord, markdown_table, read_run};

mod pack;
pub use pack::{PackedRun, gpu_seats, pack_groups, pack_key, train_together};

/// A sweep file as written (`configs/sweeps/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Base config, relative to the sweep file (default: the built-in momentum config).
    base: Option<PathBuf>,
    /// Seeds every setting is trained with.
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
    /// Explicit settings.
    #[serde(default)]
    runs: Vec<RunSpec>,
    /// Every combination of these values (key → list of values).
    #[serde(default)]
    grid: BTreeMap<String, Vec<toml::Value>>,
}

fn default_seeds() -> Vec<u64> {
    vec![1]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSpec {
    /// Setting name (default: its overrides).
    name: Option<String>,
    /// Config file for this setting instead of the base, relative to the sweep file.
    config: Option<PathBuf>,
    /// Overrides, as `--set` would give them.
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
}

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
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name safe as a directory name: letters, digits, `.`, `-`, `_`, `=`; others become `_`.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Expands a sweep file into its runs, in a fixed order (settings in file order, grid in key
/// order, then seeds), applying `extra` overrides to every run. Errors about the sweep file's
/// own contents do not repeat its path: the caller names the file (`sweep FILE: …`).
pub fn expand(path: &Path, extra: &[String]) -> Result<Vec<SweepRun>> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: SweepFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().trim().to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut settings: Vec<RunSpec> = file.runs.clone();
    if !file.grid.is_empty() {
        let mut combos: Vec<BTreeMap<String, toml::Value>> = vec![BTreeMap::new()];
        for (key, values) in &file.grid {
            // An axis with no values would silently make the whole grid empty.
            if values.is_empty() {
                return Err(Error::Usage(format!("`grid.{key}` lists no values")));
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(key.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        settings.extend(combos.into_iter().map(|set| RunSpec {
            name: None,
            config: None,
            set,
        }));
    }
    if settings.is_empty() {
        settings.push(RunSpec {
            name: None,
            config: None,
            set: BTreeMap::new(),
        });
    }
    if file.seeds.is_empty() {
        return Err(Error::Usage("`seeds` is empty".to_string()));
    }
    let mut runs = Vec::new();
    for RunSpec {
        name,
        config: config_path,
        set: sets,
    } in settings
    {
        // Applied as TOML (strings quoted); shown bare in results.csv.
        let overrides: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let shown: Vec<String> = sets
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        let setting = match (&name, &config_path) {
            (Some(n), _) => n.clone(),
            (None, _) if !sets.is_empty() => sets
                .iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect::<Vec<_>>()
                .join(","),
            (None, Some(c)) => c
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run")
                .to_string(),
            (None, None) => "base".to_string(),
        };
        let setting = safe_name(&setting);
        for &seed in &file.seeds {
            let mut all = overrides.clone();
            all.push(format!("name=\"{setting}\""));
            all.extend(extra.iter().cloned());
            all.push(format!("seed={seed}"));
            // A setting that changes its config is no longer the paper's experiment: loading
            // with overrides drops the file's `paper` figures then (config::from_toml_str).
            let config = match config_path.as_ref().or(file.base.as_ref()) {
                Some(p) => TrainConfig::load(&dir.join(p), &all)?,
                None => TrainConfig::from_toml_str("", path, &setting, &all)?,
            };
            runs.push(SweepRun {
                index: runs.len(),
                id: format!("{setting}-seed{seed}"),
                setting: setting.clone(),
                seed,
                config,
                overrides: shown.clone(),
            });
        }
    }
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Usage(format!(
            "two settings are both named {:?}; give them distinct `name`s",
            w[0]
        )));
    }
    Ok(runs)
}

/// Which slice of the runs this process takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N`.
    pub fn parse(s: &str) -> Option<Shard> {
        let (i, n) = s.split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    /// From the schedulers' environment: Slurm job arrays (`SLURM_ARRAY_TASK_ID`, counted from
    /// `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`), or a Kubernetes Indexed Job's
    /// `JOB_COMPLETION_INDEX` with `count` given (`--shard-count`).
    pub fn from_env(count: Option<usize>) -> Option<Shard> {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        if let (Some(id), Some(n)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT")) {
            let min = var("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
            return Some(Shard {
                index: id.checked_sub(min)?,
                count: n,
            })
            .filter(|s| s.index < s.count);
        }
        match (var("JOB_COMPLETION_INDEX"), count) {
            (Some(index), Some(count)) if index < count => Some(Shard { index, count }),
            _ => None,
        }
    }

    pub fn takes(&self, run_index: usize) -> bool {
        run_index % self.count == self.index
    }
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
        write_atomic(&dir.join("sweep_run.json"), text.as_bytes())?;
        Ok(())
    }
}

fn read_tag(dir: &Path) -> Option<RunTag> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep_run.json")).ok()?).ok()
}

/// Whether a run directory holds a finished run (a summary, finished or diverged).
pub fn is_finished(dir: &Path) -> bool {
    crate::metrics::Summary::read(&dir.join("summary.json")).is_ok()
}

/// How many epochs an unfinished run directory holds that a sweep can go on from: its
/// checkpoint's, when the directory holds no finished run, its config.toml is exactly
/// `config` (the sweep file still asks for this run) and its checkpoint loads. `None`: train
/// it from the start.
pub fn resumable_epochs(dir: &Path, config: &TrainConfig) -> Option<usize> {
    if is_finished(dir) {
        return None;
    }
    let written = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    if written != config.to_toml() {
        return None;
    }
    let checkpoint = crate::checkpoint::load_checkpoint(&dir.join("last.safetensors")).ok()?;
    (checkpoint.widths == config.layers && checkpoint.epochs_done <= config.epochs)
        .then_some(checkpoint.epochs_done)
}

/// Header of results.csv.
pub const RESULTS_HEADER: &str = "run,setting,seed,overrides,status,best_epoch,epochs_run,best_val_loss,test_accuracy,test_loss,device,seconds";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rebuilds results.csv and results.md in `out` from every finished run directory in it.
/// Returns how many runs it found.
pub fn report(out: &Path) -> Result<usize> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && is_finished(p))
        .collect();
    // Sweep order when the runs carry their tags, else by name.
    dirs.sort_by_key(|d| (read_tag(d).map_or(usize::MAX, |t| t.index), d.clone()));
    let runs: Vec<RunRecord> = dirs.iter().map(|d| read_run(d)).collect::<Result<_>>()?;
    let mut csv = format!("{RESULTS_HEADER}\n");
    for r in &runs {
        let id = r
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let overrides = read_tag(&r.dir)
            .map(|t| t.overrides.join(";"))
            .unwrap_or_default();
        let s = &r.summary;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{},{:.3}\n",
            csv_field(id),
            csv_field(&r.config.name),
            r.config.seed,
            csv_field(&overrides),
            s.status,
            s.best_epoch,
            s.epochs_run,
            s.best_val_loss.map_or(String::new(), |l| format!("{l:.6}")),
            s.test_accuracy,
            s.test_loss,
            s.device,
            s.seconds
        ));
    }
    write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    let md = format!(
        "# Sweep results\n\n{} finished runs in {}; mean ± sample std over seeds.\n\n{}",
        runs.len(),
        out.display(),
        markdown_table(&runs)
    );
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    let mut settings: Vec<(String, Vec<f64>)> = Vec::new();
    for r in &runs {
        match settings.iter_mut().find(|(n, _)| *n == r.config.name) {
            Some((_, accs)) => accs.push(r.summary.test_accuracy),
            None => settings.push((r.config.name.clone(), vec![r.summary.test_accuracy])),
        }
    }
    let bars: Vec<(String, f64, f64)> = settings
        .into_iter()
        .map(|(name, accs)| {
            let (mean, std) = crate::report::mean_std(&accs);
            (name, mean, std)
        })
        .collect();
    if !bars.is_empty() {
        crate::plot::plot_comparison(out, &bars, "Sweep: test accuracy per setting")?;
    }
    Ok(runs.len())
}
