//! One training run into a run directory: load and check everything first, then write
//! `config.toml`, `metrics.csv` (per epoch), `model.safetensors` and `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::checkpoint::{save_model, write_atomic};
use crate::config::TrainConfig;
use crate::data::{DataIdentity, Dataset, SplitName};
use crate::engine::EngineKind;
use crate::error::{Error, Result};
use crate::metrics::{MetricsWriter, Summary};
use crate::model::Params;
use crate::train::{EpochRecord, ResumeFrom, TrainError, Verdict, train};

/// Where and how a run happens (everything that is not a hyperparameter).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub force: bool,
    /// The dataset directory; `None`: on resume the one the run recorded in `data.json`,
    /// else [`crate::data::default_dir`].
    pub data_dir: Option<PathBuf>,
    pub engine: EngineKind,
    /// Continue the run in `out` from its `last.safetensors` (to `config.epochs`).
    pub resume: bool,
    /// When set (by a Ctrl-C handler, say), training stops after the current epoch's
    /// checkpoint with `Error::Interrupted`.
    pub interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Datasets already loaded from `data_dir`, by (seed, validation fraction): a sweep reuses
    /// them instead of reading and checking the files for every run.
    pub datasets: Option<Arc<std::sync::Mutex<DatasetCache>>>,
}

/// Loaded datasets by (seed, validation-fraction bits).
pub type DatasetCache = std::collections::HashMap<(u64, u64), Arc<Dataset>>;

/// The dataset `config` trains on, from `opts`' cache when it holds it.
pub fn dataset_for(config: &TrainConfig, opts: &RunOptions) -> Result<Arc<Dataset>> {
    let dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(crate::data::default_dir);
    dataset_in(config, opts, &dir)
}

/// [`dataset_for`] from `dir`.
fn dataset_in(config: &TrainConfig, opts: &RunOptions, dir: &Path) -> Result<Arc<Dataset>> {
    let key = (config.seed, config.val_fraction.to_bits());
    if let Some(cache) = &opts.datasets
        && let Some(d) = cache.lock().ok().and_then(|c| c.get(&key).cloned())
    {
        return Ok(d);
    }
    let data = Arc::new(Dataset::load(dir, config.val_fraction, config.seed)?);
    if let Some(cache) = &opts.datasets
        && let Ok(mut c) = cache.lock()
    {
        c.insert(key, Arc::clone(&data));
    }
    Ok(data)
}

/// Files that mark a directory as holding a run.
const RUN_FILES: &[&str] = &[
    "summary.json",
    "metrics.csv",
    "model.safetensors",
    "config.toml",
];

fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if !force && RUN_FILES.iter().any(|f| out.join(f).exists()) {
        return Err(Error::RunExists {
            path: out.to_path_buf(),
        });
    }
    Ok(())
}

/// Takes `out/.lock` for as long as the returned file lives: a second process training into
/// the same directory (the same sweep started twice, `--resume` of a run still going) would
/// interleave its epochs with this one's. The OS drops the lock when the process ends, however
/// it ends. Where the filesystem cannot lock, the run goes on unguarded.
fn lock_run_dir(out: &Path) -> Result<std::fs::File> {
    let path = out.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::RunInUse {
            path: out.to_path_buf(),
        }),
        Ok(()) | Err(std::fs::TryLockError::Error(_)) => Ok(file),
    }
}

