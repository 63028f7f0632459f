//! Sweeps: a base config, a list or grid of overrides or a random search (`search`) and a
//! list of seeds, expanded into runs in a fixed order; each run trains into its own directory
//! under one output directory, so a rerun skips finished runs and any number of shards
//! (`--shard I/N`, Slurm arrays, Kubernetes indexed jobs) can share the directory. Results are
//! rebuilt from whatever has finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ConfigError, TrainConfig};
use crate::error::{Error, Result};
use crate::rundir::RunDir;

mod pack;
pub mod prune;
mod report;
mod run;
mod rungs;
mod schedule;
pub mod search;
mod shard;
pub use pack::{PackedRun, gpu_seats, max_pack, pack_groups, pack_key, train_pack};
pub use prune::train_pruned;
pub use report::{RESULTS_HEADER, ReportedRuns, report};
use run::value_text;
pub use run::{RunTag, SWEEP_FILE, SweepRun, is_finished_as, resumable_epochs, runs_text};
pub use rungs::Prune;
pub use schedule::{MAX_AUTO_PACK, SweepObserver, SweepOptions, SweepTally, train_runs};
pub use shard::{Shard, ShardError};

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
    /// Random search: a distribution per key, drawn `trials` times.
    #[serde(default)]
    search: BTreeMap<String, search::Distribution>,
    /// How many settings a search draws.
    trials: Option<usize>,
    /// What a search's draws are computed from (the trials, not the training seeds).
    #[serde(default)]
    search_seed: u64,
    /// Successive halving over the settings (`rungs::Prune`).
    prune: Option<Prune>,
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

/// A name safe as a directory name: letters, digits, `.`, `-`, `_`, `=`; others become `_`.
fn safe_name(s: &str) -> String {
    let safe: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.len() <= MAX_SETTING_BYTES {
        return safe;
    }
    // A readable start and a short hash of the whole setting: settings that share the start
    // still get directories of their own.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(s.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", &safe[..MAX_SETTING_BYTES - hash.len() - 1])
}

/// The longest name a setting takes (ASCII, after [`safe_name`]): with `-seed<N>` (at most 24
/// bytes more) a run's directory name stays well inside the 255 bytes a filesystem allows.
const MAX_SETTING_BYTES: usize = 96;

/// About what one run takes in memory while a sweep is planned (its config, overrides and
/// names): a sweep whose runs would not fit in the memory available is refused before any
/// is made.
const PLANNED_RUN_BYTES: u128 = 4096;

/// The most arithmetic `runs` can take (every epoch of each; for a pruning sweep, the bound of
/// its successive halving over their settings: [`Prune::most_cost`]), with the models and
/// training rows the data in `data_dir` declares; `None` where it cannot say.
pub fn most_flops(runs: &[&SweepRun], data_dir: &Path) -> Option<f64> {
    // (setting, its bracket, its cost per epoch, its runs' epochs)
    let mut settings: Vec<(&str, usize, f64, usize)> = Vec::new();
    // Each setting's place in `settings`: a search of many trials stays linear.
    let mut places: std::collections::HashMap<&str, usize> = Default::default();
    for run in runs {
        let flops = crate::bench::config_epoch_flops(&run.config, data_dir)?;
        match places.get(run.setting.as_str()) {
            Some(&i) => {
                let s = &mut settings[i];
                s.2 += flops;
                s.3 = s.3.max(run.config.epochs);
            }
            None => {
                places.insert(&run.setting, settings.len());
                settings.push((&run.setting, run.bracket, flops, run.config.epochs));
            }
        }
    }
    let in_bracket = |b: usize| -> Vec<(f64, usize)> {
        settings
            .iter()
            .filter(|s| s.1 == b)
            .map(|s| (s.2, s.3))
            .collect()
    };
    Some(match runs.first().and_then(|r| r.prune) {
        // Each bracket is successive halving of its own.
        Some(prune) => (0..prune.brackets.max(1))
            .map(|b| prune.bracket(b).most_cost(&in_bracket(b)))
            .sum(),
        None => settings
            .iter()
            .map(|&(_, _, cost, epochs)| cost * epochs as f64)
            .sum(),
    })
}

/// How many runs a sweep may make unless `--max-runs` allows more: enough for any grid a
/// person means to train, few enough that a typo in a grid (a 10⁶-point product) is refused
/// before it makes a single run directory.
pub const DEFAULT_MAX_RUNS: usize = 1000;

