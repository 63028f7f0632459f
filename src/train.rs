//! The only training loop: seeded epochs over an [`Engine`], early stopping, and keeping the
//! best-validation weights. Knows no files and no wgpu; callers observe each epoch.

use web_time::Instant;

use crate::config::{EarlyStoppingRule, TrainConfig};
use crate::data::{SplitName, epoch_order};
use crate::engine::{Engine, EngineError, TrainingState};
use crate::model::{MAX_PARAMETER_MAGNITUDE, Network, Params, first_unusable};

/// Errors that end training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "training diverged: {what} at epoch {epoch}{step} (hint: lower learning_rate, e.g. --set learning_rate={lower})"
    )]
    Diverged {
        what: String,
        epoch: usize,
        step: String,
        lower: String,
    },
}

/// One row of `metrics.csv` (its columns: `metrics::METRICS_COLUMNS`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
    /// Training rows seen this epoch (for samples/s; not part of metrics.csv).
    pub train_samples: usize,
}

/// Verdict of the early-stopping rule after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// This epoch's validation loss is the best so far.
    pub improved: bool,
    /// Training should stop after this epoch.
    pub stop: bool,
}

/// Early-stopping bookkeeping for both rules (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    rule: EarlyStoppingRule,
    patience: usize,
    enabled: bool,
    best_loss: f64,
    best_epoch: usize,
    previous_loss: f64,
    rising_streak: usize,
}

impl EarlyStopping {
    /// With `enabled = false` it still tracks the best epoch but never stops.
    pub fn new(rule: EarlyStoppingRule, patience: usize, enabled: bool) -> Self {
        EarlyStopping {
            rule,
            patience,
            enabled,
            best_loss: f64::INFINITY,
            best_epoch: 0,
            previous_loss: f64::INFINITY,
            rising_streak: 0,
        }
    }

    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }

    pub fn best_loss(&self) -> f64 {
        self.best_loss
    }

    /// Records epoch `epoch`'s validation loss.
    pub fn observe(&mut self, epoch: usize, val_loss: f64) -> Verdict {
        let improved = val_loss < self.best_loss;
        if improved {
            self.best_loss = val_loss;
            self.best_epoch = epoch;
        }
        // "Rising" counts consecutive epochs whose loss exceeds the epoch before's.
        self.rising_streak = if val_loss > self.previous_loss {
            self.rising_streak + 1
        } else {
            0
        };
        self.previous_loss = val_loss;
        Verdict {
            improved,
            stop: self.stops_after(epoch),
        }
    }

    /// Whether the rule, as it stands after epoch `epoch` was observed, says to stop: what
    /// [`EarlyStopping::observe`] returned for that epoch, or would with the settings now held.
    pub fn stops_after(&self, epoch: usize) -> bool {
        self.enabled
            && match self.rule {
                EarlyStoppingRule::Rising => self.rising_streak >= self.patience,
                EarlyStoppingRule::NoImprovement => {
                    epoch.saturating_sub(self.best_epoch) >= self.patience
                }
            }
    }

    /// The best epoch of recorded epochs (0 when none has a finite validation loss): the
    /// one [`EarlyStopping::observe`] would have kept, the first of the lowest losses.
    pub fn best_epoch_of(records: &[EpochRecord]) -> usize {
        let mut stopping = EarlyStopping::new(EarlyStoppingRule::NoImprovement, 1, false);
        for r in records {
            stopping.observe(r.epoch, r.val_loss);
        }
        stopping.best_epoch
    }

    /// The same history (best epoch and loss, rising streak) judged by another rule, patience
    /// or on/off setting: a resumed run's config decides when it stops, so `--set patience=N`
    /// or `--set early_stopping=false` on `--resume` takes effect. Both rules' state is always
    /// tracked, so switching rules needs nothing recomputed.
    pub fn with_settings(self, rule: EarlyStoppingRule, patience: usize, enabled: bool) -> Self {
        EarlyStopping {
            rule,
            patience,
            enabled,
            ..self
        }
    }
}

/// Where a resumed run picks up (see `checkpoint::load_checkpoint`).
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub epochs_done: usize,
    pub stopping: EarlyStopping,
    /// The finished epochs' rows, as metrics.csv holds them.
    pub records: Vec<EpochRecord>,
    /// The untrained network's validation loss, as the run measured it before its first
    /// epoch (`None` from a checkpoint that predates it).
    pub untrained_val_loss: Option<f64>,
}