/// Runs `config` as `opts` says, calling `on_epoch` after every epoch (for progress display).
pub fn run_training(
    config: &TrainConfig,
    opts: &RunOptions,
    mut on_epoch: impl FnMut(&EpochRecord, Verdict),
) -> Result<Summary> {
    let start = Instant::now();
    crate::error::refuse_non_directory(&opts.out, "run directory")?;
    // Lock before reading anything of a run already there (a resume's checkpoint), so a
    // second process is turned away before it acts on files the first is rewriting.
    let early_lock = if opts.out.is_dir() {
        Some(lock_run_dir(&opts.out)?)
    } else {
        None
    };
    let checkpoint_path = opts.out.join("last.safetensors");
    let checkpoint = if opts.resume {
        let c = load_checkpoint(&checkpoint_path)?;
        if c.widths != config.layers || c.activation != config.activation {
            return Err(Error::Usage(format!(
                "{}: checkpoint is {:?} {} but the config says {:?} {}",
                checkpoint_path.display(),
                c.widths,
                c.activation.name(),
                config.layers,
                config.activation.name()
            )));
        }
        if c.epochs_done > config.epochs {
            // Training cannot be undone; rewriting config.toml with fewer epochs than
            // metrics.csv holds would leave the run contradicting itself.
            return Err(Error::Usage(format!(
                "the run has {} epochs done, more than epochs = {} (hint: --set epochs=N with N ≥ {} to go further)",
                c.epochs_done, config.epochs, c.epochs_done
            )));
        }
        Some(c)
    } else {
        check_out_dir(&opts.out, opts.force)?;
        None
    };
    // A resumed run goes on with the data it started on: from the directory it recorded unless
    // told otherwise, and never with other contents, wherever they are.
    let recorded = match &checkpoint {
        Some(_) => read_data_identity(&opts.out)?,
        None => None,
    };
    let data_dir = match (&opts.data_dir, &recorded) {
        (Some(dir), _) => dir.clone(),
        (None, Some(r)) => r.dir.clone(),
        (None, None) => crate::data::default_dir(),
    };
    let data = dataset_in(config, opts, &data_dir)?;
    if let Some(recorded) = recorded
        && let Some(difference) = recorded.difference(&data.identity)
    {
        return Err(Error::DataChanged {
            what: format!("run {}", opts.out.display()),
            recorded: recorded.dir,
            dir: data.identity.dir.clone(),
            difference,
        });
    }
    config.check_against_data(data.features, data.classes, data.train.len)?;
    opts.engine.check_memory(&config.layers)?;
    let params = Params::init(&config.layers, config.activation, config.init, config.seed);
    let mut engine = opts.engine.build(&params, config.batch_size)?;
    engine.upload(Arc::clone(&data))?;
    let resume = match checkpoint {
        Some(c) => {
            engine.set_training_state(&c.state)?;
            let records = read_metrics_checked(&opts.out.join("metrics.csv"), c.epochs_done)?;
            Some(ResumeFrom {
                epochs_done: c.epochs_done,
                stopping: c.stopping,
                records,
                untrained_val_loss: c.untrained_val_loss,
            })
        }
        None => None,
    };

    crate::error::ensure_dir(&opts.out, "run directory")?;
    let _lock = match early_lock {
        Some(lock) => lock,
        None => lock_run_dir(&opts.out)?,
    };
    if resume.is_none() {
        // A run trained over another (--force, or a sweep starting a changed run afresh)
        // must not leave the old run's end behind until its own: a stale summary.json would
        // mark it finished, a stale checkpoint would be resumed, if it stops early.
        for stale in ["summary.json", "last.safetensors", "model.safetensors"] {
            match std::fs::remove_file(opts.out.join(stale)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(opts.out.join(stale), e));
                }
                _ => {}
            }
        }
    }
    write_atomic(&opts.out.join("config.toml"), config.to_toml().as_bytes())?;
    write_data_identity(&opts.out, &data.identity)?;
    let mut metrics = match &resume {
        Some(r) => MetricsWriter::resume(&opts.out.join("metrics.csv"), &r.records)?,
        None => MetricsWriter::create(&opts.out.join("metrics.csv"))?,
    };
    let outcome = train(engine.as_mut(), data.train.len, config, resume, |end| {
        metrics.append(end.record)?;
        // Every epoch: the state to continue from, and the best model so far.
        save_checkpoint(
            &checkpoint_path,
            &config.layers,
            config.activation,
            end.state,
            end.record.epoch,
            end.stopping,
            end.untrained_val_loss,
        )?;
        if end.verdict.improved {
            let best = Params {
                widths: config.layers.clone(),
                activation: config.activation,
                values: end.state.best.clone(),
            };
            let meta = [
                ("name", config.name.clone()),
                ("best_epoch", end.record.epoch.to_string()),
            ];
            save_model(&opts.out.join("model.safetensors"), &best, &meta)?;
        }
        on_epoch(end.record, end.verdict);
        if opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(Error::Interrupted {
                epoch: end.record.epoch,
                dir: opts.out.clone(),
            });
        }
        Ok(())
    })?;
    let test = engine.evaluate(SplitName::Test).map_err(TrainError::from)?;
    let model_meta = [
        ("name", config.name.clone()),
        ("best_epoch", outcome.best_epoch.to_string()),
    ];
    if outcome.best_epoch > 0 {
        save_model(
            &opts.out.join("model.safetensors"),
            &outcome.best_params,
            &model_meta,
        )?;
    }
    crate::plot::plot_run_curves(
        &opts.out,
        &[crate::plot::RunCurves {
            label: config.name.clone(),
            records: outcome.records.clone(),
            best_epoch: outcome.best_epoch,
        }],
        &config.name,
    )?;
    let summary = Summary {
        name: config.name.clone(),
        status: if outcome.diverged.is_some() {
            "diverged"
        } else {
            "finished"
        }
        .into(),
        test_accuracy: test.accuracy,
        test_loss: test.loss,
        best_epoch: outcome.best_epoch,
        best_val_loss: Some(outcome.best_val_loss).filter(|l| l.is_finite()),
        epochs_run: outcome.records.len(),
        stopped_early: outcome.stopped_early,
        diverged: outcome.diverged.is_some(),
        device: opts.engine.device_name().into(),
        device_detail: engine.describe(),
        adapter: opts.engine.adapter().map(|a| a.name.clone()),
        backend: opts.engine.adapter().map(|a| a.backend.clone()),
        seed: config.seed,
        seconds: start.elapsed().as_secs_f64(),
        error: outcome.diverged.as_ref().map(ToString::to_string),
        warning: worse_than_untrained(&outcome, config.learning_rate),
    };
    summary.write(&opts.out.join("summary.json"))?;
    match outcome.diverged {
        Some(e) => Err(Error::Train(e)),
        None => Ok(summary),
    }
}

