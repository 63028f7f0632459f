//! `wgtrain bench`: the same config trained on each engine asked for, a few warm-up epochs and
//! several measured ones, reported as medians with the range, samples/s and GFLOP/s from a
//! stated FLOP count. Only training steps are timed: the validation split is cut to one row.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::TrainConfig;
use crate::data::{Dataset, Split, epoch_order};
use crate::engine::{EngineError, EngineKind};
use crate::model::{Params, layer_views};

/// FLOPs of one training epoch over `rows` rows: the forward products, the weight-gradient
/// products and the input-gradient products of every layer but the first (which backprop does
/// not need), 2 FLOPs per multiply-add. Element-wise work is not counted.
pub fn epoch_flops(widths: &[usize], rows: usize) -> f64 {
    let macs: Vec<f64> = layer_views(widths)
        .iter()
        .map(|v| (v.fan_in * v.fan_out) as f64)
        .collect();
    let forward: f64 = macs.iter().sum();
    let input_grads: f64 = macs.iter().skip(1).sum();
    2.0 * rows as f64 * (2.0 * forward + input_grads)
}

/// Compute dispatches the GPU engine records per training step (see docs/gpu.md).
pub fn gpu_dispatches_per_step(layers: usize) -> usize {
    // gather + forward per layer + softmax_xent + weight-and-bias gradient per layer
    // + input gradient per layer but the first + update (which also sums the batch's loss)
    1 + layers + 1 + layers + (layers - 1) + 1
}

/// One row of the bench table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub device: String,
    pub detail: String,
    pub batch_size: usize,
    pub epochs_measured: usize,
    pub median_epoch_secs: f64,
    pub min_epoch_secs: f64,
    pub max_epoch_secs: f64,
    pub samples_per_sec: f64,
    pub gflops: f64,
    pub flops_per_epoch: f64,
    /// GPU only: dispatches per step and submissions per epoch.
    pub dispatches_per_step: Option<usize>,
    pub submissions_per_epoch: Option<usize>,
    pub train_loss_last_epoch: f64,
}

/// The dataset with its validation split cut to one row, so epochs time training alone.
pub fn training_only(mut data: Dataset) -> Dataset {
    let f = data.features;
    data.val = Split {
        images: data.val.images[..f].to_vec(),
        pixels: data.val.pixels[..f].to_vec(),
        labels: data.val.labels[..1].to_vec(),
        len: 1,
    };
    data
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Trains `config` at `batch_size` on `kind` for `warmup + epochs` epochs and times the last `epochs`.
pub fn bench_one(
    kind: &EngineKind,
    config: &TrainConfig,
    data: &Arc<Dataset>,
    batch_size: usize,
    warmup: usize,
    epochs: usize,
) -> Result<BenchRow, EngineError> {
    let mut config = config.clone();
    config.batch_size = batch_size;
    let hyper = config.hyper();
    let params = Params::init(&config.layers, config.activation, config.init, config.seed);
    let mut engine = kind.build(&params, batch_size)?;
    engine.upload(Arc::clone(data))?;
    let mut times = Vec::with_capacity(epochs);
    let mut last_loss = f64::NAN;
    for epoch in 1..=warmup + epochs {
        let order = epoch_order(config.seed, epoch, data.train.len);
        let start = Instant::now();
        let stats = engine.train_epoch(&order, &hyper)?;
        let secs = start.elapsed().as_secs_f64();
        if epoch > warmup {
            times.push(secs);
        }
        last_loss = stats.loss_sum / stats.samples.max(1) as f64;
    }
    let (min, max) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
        (lo.min(t), hi.max(t))
    });
    let med = median(&mut times);
    let flops = epoch_flops(&config.layers, data.train.len);
    let gpu = matches!(kind, EngineKind::Gpu { .. });
    Ok(BenchRow {
        device: kind.device_name().into(),
        detail: engine.describe(),
        batch_size,
        epochs_measured: epochs,
        median_epoch_secs: med,
        min_epoch_secs: min,
        max_epoch_secs: max,
        samples_per_sec: data.train.len as f64 / med,
        gflops: flops / med / 1e9,
        flops_per_epoch: flops,
        dispatches_per_step: gpu.then(|| gpu_dispatches_per_step(config.layers.len() - 1)),
        submissions_per_epoch: gpu.then_some(1),
        train_loss_last_epoch: last_loss,
    })
}