/// Expands a sweep file into its runs, in a fixed order (settings in file order, grid in key
/// order, then seeds), applying `extra` overrides to every run. A sweep of more than
/// `max_runs` runs is refused before any is built. Errors about the sweep file's own contents
/// do not repeat its path: the caller names the file (`sweep FILE: …`).
pub fn expand(path: &Path, extra: &[String], max_runs: usize) -> Result<Vec<SweepRun>> {
    let file = read_sweep_file(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    check_search(&file)?;
    check_sweep_keys(&file, extra)?;
    if let Some(prune) = &file.prune {
        prune.check().map_err(Error::Usage)?;
    }
    refuse_too_many(&file, max_runs)?;
    let settings = settings_of(&file)?;
    if file.seeds.is_empty() {
        return Err(Error::Usage("`seeds` is empty".to_string()));
    }
    let load_base = |overrides: &[String]| match file.base.as_ref() {
        Some(p) => TrainConfig::load(&dir.join(p), overrides),
        None => TrainConfig::from_toml_str("", path, "base", overrides),
    };
    check_search_values(&file.search, load_base)?;
    let brackets = file.prune.map_or_else(
        || vec![0; settings.len()],
        |p| p.brackets_for(settings.len()),
    );
    let mut runs = Vec::new();
    for (spec, bracket) in settings.into_iter().zip(brackets) {
        // Applied as TOML (strings quoted); shown bare in results.csv.
        let overrides: Vec<String> = (spec.set.iter()).map(|(k, v)| format!("{k}={v}")).collect();
        let shown: Vec<String> = (spec.set.iter())
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        let setting = safe_name(&setting_name(&spec));
        for &seed in &file.seeds {
            // A pruning sweep's runs train to max_epochs unless told otherwise.
            let mut all: Vec<String> = file
                .prune
                .iter()
                .map(|p| format!("epochs={}", p.max_epochs))
                .collect();
            all.extend(overrides.iter().cloned());
            all.push(format!("name=\"{setting}\""));
            all.extend(extra.iter().cloned());
            all.push(format!("seed={seed}"));
            // A setting that changes its config is no longer the paper's experiment: loading
            // with overrides drops the file's `paper` figures then (config::from_toml_str).
            let config = match spec.config.as_ref().or(file.base.as_ref()) {
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
                prune: file.prune,
                bracket,
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

/// The sweep file at `path`, parsed; a training config given in its place is named as one.
fn read_sweep_file(path: &Path) -> Result<SweepFile> {
    let text = crate::files::read_to_string(path).map_err(|e| Error::Usage(e.to_string()))?;
    toml::from_str(&text).map_err(|e| {
        // A training config given where a sweep file goes: say so, not "unknown field".
        let config_key = toml::from_str::<toml::Table>(&text).ok().and_then(|t| {
            t.keys()
                .find(|k| crate::config::KEYS.contains(&k.as_str()))
                .cloned()
        });
        // The caller names the file; the message names the line.
        Error::Usage(match config_key {
            Some(key) => format!(
                "`{key}` is a config key: this is a training config, not a sweep file (hint: `wgtrain train --config {}`, or name it as `base = \"...\"` in a sweep file)",
                path.display()
            ),
            None => crate::config::toml_error_line(&text, &e),
        })
    })
}

/// Refuses a sweep of more than `max_runs` runs, or of more than this machine's memory can
/// plan, before any run is built.
fn refuse_too_many(file: &SweepFile, max_runs: usize) -> Result<()> {
    let grid_points = file
        .grid
        .values()
        .try_fold(1usize, |n, values| n.checked_mul(values.len()));
    let settings_count = match (file.grid.is_empty(), grid_points) {
        _ if !file.search.is_empty() => file.trials,
        (true, _) => Some(file.runs.len().max(1)),
        (false, points) => points.and_then(|p| p.checked_add(file.runs.len())),
    };
    let total = settings_count.and_then(|n| n.checked_mul(file.seeds.len()));
    if total.is_none_or(|n| n > max_runs) {
        let axes: Vec<String> = file
            .grid
            .iter()
            .map(|(k, v)| format!("{} {k}", v.len()))
            .collect();
        return Err(Error::SweepTooLarge {
            runs: total.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
            settings: format!(
                "{}{}",
                if axes.is_empty() {
                    String::new()
                } else {
                    format!("grid of {} = ", axes.join(" × "))
                },
                settings_count.map_or_else(|| "too many".to_string(), |n| n.to_string())
            ),
            seeds: file.seeds.len(),
            max_runs,
        });
    }
    if let (Some(total), Some(available)) = (total, crate::host::available_memory_bytes())
        && total as u128 * PLANNED_RUN_BYTES > available as u128
    {
        return Err(Error::Usage(format!(
            "{total} runs would take about {:.0} GiB of memory to plan, more than this machine has available (hint: fewer trials, or a sweep in parts)",
            (total as u128 * PLANNED_RUN_BYTES) as f64 / (1u64 << 30) as f64,
        )));
    }
    Ok(())
}

/// The sweep's settings in a fixed order: its `runs`, its grid (in key order), its drawn
/// trials; the base alone when it gives none.
fn settings_of(file: &SweepFile) -> Result<Vec<RunSpec>> {
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
    if let Some(trials) = file.trials {
        let width = (trials.max(1) - 1).to_string().len();
        let drawn = search::draw_trials(&file.search, trials, file.search_seed);
        settings.extend(drawn.into_iter().enumerate().map(|(i, set)| RunSpec {
            name: Some(format!("trial{i:0width$}")),
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
    Ok(settings)
}

/// A setting's name: its own, else its overrides (`learning_rate=0.1,momentum=0.9`), else its
/// config file's stem, else `base`.
fn setting_name(spec: &RunSpec) -> String {
    let RunSpec {
        name,
        config: config_path,
        set: sets,
    } = spec;
    match (name, config_path) {
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
    }
}

/// `seed` and `name` are the sweep's own: it trains every setting with each of `seeds` and
/// names each run after its setting, overriding whatever a setting or `--set` gives them, so
/// one that tries is refused (it would train seed 1 under a heading that says seed 3). A seed
/// listed twice would make two runs of one directory.
fn check_sweep_keys(file: &SweepFile, extra: &[String]) -> Result<()> {
    let set_keys = file.runs.iter().flat_map(|r| {
        r.set
            .keys()
            .map(|k| (format!("a `[[runs]]` entry's `set.{k}`"), k.as_str()))
    });
    let where_set = file
        .grid
        .keys()
        .map(|k| (format!("`grid.{k}`"), k.as_str()))
        .chain(
            file.search
                .keys()
                .map(|k| (format!("`search.{k}`"), k.as_str())),
        )
        .chain(set_keys)
        .chain(extra.iter().map(|arg| {
            let key = arg.split_once('=').map_or(arg.as_str(), |(k, _)| k).trim();
            (format!("--set {arg}"), key)
        }));
    for (place, key) in where_set {
        let why = match key {
            "seed" => {
                "a sweep trains each setting with every seed of its `seeds` (hint: `seeds = [1, 2, 3]` in the sweep file)"
            }
            "name" => {
                "a sweep names each run after its setting (hint: a `[[runs]]` entry's own `name = \"...\"`)"
            }
            _ => continue,
        };
        return Err(Error::Usage(format!("{place}: {why}")));
    }
    let mut seeds = file.seeds.clone();
    seeds.sort_unstable();
    if let Some(w) = seeds.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Usage(format!(
            "`seeds` lists {} twice: each seed trains each setting once",
            w[0]
        )));
    }
    Ok(())
}

/// A search's own mistakes, before anything is expanded: `[search]` without `trials` or the
/// reverse, no trials, a search beside a grid or a list of runs, and each distribution's
/// [`search::Distribution::check`].
fn check_search(file: &SweepFile) -> Result<()> {
    let usage = |message: &str| Err(Error::Usage(message.to_string()));
    match (file.search.is_empty(), file.trials) {
        (true, None) => return Ok(()),
        (false, None) => {
            return usage("`[search]` needs `trials = N`, the number of settings to draw from it");
        }
        (true, Some(_)) => {
            return usage("`trials` is set but there is no `[search]` to draw the trials from");
        }
        (false, Some(0)) => return usage("`trials = 0` draws nothing: ask for at least 1"),
        (false, Some(_)) => {}
    }
    if !file.grid.is_empty() || !file.runs.is_empty() {
        return usage(
            "a sweep is a `[grid]`, a list of `[[runs]]` or a `[search]`: this one has a search and another (hint: make the grid's keys `choice` distributions)",
        );
    }
    for (key, distribution) in &file.search {
        distribution.check(key).map_err(Error::Usage)?;
    }
    Ok(())
}

/// Every value a search may draw must suit its key: a number for a key that takes one, and
/// both ends of each range and every choice must load through the base config (`load_base`
/// applies overrides to it) as a run would.
fn check_search_values(
    space: &BTreeMap<String, search::Distribution>,
    load_base: impl Fn(&[String]) -> std::result::Result<TrainConfig, ConfigError>,
) -> Result<()> {
    if space.is_empty() {
        return Ok(());
    }
    let base_values: toml::Table = toml::from_str(&load_base(&[])?.to_toml()).unwrap_or_default();
    for (key, distribution) in space {
        let numeric = !matches!(distribution, search::Distribution::Choice(_));
        if let Some((value, kind)) = base_values
            .get(key)
            .filter(|v| numeric && !v.is_integer() && !v.is_float())
            .map(|v| (v, v.type_str()))
        {
            return Err(Error::Usage(format!(
                "`search.{key}` draws {}, but {key} takes {} {kind} such as {value} (hint: `{key} = {{ choice = [...] }}`)",
                distribution.draws(),
                if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                },
            )));
        }
        for value in distribution.extremes() {
            if let Err(e) = load_base(&[format!("{key}={value}")]) {
                return Err(Error::Usage(format!(
                    "`search.{key}` draws {}, but {key} = {} does not load: {e}",
                    distribution.draws(),
                    value_text(&value)
                )));
            }
        }
    }
    Ok(())
}

/// What `sweep.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
struct SweepRecord {
    data: crate::data::DataIdentity,
    /// The pruning its runs were judged by (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prune: Option<Prune>,
    /// Whether `prune` is recorded: false in a sweep.json written before wgtrain recorded
    /// it, whose sweep (pruned or not, in progress or not) is taken as its file now says.
    #[serde(default)]
    prune_recorded: bool,
}

/// The names a sweep writes in its directory beside its runs' directories.
const SWEEP_OUTPUTS: [&str; 7] = [
    SWEEP_FILE,
    "results.csv",
    "results.md",
    "comparison.png",
    "comparison.svg",
    "validation.png",
    "validation.svg",
];

/// Refuses a directory without a sweep record that holds what a sweep did not write: a sweep
/// there would write its results and run directories among the user's files. Its results
/// and pictures count as a sweep's only beside run directories a sweep tagged (a sweep from
/// before sweeps recorded themselves); elsewhere a `results.md` or a `comparison.png` is the
/// user's, like any file.
fn refuse_foreign_files(out: &Path) -> Result<()> {
    let tagged = report::holds_sweep(out);
    let foreign = crate::rundir::foreign_entries(out, |name| {
        (tagged && SWEEP_OUTPUTS.contains(&name))
            || RunDir::new(out.join(name)).holds_only_run_files()
    });
    // Another shard of the sweep, started at the same moment, may have made it the sweep's
    // directory since (its record is the first thing it writes): then the check was its.
    if foreign.is_empty() || out.join(SWEEP_FILE).is_file() {
        return Ok(());
    }
    Err(Error::ForeignFiles {
        what: "sweep directory",
        path: out.to_path_buf(),
        names: crate::rundir::list_names(&foreign),
        force: "",
    })
}

/// Makes `out` a sweep directory training on the data in `data` (`None`: the directory the
/// sweep recorded when it first ran, else the vendored data) and returns that directory. A
/// sweep goes on only with the data it started with: a rerun given other data (or whose data
/// changed on disk) is refused, as is a run directory of it that trained on other data, so a
/// results table never mixes two datasets. Likewise its pruning (`prune`, the sweep file's):
/// runs pruned by one `[prune]` are not the runs another would have pruned. `runs` are the
/// runs this process may train (a shard's; every run of a pruning sweep), each checked
/// against the data before any starts.
pub fn prepare_out(
    out: &Path,
    data: Option<PathBuf>,
    runs: &[&SweepRun],
    prune: Option<Prune>,
) -> Result<PathBuf> {
    crate::error::refuse_non_directory(out, "sweep directory")?;
    let record_path = out.join(SWEEP_FILE);
    let recorded: Option<SweepRecord> = crate::metrics::read_json_if_present(&record_path)?;
    if recorded.is_none() {
        refuse_foreign_files(out)?;
    }
    if let Some(r) = &recorded
        && r.prune_recorded
        && r.prune != prune
    {
        let judged = |p: Option<Prune>| p.map_or("no pruning".to_string(), |p| p.to_string());
        return Err(Error::PruneChanged {
            path: out.to_path_buf(),
            was: judged(r.prune),
            now: judged(prune),
        });
    }
    let dir = match (data, &recorded) {
        (Some(d), _) => d,
        (None, Some(r)) => r.data.dir.clone(),
        (None, None) => crate::data::default_dir(),
    };
    let identity = crate::data::identity_of_dir(&dir)?;
    let changed = |what: String, was: &crate::data::DataIdentity| match was.difference(&identity) {
        Some(difference) => Err(Error::DataChanged {
            what,
            recorded: was.dir.clone(),
            dir: identity.dir.clone(),
            difference,
        }),
        None => Ok(()),
    };
    if let Some(r) = &recorded {
        changed(format!("sweep {}", out.display()), &r.data)?;
    }
    for run in runs {
        let run_dir = out.join(&run.id);
        if let Some(was) = RunDir::new(&run_dir).read_data_identity()? {
            changed(format!("run {}", run_dir.display()), &was)?;
        }
    }
    check_runs_fit(runs, &dir)?;
    crate::error::ensure_dir(out, "sweep directory")?;
    crate::metrics::write_json(
        &record_path,
        &SweepRecord {
            data: identity,
            prune,
            prune_recorded: true,
        },
    )?;
    Ok(dir)
}

/// Every run's config against the data in `dir` (the checks each run makes before it trains),
/// before any run starts: a setting the data cannot train (a search's `layers` choice of
/// another input width, a batch larger than the training split) ended the sweep midway,
/// after the runs before it had trained.
fn check_runs_fit(runs: &[&SweepRun], dir: &Path) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let train = crate::data::read_pair(dir, crate::data::TRAIN_IMAGES, crate::data::TRAIN_LABELS)?;
    let classes = train.checked_classes()?;
    for run in runs {
        let val_fraction = run.config.val_fraction;
        let (train_rows, _) = crate::data::split_sizes(train.count, val_fraction).ok_or(
            crate::data::DataError::SplitTooSmall {
                count: train.count,
                val_fraction,
            },
        )?;
        crate::run::model_fitting(&run.config, (train.rows, train.cols), classes, train_rows)
            .map_err(|e| Error::SweepRun {
                id: run.id.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// Where a sweep of `file` writes unless told: `runs/sweep-<file's stem>`.
pub fn default_out(file: &Path) -> std::path::PathBuf {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep");
    std::path::PathBuf::from("runs").join(format!("sweep-{stem}"))
}

/// This process's part of a sweep: the runs its shard takes, and the runs it may train. A
/// pruning shard may train any run of the sweep to a rung (one no process holds: see
/// [`train_pruned`]), so its output directory is prepared for all of them.
pub struct ShardPlan<'a> {
    pub all: &'a [SweepRun],
    pub mine: Vec<&'a SweepRun>,
    pub may_train: Vec<&'a SweepRun>,
    pub prune: Option<Prune>,
    pub shard: Shard,
}

impl<'a> ShardPlan<'a> {
    pub fn new(all: &'a [SweepRun], shard: Shard) -> Self {
        let mine: Vec<&SweepRun> = (all.iter().enumerate())
            .filter(|(i, _)| shard.takes(*i))
            .map(|(_, run)| run)
            .collect();
        let prune = all.first().and_then(|r| r.prune);
        let may_train = match prune {
            Some(_) => all.iter().collect(),
            None => mine.clone(),
        };
        ShardPlan {
            all,
            mine,
            may_train,
            prune,
            shard,
        }
    }

    /// `12 runs, this process takes 3 (shard 1/4)`.
    pub fn describe(&self) -> String {
        format!(
            "{}, this process takes {} (shard {}/{})",
            runs_text(self.all.len()),
            self.mine.len(),
            self.shard.index,
            self.shard.count
        )
    }

    /// Trains this shard's runs: through the rungs with pruning, else each to its end.
    pub fn train(&self, opts: &SweepOptions, observer: &dyn SweepObserver) -> Result<SweepTally> {
        match &self.prune {
            Some(prune) => train_pruned(self.all, &self.mine, prune, opts, observer),
            None => train_runs(&self.mine, opts, observer),
        }
    }
}