/// A warning for a run that ended, undiverged, with a best validation loss above the untrained
/// network's: its numbers are finite, but training made the model worse (a learning rate far
/// too large, say), and a results table should not take it for a result.
fn worse_than_untrained(
    outcome: &crate::train::TrainOutcome,
    learning_rate: f64,
) -> Option<String> {
    let untrained = outcome.untrained_val_loss?;
    let loss = |l: f64| {
        if l < 1e4 {
            format!("{l:.4}")
        } else {
            format!("{l:.3e}")
        }
    };
    (outcome.diverged.is_none() && outcome.best_val_loss > untrained).then(|| {
        format!(
            "training made the model worse: its best validation loss {} is above the untrained network's {} (hint: lower learning_rate, e.g. --set learning_rate={})",
            loss(outcome.best_val_loss),
            loss(untrained),
            crate::train::tenth_of(learning_rate)
        )
    })
}

/// The file in a run directory that records the data the run trained on.
pub const DATA_FILE: &str = "data.json";

/// The data identity a run recorded, or `None` for a run from before runs recorded one.
pub fn read_data_identity(dir: &Path) -> Result<Option<DataIdentity>> {
    let path = dir.join(DATA_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

fn write_data_identity(dir: &Path, identity: &DataIdentity) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(identity).map_err(|e| Error::Usage(e.to_string()))?;
    text.push('\n');
    write_atomic(&dir.join(DATA_FILE), text.as_bytes())?;
    Ok(())
}

/// The first `epochs` rows of a run's metrics.csv, which must be epochs 1 to `epochs` in
/// order: a file with rows removed or reordered does not belong to the checkpoint, and going
/// on from it would write epochs 1, 2, 8, 9 and call that four.
pub fn read_metrics_checked(path: &Path, epochs: usize) -> Result<Vec<EpochRecord>> {
    let records = read_metrics(path, epochs)?;
    let numbers: Vec<usize> = records.iter().map(|r| r.epoch).collect();
    if numbers != (1..=epochs).collect::<Vec<_>>() {
        let shown = |n: &[usize]| {
            let text: Vec<String> = n.iter().take(12).map(ToString::to_string).collect();
            match n.len() {
                0 => "none".to_string(),
                len if len > 12 => format!("{}, …", text.join(", ")),
                _ => text.join(", "),
            }
        };
        return Err(Error::Usage(format!(
            "{}: holds epochs {} where the checkpoint has epochs 1 to {epochs} done (the file was edited, or belongs to another run) (hint: restore it, or train the run again with --force)",
            path.display(),
            shown(&numbers)
        )));
    }
    Ok(records)
}

/// The first `epochs` rows of metrics.csv as they are.
pub fn read_metrics(path: &Path, epochs: usize) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line} is not a metrics row"),
            ),
        )
    };
    text.lines()
        .skip(1)
        .take(epochs)
        .enumerate()
        .map(|(i, line)| {
            let v: Vec<f64> = line
                .split(',')
                .map(|f| f.parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(i + 2))?;
            match v[..] {
                [
                    epoch,
                    train_loss,
                    train_accuracy,
                    val_loss,
                    val_accuracy,
                    seconds,
                ] => Ok(EpochRecord {
                    epoch: epoch as usize,
                    train_loss,
                    train_accuracy,
                    val_loss,
                    val_accuracy,
                    seconds,
                    train_samples: 0,
                }),
                _ => Err(bad(i + 2)),
            }
        })
        .collect()
}
