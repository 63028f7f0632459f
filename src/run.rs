//! One training run into a run directory: load and check everything first, then write
//! `config.toml`, `metrics.csv` (per epoch), `model.safetensors` and `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{save_model, write_atomic};
use crate::config::TrainConfig;
use crate::data::{Dataset, SplitName};
use crate::engine::EngineKind;
use crate::error::{Error, Result};
use crate::metrics::{MetricsWriter, Summary};
use crate::model::Params;
use crate::train::{EpochRecord, TrainError, Verdict, train};

/// Where and how a run happens (everything that is not a hyperparameter).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub force: bool,
    pub data_dir: PathBuf,
    pub engine: EngineKind,
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

/// Runs `config` as `opts` says, calling `on_epoch` after every epoch (for progress display).
pub fn run_training(
    config: &TrainConfig,
    opts: &RunOptions,
    mut on_epoch: impl FnMut(&EpochRecord, Verdict),
) -> Result<Summary> {
    let start = Instant::now();
    check_out_dir(&opts.out, opts.force)?;
    let data = Arc::new(Dataset::load(
        &opts.data_dir,
        config.val_fraction,
        config.seed,
    )?);
    config.check_against_data(data.features, data.classes, data.train.len)?;
    let params = Params::init(&config.layers, config.activation, config.init, config.seed);
    let mut engine = opts.engine.build(&params, config.batch_size)?;
    engine.upload(Arc::clone(&data))?;

    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(&opts.out.join("config.toml"), config.to_toml().as_bytes())?;
    let mut metrics = MetricsWriter::create(&opts.out.join("metrics.csv"))?;
    let outcome = train(
        engine.as_mut(),
        data.train.len,
        config,
        |record, verdict| {
            metrics.append(record)?;
            on_epoch(record, verdict);
            Ok(())
        },
    )?;
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
    };
    summary.write(&opts.out.join("summary.json"))?;
    match outcome.diverged {
        Some(e) => Err(Error::Train(e)),
        None => Ok(summary),
    }
}
