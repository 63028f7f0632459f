//! One training run into a run directory: load and check everything first, then write
//! `config.toml`, `metrics.csv` (per epoch), `model.safetensors` and `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use web_time::Instant;

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::checkpoint::{save_model, write_atomic};
use crate::config::TrainConfig;
use crate::data::{Dataset, SplitName};
use crate::device::EngineKind;
use crate::error::{Error, Result};
use crate::metrics::{MetricsWriter, Summary};
use crate::model::Params;
use crate::rundir::RunDir;
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
    /// Stop after this epoch's checkpoint with `Error::Paused` (a pruning sweep's rung),
    /// unless the run ends there anyway.
    pub stop_after: Option<usize>,
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

/// The model `config` will train on the data in `data_dir`, planned from the training images'
/// header alone (for a summary printed before the data loads); `None` where the header cannot
/// say or the model does not fit (the run itself then reports why).
pub fn declared_model(config: &TrainConfig, data_dir: &Path) -> Option<Arc<crate::model::Network>> {
    let images = crate::data::locate(data_dir, crate::data::TRAIN_IMAGES);
    let dims = crate::data::idx::declared_dims(&images)?;
    let (&height, &width) = (dims.get(1)?, dims.get(2).unwrap_or(&1));
    // Classes are the labels' largest value, which needs the whole file: take the model's own
    // (the run checks it against the labels).
    let classes = match &config.network {
        Some(specs) => match crate::model::layers_of(specs).ok()?.last()? {
            crate::model::Layer::Dense { units, .. } => *units,
            _ => return None,
        },
        None => *config.layers.last()?,
    };
    config.model_for((height, width), classes).ok()
}

/// The model `config` trains on `image_size` images of `classes` classes with `train_rows`
/// training rows, or why the data cannot train it (every run's check before it trains).
pub fn model_fitting(
    config: &TrainConfig,
    image_size: (usize, usize),
    classes: usize,
    train_rows: usize,
) -> Result<Arc<crate::model::Network>> {
    config.check_against_data(image_size.0 * image_size.1, classes, train_rows)?;
    Ok(config.model_for(image_size, classes)?)
}

/// Where a run starts: afresh, from its checkpoint, or nowhere (it has nothing left to train).
enum Start {
    Fresh,
    Resume(crate::checkpoint::Checkpoint),
    Finished(Summary),
}

