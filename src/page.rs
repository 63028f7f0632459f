//! A run with no files, as a browser page makes one: a config and a dataset made from the
//! four IDX files' bytes go in; the summary (the keys of `summary.json`), the best model's
//! `model.safetensors` bytes and the test split's confusion matrix come out. The loop is
//! [`train`], so a GPU engine's read-backs are awaited and nothing here blocks a page;
//! natively the same code runs with the futures waited for (the tests compare it with
//! [`crate::run::run_training`]).

use std::sync::Arc;

use web_time::Instant;

use crate::config::TrainConfig;
use crate::data::{Dataset, SplitName};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::Summary;
use crate::model::Params;
use crate::train::{EpochRecord, TrainError, train};

/// What [`train_in_memory`] hands back.
#[derive(Debug, Clone)]
pub struct InMemoryRun {
    pub summary: Summary,
    /// The best-validation model as `model.safetensors` holds it.
    pub model_safetensors: Vec<u8>,
    /// The best model's test split: `confusion[true class][predicted class]`.
    pub confusion: Vec<Vec<usize>>,
    /// metrics.csv's rows.
    pub records: Vec<EpochRecord>,
}

/// The untrained parameters `config` starts from on `data`, after the checks
/// [`crate::run::run_training`] makes before it builds an engine.
pub fn initial_params(config: &TrainConfig, data: &Dataset) -> Result<Params> {
    let (size, classes, rows) = (data.image_size, data.classes, data.train.len);
    let model = crate::run::model_fitting(config, size, classes, rows)?;
    Ok(Params::init_model(model, config.init, config.seed))
}

/// Trains `engine`, built for [`initial_params`] and holding `data`, as `config` says (no
/// checkpoints, nothing written), calling `on_epoch` with each epoch's row. `device` is the
/// summary's (`device`, `device_detail`), `adapter` the GPU it ran on. A run that diverged
/// is an error, as it is for `wgtrain train`.
pub async fn train_in_memory<E: Engine + ?Sized>(
    engine: &mut E,
    config: &TrainConfig,
    data: Arc<Dataset>,
    (device, adapter): ((String, String), Option<&crate::gpu::AdapterSummary>),
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<InMemoryRun> {
    let start = Instant::now();
    let outcome = train(engine, data.train.len, config, None, |end| {
        on_epoch(end.record);
        Ok(())
    })
    .await?;
    if let Some(e) = outcome.diverged {
        return Err(Error::Train(e));
    }
    let test = engine
        .evaluate(SplitName::Test)
        .await
        .map_err(TrainError::from)?;
    let seconds = start.elapsed().as_secs_f64();
    let summary = crate::run::summarize(config, &outcome, test, device, adapter, seconds);
    let meta = crate::run::model_meta(config, outcome.best_epoch);
    let model_safetensors = crate::checkpoint::model_bytes(&outcome.best_params, &meta)
        .map_err(|message| Error::Usage(format!("model.safetensors: {message}")))?;
    let confusion =
        crate::eval::confusion_counts(&outcome.best_params, &data.test.pixels, &data.test.labels);
    Ok(InMemoryRun {
        summary,
        model_safetensors,
        confusion,
        records: outcome.records,
    })
}
