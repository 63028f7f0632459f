//! `wgtrain tune`: every kernel arrangement ([`Tuning::candidates`]) timed on one adapter with
//! `bench`'s epoch timing, alternating in rounds, and the fastest kept for that adapter in the
//! tuning file. Arrangements change speed, never bits, so tuning can never change a result.

use std::sync::Arc;

use serde::Serialize;

use crate::bench::{bench_one, median};
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::device::EngineKind;
use crate::engine::EngineError;
use crate::gpu::{GpuContext, Tuning};

/// The least gain over the defaults worth switching for, whatever the rounds' spread.
pub const MIN_GAIN: f64 = 0.02;

/// One arrangement's timings in a tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct TuneRow {
    /// The arrangement as the variables that would select it ("defaults" for none).
    pub arrangement: String,
    #[serde(skip)]
    pub tuning: Tuning,
    /// Median seconds per training epoch, one per round.
    pub round_medians: Vec<f64>,
    /// The median of the round medians: what arrangements are ranked by.
    pub median_epoch_secs: f64,
    /// The defaults' median over this one's (above 1: faster than the defaults).
    pub speed_vs_defaults: f64,
}

/// Times every arrangement in `candidates` (the first must be the defaults) on `context`'s
/// adapter: `rounds` rounds, each arrangement once per round in turn (so slow drifts of the
/// machine fall on all of them), each time `warmup` untimed and `epochs` timed epochs of
/// `config` at `batch_size`. Returns the rows fastest first; `progress` hears each timing.
#[allow(clippy::too_many_arguments)]
pub fn tune_gpu(
    context: &GpuContext,
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
    candidates: &[Tuning],
    rounds: usize,
    warmup: usize,
    epochs: usize,
    mut progress: impl FnMut(usize, &Tuning, f64),
) -> Result<Vec<TuneRow>, EngineError> {
    let mut medians: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
    for round in 1..=rounds.max(1) {
        for (tuning, times) in candidates.iter().zip(&mut medians) {
            let mut ctx = context.clone();
            ctx.tuning = *tuning;
            let kind = EngineKind::Gpu {
                context: Box::new(ctx),
            };
            let row = bench_one(&kind, config, data, batch_size, warmup, epochs.max(1))?;
            progress(round, tuning, row.median_epoch_secs);
            times.push(row.median_epoch_secs);
        }
    }
    let mut rows: Vec<TuneRow> = candidates
        .iter()
        .zip(medians)
        .map(|(tuning, mut times)| TuneRow {
            arrangement: tuning.label(),
            tuning: *tuning,
            median_epoch_secs: median(&mut times.clone()),
            round_medians: std::mem::take(&mut times),
            speed_vs_defaults: 0.0,
        })
        .collect();
    let defaults = rows.first().map_or(f64::NAN, |r| r.median_epoch_secs);
    for row in &mut rows {
        row.speed_vs_defaults = defaults / row.median_epoch_secs;
    }
    rows.sort_by(|a, b| a.median_epoch_secs.total_cmp(&b.median_epoch_secs));
    Ok(rows)
}

/// The arrangement to keep from a tuning run's rows: the fastest, but only when it beats the
/// defaults by more than the run's noise — the widest spread between one arrangement's round
/// medians (relative to its median), at least [`MIN_GAIN`]. Otherwise the defaults: a noise
/// winner would only make later runs differ for no reason. Returns the choice and the noise.
pub fn choose(rows: &[TuneRow]) -> (Tuning, f64) {
    let noise = rows
        .iter()
        .map(|r| {
            let (lo, hi) = r
                .round_medians
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
                    (lo.min(t), hi.max(t))
                });
            (hi - lo) / r.median_epoch_secs
        })
        .filter(|n| n.is_finite())
        .fold(MIN_GAIN, f64::max);
    let fastest = rows
        .iter()
        .min_by(|a, b| a.median_epoch_secs.total_cmp(&b.median_epoch_secs));
    match fastest {
        Some(best) if best.speed_vs_defaults > 1.0 + noise => (best.tuning, noise),
        _ => (Tuning::default(), noise),
    }
}

/// The line a tuning run opens with: the config, the adapter, the batch, the `train_rows`
/// each epoch takes and the `arrangements` timed, each `rounds` times over `warmup` + `epochs`
/// epochs.
pub fn workload(
    config: &TrainConfig,
    context: &GpuContext,
    (train_rows, arrangements): (usize, usize),
    (rounds, warmup, epochs): (usize, usize, usize),
) -> String {
    format!(
        "tune: {} ({}) on {}, batch {}, {train_rows} training rows; {arrangements} arrangements × {rounds} round{} of {warmup} warm-up + {epochs} timed epochs",
        config.name,
        config.model_words(),
        context.describe(),
        config.batch_size,
        if rounds == 1 { "" } else { "s" },
    )
}