/// What the per-epoch hook sees: the epoch's row and verdict, and the training and
/// early-stopping state to checkpoint (every value of it finite: checked before the hook).
pub struct EpochEnd<'a> {
    pub record: &'a EpochRecord,
    pub verdict: Verdict,
    pub state: &'a TrainingState,
    pub stopping: &'a EarlyStopping,
    pub untrained_val_loss: Option<f64>,
}

/// What a finished (or diverged) training run hands back.
#[derive(Debug)]
pub struct TrainOutcome {
    pub records: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub stopped_early: bool,
    /// Set when the loss or a parameter became NaN or infinite (or a parameter left f32's
    /// safe range); the best weights so far are still restored.
    pub diverged: Option<TrainError>,
    /// The untrained network's validation loss (see [`ResumeFrom::untrained_val_loss`]).
    pub untrained_val_loss: Option<f64>,
    /// Time spent on a pack's other runs: waiting for them, and their share of the packed
    /// epochs (see [`crate::engine::EpochStats::shared_secs`]); 0 for a run alone.
    pub other_runs_secs: f64,
    /// Best-validation parameters (also left in the engine).
    pub best_params: Params,
}

/// Trains `engine` (already holding initial parameters and the uploaded dataset of `train_rows`
/// training rows) as `config` says, calling `on_epoch` after each epoch. Leaves the
/// best-validation weights in the engine. The one training loop, awaited: a native caller
/// waits on it (`pollster`, which also drives a GPU engine's read-backs), a browser page
/// awaits it.
pub async fn train<E: Engine + ?Sized>(
    engine: &mut E,
    train_rows: usize,
    config: &TrainConfig,
    resume: Option<ResumeFrom>,
    mut on_epoch: impl FnMut(EpochEnd<'_>) -> Result<(), crate::Error>,
) -> Result<TrainOutcome, crate::Error> {
    // Names the tensor a diverged run broke in (read once: on a GPU it is a read-back).
    let model = engine.params().await.map_err(TrainError::from)?.model;
    let Begin {
        first_epoch,
        mut stopping,
        mut records,
        untrained_val_loss,
    } = begin(engine, config, resume).await?;
    // A resumed run that early stopping had ended stays ended, as it would have run
    // uninterrupted (a larger patience, or early_stopping = false, lets it go on).
    let epochs_done = first_epoch - 1;
    let already_stopped = epochs_done > 0 && stopping.stops_after(epochs_done);
    let mut stopped_early = already_stopped && epochs_done < config.epochs;
    let last_epoch = if already_stopped {
        epochs_done
    } else {
        config.epochs
    };
    let mut diverged = None;
    let mut other_runs_secs = 0.0;
    for epoch in first_epoch..=last_epoch {
        let at = (epoch, train_rows);
        let (record, mut state) = match train_one(engine, config, &model, at).await? {
            Trained::Epoch {
                record,
                state,
                other_runs_secs: others,
            } => {
                other_runs_secs += others;
                (record, state)
            }
            Trained::Diverged(e) => {
                diverged = Some(e);
                break;
            }
        };
        let verdict = stopping.observe(epoch, record.val_loss);
        if verdict.improved {
            engine.keep_best().map_err(TrainError::from)?;
            state.best.clone_from(&state.params); // what keep_best just kept
        }
        records.push(record);
        on_epoch(EpochEnd {
            record: &record,
            verdict,
            state: &state,
            stopping: &stopping,
            untrained_val_loss,
        })?;
        if verdict.stop {
            // Stopping on the last epoch anyway is not stopping early.
            stopped_early = epoch < config.epochs;
            break;
        }
    }
    engine.restore_best().map_err(TrainError::from)?;
    let best_params = engine.params().await.map_err(TrainError::from)?;
    Ok(TrainOutcome {
        records,
        best_epoch: stopping.best_epoch(),
        best_val_loss: stopping.best_loss(),
        stopped_early,
        diverged,
        untrained_val_loss,
        other_runs_secs,
        best_params,
    })
}

/// Where training starts: the first epoch to train, early stopping's state, the rows of the
/// epochs before it, and the untrained network's validation loss.
struct Begin {
    first_epoch: usize,
    stopping: EarlyStopping,
    records: Vec<EpochRecord>,
    untrained_val_loss: Option<f64>,
}

/// Where `engine`, holding a fresh network or `resume`'s checkpoint, starts training.
async fn begin<E: Engine + ?Sized>(
    engine: &mut E,
    config: &TrainConfig,
    resume: Option<ResumeFrom>,
) -> Result<Begin, crate::Error> {
    let (rule, patience, on) = (
        config.early_stopping_rule,
        config.patience,
        config.early_stopping,
    );
    Ok(match resume {
        // The engine already holds the checkpoint's parameters, best and optimiser state.
        Some(r) => Begin {
            first_epoch: r.epochs_done + 1,
            stopping: r.stopping.with_settings(rule, patience, on),
            records: r.records,
            untrained_val_loss: r.untrained_val_loss,
        },
        None => {
            engine.keep_best().map_err(TrainError::from)?;
            // The yardstick a finished run is held to: training that ends worse than it
            // started did not work, however finite its numbers.
            let untrained = engine
                .evaluate(SplitName::Val)
                .await
                .map_err(TrainError::from)?;
            Begin {
                first_epoch: 1,
                stopping: EarlyStopping::new(rule, patience, on),
                records: Vec::new(),
                untrained_val_loss: Some(untrained.loss),
            }
        }
    })
}

/// One epoch trained and checked (with the time a pack's other runs took), or how it diverged.
enum Trained {
    Epoch {
        record: EpochRecord,
        state: TrainingState,
        other_runs_secs: f64,
    },
    Diverged(TrainError),
}

/// Trains `epoch` of `train_rows` rows of `model` and checks every value it left.
async fn train_one<E: Engine + ?Sized>(
    engine: &mut E,
    config: &TrainConfig,
    model: &crate::model::Network,
    (epoch, train_rows): (usize, usize),
) -> Result<Trained, crate::Error> {
    let start = Instant::now();
    let order = epoch_order(config.seed, epoch, train_rows);
    let diverged = |what, step| {
        Trained::Diverged(TrainError::Diverged {
            what,
            epoch,
            step,
            lower: tenth_of(config.learning_rate),
        })
    };
    let stats = match engine.train_epoch(&order, &config.hyper()).await {
        Ok(s) => s,
        Err(EngineError::NonFiniteLoss { step, value }) => {
            return Ok(diverged(
                format!("loss became {value}"),
                format!(", step {step}"),
            ));
        }
        Err(e) => return Err(TrainError::from(e).into()),
    };
    let other_runs_secs = (stats.shared_secs).map_or(0.0, |share| {
        (start.elapsed().as_secs_f64() - share).max(0.0)
    });
    let val = match stats.val {
        Some(v) => v,
        None => engine
            .evaluate(SplitName::Val)
            .await
            .map_err(TrainError::from)?,
    };
    if !val.loss.is_finite() {
        let what = format!("validation loss became {}", val.loss);
        return Ok(diverged(what, String::new()));
    }
    // The loss alone misses a broken network: the CPU's ReLU and clamped tanh map NaN inputs
    // to finite values, so NaN weights can give a finite loss, and the GPU may hold huge
    // finite weights where the CPU holds NaN. Every value is checked before anything of this
    // epoch is kept or written.
    let state = engine.training_state().await.map_err(TrainError::from)?;
    if let Some(what) = unusable_state(model, &state) {
        return Ok(diverged(what, String::new()));
    }
    let n = stats.samples.max(1) as f64;
    let record = EpochRecord {
        epoch,
        train_loss: stats.loss_sum / n,
        train_accuracy: stats.correct as f64 / n,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        seconds: start.elapsed().as_secs_f64(),
        train_samples: stats.samples,
    };
    Ok(Trained::Epoch {
        record,
        state,
        other_runs_secs,
    })
}

/// A tenth of `learning_rate`, as a user would type it (`1e29`, not `1.0000000000000001e29`):
/// what the divergence hints suggest.
pub fn tenth_of(learning_rate: f64) -> String {
    let text = format!("{:.6e}", learning_rate / 10.0);
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        None => text,
    }
}

/// What makes a training state unusable, in words, or `None`: a non-finite parameter or one
/// past [`MAX_PARAMETER_MAGNITUDE`], or a non-finite optimiser buffer (the next step would
/// carry it into the parameters; its size alone says nothing: Adam's second moment squares).
fn unusable_state(model: &Network, state: &TrainingState) -> Option<String> {
    if let Some((tensor, value)) = first_unusable(model, &state.params, true) {
        return Some(if value.is_finite() {
            format!(
                "{tensor} reached {value:e} (past 2^64 ≈ {MAX_PARAMETER_MAGNITUDE:.1e}, where f32 arithmetic overflows)"
            )
        } else {
            format!("{tensor} became {value}")
        });
    }
    [
        ("velocity", &state.first),
        ("Adam's second moment", &state.second),
    ]
    .into_iter()
    .find_map(|(buffer, values)| {
        let (tensor, value) = first_unusable(model, values, false)?;
        Some(format!(
            "the optimizer's {buffer} for {tensor} became {value}"
        ))
    })
}