/// Where `config`'s run in `dir` starts, or why it may not go on in this process.
fn start_of(config: &TrainConfig, opts: &RunOptions, dir: &RunDir) -> Result<Start> {
    let checkpoint_path = dir.checkpoint();
    if !opts.resume {
        // Listed to start afresh, but another shard has begun it since: it stays where that
        // shard left it, for whoever goes on with it, not trained again from the start (which
        // could take it back below a rung another shard has judged).
        if opts.stop_after.is_some()
            && dir.written_config().is_some_and(|c| c == config.to_toml())
            && let Ok(c) = load_checkpoint(&checkpoint_path)
            && config.describes(&c.model)
        {
            return Err(Error::Paused {
                epoch: c.epochs_done,
            });
        }
        return Ok(Start::Fresh);
    }
    let c = load_checkpoint(&checkpoint_path)?;
    if !config.describes(&c.model) {
        return Err(Error::Usage(format!(
            "{}: checkpoint is {} but the config says {}",
            checkpoint_path.display(),
            c.model.describe(),
            config.model_words(),
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
    // A run with nothing left to train (a finished run resumed to the same end, say) is left
    // as it is: resuming it changes no file.
    if nothing_left(config, &c)
        && let Ok(summary) = dir.read_summary()
    {
        return Ok(Start::Finished(summary));
    }
    // Already at the epoch to stop after: another shard of a pruning sweep took this run to
    // its rung after this process listed it (a waiting shard trains the runs no process
    // holds); training on would carry it past the rung before the rung judged it.
    if opts.stop_after.is_some_and(|stop| c.epochs_done >= stop) {
        return Err(Error::Paused {
            epoch: c.epochs_done,
        });
    }
    Ok(Start::Resume(c))
}

/// The data a run trains on. A resumed run goes on with the data it started on: from the
/// directory it recorded unless told otherwise, and never with other contents, wherever they
/// are.
fn run_data(
    config: &TrainConfig,
    opts: &RunOptions,
    dir: &RunDir,
    resuming: bool,
) -> Result<Arc<Dataset>> {
    let recorded = match resuming {
        true => dir.read_data_identity()?,
        false => None,
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
    Ok(data)
}

/// What a run writes after every epoch: its row of metrics.csv, the checkpoint to continue
/// from, and the best model so far.
struct EpochFiles<'a> {
    config: &'a TrainConfig,
    dir: &'a RunDir,
    model: Arc<crate::model::Network>,
    metrics: MetricsWriter,
    /// The run's legs so far, and the device this process trains on.
    legs: Vec<crate::checkpoint::Leg>,
    leg_device: String,
    /// The hyperparameters a resume changed, recorded with the first epoch it trains.
    changed: Vec<String>,
}

impl EpochFiles<'_> {
    fn write(&mut self, end: &crate::train::EpochEnd<'_>) -> Result<()> {
        let epoch = end.record.epoch;
        self.metrics.append(end.record)?;
        let changed = std::mem::take(&mut self.changed);
        crate::checkpoint::Leg::extend(&mut self.legs, epoch, &self.leg_device, changed);
        // Every epoch: the state to continue from, and the best model so far.
        save_checkpoint(
            &self.dir.checkpoint(),
            &self.model,
            end.state,
            epoch,
            end.stopping,
            end.untrained_val_loss,
            &self.legs,
        )?;
        if end.verdict.improved {
            let best = Params {
                model: self.model.clone(),
                values: end.state.best.clone(),
            };
            save_model(&self.dir.model(), &best, &model_meta(self.config, epoch))?;
        }
        Ok(())
    }
}

/// The metadata model.safetensors carries.
pub fn model_meta(config: &TrainConfig, best_epoch: usize) -> [(&'static str, String); 2] {
    [
        ("name", config.name.clone()),
        ("best_epoch", best_epoch.to_string()),
    ]
}

/// Whether training stops after `record`'s epoch, before the run ends: a pruning sweep's rung,
/// or an interrupt.
fn stop_between_epochs(
    config: &TrainConfig,
    opts: &RunOptions,
    record: &EpochRecord,
    verdict: Verdict,
) -> Result<()> {
    let last = verdict.stop || record.epoch >= config.epochs;
    if opts.stop_after == Some(record.epoch) && !last {
        return Err(Error::Paused {
            epoch: record.epoch,
        });
    }
    if (opts.interrupt.as_ref()).is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst)) {
        return Err(Error::Interrupted {
            epoch: record.epoch,
            dir: opts.out.clone(),
        });
    }
    Ok(())
}

/// Puts checkpoint `c` of the run in `dir` into `engine`, and says where training resumes.
fn resume_from(
    engine: &mut dyn crate::engine::Engine,
    dir: &RunDir,
    c: crate::checkpoint::Checkpoint,
) -> Result<ResumeFrom> {
    engine.set_training_state(&c.state)?;
    Ok(ResumeFrom {
        epochs_done: c.epochs_done,
        stopping: c.stopping,
        records: dir.read_metrics_checked(c.epochs_done)?,
        untrained_val_loss: c.untrained_val_loss,
    })
}

/// Runs `config` as `opts` says, calling `on_epoch` after every epoch (for progress display).
pub fn run_training(
    config: &TrainConfig,
    opts: &RunOptions,
    mut on_epoch: impl FnMut(&EpochRecord, Verdict),
) -> Result<Summary> {
    let start = Instant::now();
    let dir = RunDir::new(&opts.out);
    crate::error::refuse_non_directory(&opts.out, "run directory")?;
    // The hyperparameters a resume changes, recorded with the epochs they train.
    let changed = refuse_before_lock(config, opts, &dir)?;
    // Lock before reading anything of a run already there (a resume's checkpoint), so a
    // second process is turned away before it acts on files the first is rewriting.
    let early_lock = match opts.out.is_dir() {
        true => Some(dir.lock()?),
        false => None,
    };
    let checkpoint = match start_of(config, opts, &dir)? {
        Start::Finished(summary) => return Ok(summary),
        Start::Fresh => None,
        Start::Resume(c) => Some(c),
    };
    let data = run_data(config, opts, &dir, checkpoint.is_some())?;
    let model = model_fitting(config, data.image_size, data.classes, data.train.len)?;
    opts.engine.check_memory(&model, config.batch_size)?;
    let params = Params::init_model(model.clone(), config.init, config.seed);
    let mut engine = opts.engine.build(&params, config.batch_size)?;
    engine.upload(Arc::clone(&data))?;
    let device = engine.describe();
    let legs = (checkpoint.as_ref()).map_or_else(Vec::new, |c| c.legs_so_far());
    let resume = (checkpoint.map(|c| resume_from(engine.as_mut(), &dir, c))).transpose()?;

    crate::error::ensure_dir(&opts.out, "run directory")?;
    let lock = match early_lock {
        Some(lock) => lock,
        None => dir.lock()?,
    };
    if resume.is_none() {
        // A run trained over another (--force, or a sweep starting a changed run afresh).
        dir.clear_previous_end()?;
    }
    write_atomic(&dir.config(), config.to_toml().as_bytes())?;
    dir.write_data_identity(&data.identity)?;
    let mut files = EpochFiles {
        config,
        dir: &dir,
        model,
        metrics: match &resume {
            Some(r) => MetricsWriter::resume(&dir.metrics(), &r.records)?,
            None => MetricsWriter::create(&dir.metrics())?,
        },
        legs,
        leg_device: sums_on(&opts.engine, &device),
        changed,
    };
    // The training loop is awaited in a page; here its futures are ready at once.
    let outcome = pollster::block_on(train(
        engine.as_mut(),
        data.train.len,
        config,
        resume,
        |end| {
            files.write(&end)?;
            on_epoch(end.record, end.verdict);
            stop_between_epochs(config, opts, end.record, end.verdict)
        },
    ))?;
    let test = crate::engine::wait(engine.evaluate(SplitName::Test)).map_err(TrainError::from)?;
    // A run of a GPU pack counts its share of the packed epochs, not the others' time.
    let seconds = (start.elapsed().as_secs_f64() - outcome.other_runs_secs).max(0.0);
    let mut summary = run_end(config, opts, &dir, (&outcome, test), device, seconds)?;
    summary.legs = files.legs;
    summary.write(&dir.summary())?;
    drop(lock);
    match outcome.diverged {
        Some(e) => Err(Error::Train(e)),
        None => Ok(summary),
    }
}

/// What a run writes when training ends, but for its summary's file: the best model and the
/// curves; and the summary of `outcome` and the `test` split, trained on `device` in
/// `seconds`.
fn run_end(
    config: &TrainConfig,
    opts: &RunOptions,
    dir: &RunDir,
    (outcome, test): (&crate::train::TrainOutcome, crate::engine::EvalStats),
    device: String,
    seconds: f64,
) -> Result<Summary> {
    if outcome.best_epoch > 0 {
        let meta = model_meta(config, outcome.best_epoch);
        save_model(&dir.model(), &outcome.best_params, &meta)?;
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::plot::plot_run_curves(
        &opts.out,
        &[crate::plot::RunCurves {
            label: config.name.clone(),
            records: outcome.records.clone(),
            best_epoch: outcome.best_epoch,
        }],
        &config.name,
    )?;
    Ok(summarize(
        config,
        outcome,
        test,
        (opts.engine.device_name().to_string(), device),
        opts.engine.adapter(),
        seconds,
    ))
}

/// Refusals that read only what is already there, made before the run directory is locked
/// so that a refused command changes nothing: a new run into a directory holding a run
/// (unless `force`) or the user's files, and a resume that would change the keys that make
/// the run what it is ([`TrainConfig::resume_changes`]). Returns what a resume changes that
/// it may (hyperparameters).
fn refuse_before_lock(
    config: &TrainConfig,
    opts: &RunOptions,
    dir: &RunDir,
) -> Result<Vec<String>> {
    if !opts.resume {
        if !opts.force && dir.holds_run() {
            return Err(Error::RunExists {
                path: opts.out.clone(),
            });
        }
        dir.refuse_foreign_files(opts.force)?;
        return Ok(Vec::new());
    }
    let Ok(started) = dir.read_config() else {
        return Ok(Vec::new());
    };
    let (fixed, hyperparameters) = config.resume_changes(&started);
    if !fixed.is_empty() {
        return Err(Error::Usage(format!(
            "a resume cannot change {} (they fix the data split and the initial weights for the whole run) (hint: start a new run with --out, e.g. with --seed or --set)",
            fixed.join(", ")
        )));
    }
    Ok(hyperparameters)
}

/// Whether a run resumed from `checkpoint` with `config` has no epoch left to train: it has
/// its epochs, or early stopping (as `config` now sets it) has ended it.
fn nothing_left(config: &TrainConfig, checkpoint: &crate::checkpoint::Checkpoint) -> bool {
    let stopping = checkpoint.stopping.clone().with_settings(
        config.early_stopping_rule,
        config.patience,
        config.early_stopping,
    );
    checkpoint.epochs_done >= config.epochs
        || (checkpoint.epochs_done > 0 && stopping.stops_after(checkpoint.epochs_done))
}

/// The device a run's [`crate::checkpoint::Leg`]s name: on the CPU the engine as it describes
/// itself (`described`, its thread count included, which rounds nothing differently), on a
/// GPU the adapter alone (a run packed with others trains to the same bits as alone).
fn sums_on(engine: &EngineKind, described: &str) -> String {
    match engine.adapter() {
        Some(a) => format!("{} ({})", a.name, a.backend),
        None => described.to_string(),
    }
}

/// [`run_training`] as `--device auto` runs it: when the engine is a GPU that opened but cannot
/// hold this run (a limit, an allocation: errors that come before anything is written), the
/// same run on the CPU with `cpu_threads`, after `on_fallback` hears the GPU's reason.
pub fn run_training_or_cpu(
    config: &TrainConfig,
    opts: &RunOptions,
    cpu_threads: usize,
    mut on_epoch: impl FnMut(&EpochRecord, Verdict),
    on_fallback: impl FnOnce(&crate::gpu::GpuError),
) -> Result<Summary> {
    let result = run_training(config, opts, &mut on_epoch);
    let reason = match (&opts.engine, &result) {
        (EngineKind::Gpu { .. }, Err(e)) => e.gpu_cause(),
        _ => None,
    };
    let Some(reason) = reason else {
        return result;
    };
    on_fallback(reason);
    let on_cpu = RunOptions {
        engine: EngineKind::Cpu {
            threads: cpu_threads,
        },
        ..opts.clone()
    };
    run_training(config, &on_cpu, on_epoch)
}

/// What `summary.json` says of a trained run evaluated on the test split as `test`: on
/// `device` (`cpu`, `gpu`; the line naming it in detail), on `adapter` for a GPU, taking
/// `seconds`. A browser page's summary is the same.
pub fn summarize(
    config: &TrainConfig,
    outcome: &crate::train::TrainOutcome,
    test: crate::engine::EvalStats,
    (device, device_detail): (String, String),
    adapter: Option<&crate::gpu::AdapterSummary>,
    seconds: f64,
) -> Summary {
    Summary {
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
        device,
        device_detail,
        adapter: adapter.map(|a| a.name.clone()),
        backend: adapter.map(|a| a.backend.clone()),
        adapter_index: adapter.map(|a| a.index),
        adapter_pci_bus_id: adapter
            .map(|a| a.pci_bus_id.clone())
            .filter(|id| !id.is_empty()),
        adapter_chosen_by: adapter.and_then(|a| a.chosen_by.clone()),
        seed: config.seed,
        seconds,
        error: outcome.diverged.as_ref().map(ToString::to_string),
        warning: worse_than_untrained(outcome, config.learning_rate),
        legs: Vec::new(),
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