/// What a tuning run found and chose.
#[derive(Debug, Clone)]
pub struct TuneDecision {
    /// Every arrangement, fastest first.
    pub rows: Vec<TuneRow>,
    pub chosen: Tuning,
    /// The run's noise, as [`choose`] measured it.
    pub noise: f64,
    /// Training rows each epoch took.
    pub train_rows: usize,
}

impl TuneDecision {
    /// The chosen arrangement's row.
    pub fn chosen_row(&self) -> &TuneRow {
        self.rows
            .iter()
            .find(|r| r.tuning == self.chosen)
            .expect("choose picks a timed arrangement")
    }

    /// The defaults' median seconds per epoch.
    pub fn defaults_secs(&self) -> f64 {
        self.rows
            .iter()
            .find(|r| r.tuning == Tuning::default())
            .map_or(f64::NAN, |r| r.median_epoch_secs)
    }

    /// The arrangements' timings as a Markdown table, fastest first.
    pub fn table(&self) -> String {
        let mut table = String::from(
            "| arrangement | median s/epoch | per round | speed vs defaults |\n|---|---|---|---|\n",
        );
        for row in &self.rows {
            let rounds: Vec<String> = (row.round_medians.iter())
                .map(|s| format!("{s:.4}"))
                .collect();
            table.push_str(&format!(
                "| {} | {:.4} | {} | {} |\n",
                row.arrangement,
                row.median_epoch_secs,
                rounds.join(" / "),
                match row.tuning == Tuning::default() {
                    true => "(the baseline)".to_string(),
                    false => crate::metrics::faster_or_slower(row.speed_vs_defaults),
                }
            ));
        }
        table
    }

    /// What was chosen, and why: the defaults unless an arrangement beat them by more than
    /// the run's noise.
    pub fn verdict(&self) -> String {
        let noise = 100.0 * self.noise;
        if self.chosen == Tuning::default() {
            return format!(
                "the defaults: nothing beat them by more than this run's noise ({noise:.1}%)"
            );
        }
        let row = self.chosen_row();
        format!(
            "{}: {} than the defaults, beyond this run's noise ({noise:.1}%)",
            row.arrangement,
            crate::metrics::faster_or_slower(row.speed_vs_defaults),
        )
    }

    /// What the tuning file records beside the choice: the workload and the figures.
    pub fn measured(&self, config: &TrainConfig, rounds: usize) -> String {
        format!(
            "{} ({}), batch {}, {} training rows, {rounds} round(s): {:.4} s/epoch, defaults {:.4}, noise {:.1}%",
            config.name,
            config.model_words(),
            config.batch_size,
            self.train_rows,
            self.chosen_row().median_epoch_secs,
            self.defaults_secs(),
            100.0 * self.noise
        )
    }
}

/// Tunes `context`'s adapter for `config` on the data in `data_dir`: loads and checks the
/// data, tells `started` the training rows and how many arrangements there are, times them
/// all ([`tune_gpu`], `progress` hearing each timing) and chooses ([`choose`]).
#[allow(clippy::too_many_arguments)]
pub fn tune_config(
    context: &GpuContext,
    config: &TrainConfig,
    data_dir: &std::path::Path,
    rounds: usize,
    warmup: usize,
    epochs: usize,
    started: impl FnOnce(usize, usize),
    progress: impl FnMut(usize, &Tuning, f64),
) -> crate::Result<TuneDecision> {
    let data = Dataset::load(data_dir, config.val_fraction, config.seed)?;
    config.check_against_data(data.features, data.classes, data.train.len)?;
    let data = Arc::new(crate::bench::training_only(data));
    let candidates = Tuning::candidates();
    started(data.train.len, candidates.len());
    let rows = tune_gpu(
        context,
        config,
        &data,
        config.batch_size,
        &candidates,
        rounds,
        warmup,
        epochs,
        progress,
    )?;
    if rows.is_empty() {
        return Err(crate::Error::Usage("no arrangement was timed".into()));
    }
    let (chosen, noise) = choose(&rows);
    Ok(TuneDecision {
        rows,
        chosen,
        noise,
        train_rows: data.train.len,
    })
}
