//! `CpuEngine`: the [`Engine`] on the CPU, f32, on the fast GEMM. Each mini-batch is split into
//! one contiguous shard per thread; shards run forward and backward in parallel (each product
//! on one thread, which at these sizes beats splitting every product), and their gradients are
//! summed in shard order before the update. Results depend on the thread count only through
//! that summation order, and repeat bit for bit for a given count.

use std::sync::Arc;

use rayon::prelude::*;

use super::net::{self, Shape, Workspace};
use super::ops::{self, OptimizerState};
use crate::config::{GradientReduction, Hyper};
use crate::data::{Dataset, SplitName};
use crate::engine::{Engine, EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{Activation, LayerView, Model, Params};

/// Rows per forward pass when evaluating a split (per shard).
const EVAL_ROWS: usize = 512;
/// Fewest rows of a mini-batch worth giving a thread of its own.
const MIN_SHARD_ROWS: usize = 64;

/// Bytes a `CpuEngine` holds for a network of `widths` on `threads` threads, at the least: the
/// parameters, the best copy and two optimiser moments, and per thread a gradient and the
/// evaluation buffers (activations and deltas for [`EVAL_ROWS`] rows). Saturates instead of
/// overflowing, so an absurd network gives a huge number, never a wrapped small one.
pub fn engine_bytes(widths: &[usize], threads: usize) -> u128 {
    let params = crate::model::param_count_u128(widths);
    let activations: u128 = widths.iter().skip(1).map(|&w| w as u128).sum();
    let per_thread = params.saturating_add((2 * EVAL_ROWS as u128).saturating_mul(activations));
    let floats = params
        .saturating_mul(4)
        .saturating_add((threads.max(1) as u128).saturating_mul(per_thread));
    floats.saturating_mul(std::mem::size_of::<f32>() as u128)
}

/// One thread's buffers.
struct Shard {
    workspace: Workspace<f32>,
    grad: Vec<f32>,
    /// This shard's (loss sum, correct) of the latest step: kept here rather than collected
    /// into a Vec: wgtrain allocates nothing in a step (the `gemm` crate does, 2 per product).
    result: (f64, usize),
    /// (rows, I) of this shard's part of the mini-batch, gathered by index.
    images: Vec<f32>,
    labels: Vec<u8>,
}

impl Shard {
    fn new(layers: &[LayerView], params: usize, rows: usize) -> Self {
        Shard {
            workspace: Workspace::new(layers, rows),
            grad: vec![0.0; params],
            result: (0.0, 0),
            images: Vec::new(),
            labels: Vec::new(),
        }
    }
}

pub struct CpuEngine {
    widths: Vec<usize>,
    activation: Activation,
    layers: Vec<LayerView>,
    params: Vec<f32>,
    best: Vec<f32>,
    state: OptimizerState<f32>,
    shards: Vec<Shard>,
    /// `None` when one thread is asked for (or a pool could not be made): shards run in turn.
    pool: Option<rayon::ThreadPool>,
    data: Option<Arc<Dataset>>,
    threads: usize,
}

/// The `i`-th of `n` contiguous, near-equal parts of `0..len`.
fn part(len: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    (len * i / n)..(len * (i + 1) / n)
}

impl CpuEngine {
    /// An engine holding `params` of an MLP; `threads = 0` means one per core. (A network of
    /// layers trains on [`super::NetworkEngine`].)
    pub fn new(params: &Params, threads: usize) -> Result<Self, EngineError> {
        let (widths, activation) = params.model.mlp().ok_or_else(|| {
            EngineError::Mismatch(format!(
                "the MLP engine cannot train {}",
                params.model.describe()
            ))
        })?;
        let (pool, threads) = super::thread_pool(threads);
        let layers = params.model.layer_views();
        let count = params.values.len();
        Ok(CpuEngine {
            widths: widths.to_vec(),
            activation,
            shards: (0..threads)
                .map(|_| Shard::new(&layers, count, EVAL_ROWS))
                .collect(),
            layers,
            params: params.values.clone(),
            best: params.values.clone(),
            state: OptimizerState::new(count),
            pool,
            data: None,
            threads,
        })
    }

    fn model(&self) -> Model {
        Model::Mlp {
            widths: self.widths.clone(),
            activation: self.activation,
        }
    }

    /// Every step of one epoch (no validation). Shards run in parallel on the current rayon
    /// pool when there is more than one.
    fn epoch_steps(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let features = data.features;
        let batch = hyper.batch_size.max(1);
        // Small batches stay on fewer threads: below MIN_SHARD_ROWS rows a shard's work is
        // shorter than waking a sibling thread (measured: 2 threads at batch 32 were slower).
        let n_shards = self.shards.len().min((batch / MIN_SHARD_ROWS).max(1));
        let shard_rows = batch.div_ceil(n_shards);
        for shard in &mut self.shards {
            if shard.workspace.capacity() < shard_rows {
                shard.workspace = Workspace::new(&self.layers, shard_rows);
            }
            shard.images.resize(shard_rows * features, 0.0);
            shard.labels.resize(shard_rows, 0);
        }
        let mut stats = EpochStats::default();
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = indices.len();
            let scale = match hyper.gradient {
                GradientReduction::Mean => 1.0 / rows as f32,
                GradientReduction::Sum => 1.0,
            };
            let (layers, activation, params) = (&self.layers, self.activation, &self.params);
            let shape = Shape {
                layers,
                activation,
                threads: 1,
            };
            let train = &data.train;
            let step_shard = |(i, s): (usize, &mut Shard)| {
                s.result = shard_step(
                    s,
                    shape,
                    params,
                    train,
                    &indices[part(rows, n_shards, i)],
                    scale,
                );
            };
            let active = &mut self.shards[..n_shards];
            if n_shards > 1 {
                active.par_iter_mut().enumerate().for_each(step_shard);
            } else {
                active.iter_mut().enumerate().for_each(step_shard);
            }
            let (loss_sum, correct) = active
                .iter()
                .fold((0.0, 0), |(l, c), s| (l + s.result.0, c + s.result.1));
            if !loss_sum.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    step: step + 1,
                    value: loss_sum,
                });
            }
            if n_shards == 1 {
                ops::update(
                    &mut self.params,
                    &self.shards[0].grad,
                    &mut self.state,
                    &self.layers,
                    hyper,
                );
            } else {
                // Sum the shards' gradients and update, both split by parameter range across
                // the threads: every element is summed in shard order, so runs repeat bit for
                // bit, and no thread idles (and falls asleep) through a serial update.
                self.state.step += 1;
                let t = self.state.step;
                let chunk = self.params.len().div_ceil(n_shards);
                let (first_shard, others) = self.shards[..n_shards].split_at_mut(1);
                let layers = &self.layers;
                self.params
                    .par_chunks_mut(chunk)
                    .zip(first_shard[0].grad.par_chunks_mut(chunk))
                    .zip(self.state.first.par_chunks_mut(chunk))
                    .zip(self.state.second.par_chunks_mut(chunk))
                    .enumerate()
                    .for_each(|(k, (((w, g), f), s))| {
                        let offset = k * chunk;
                        for other in others.iter() {
                            let len = g.len();
                            g.iter_mut()
                                .zip(&other.grad[offset..offset + len])
                                .for_each(|(a, b)| *a += b);
                        }
                        ops::update_range(w, g, f, s, offset, t, layers, hyper);
                    });
            }
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.samples += rows;
            stats.steps += 1;
        }
        Ok(stats)
    }

    /// Runs `f` on every shard (in parallel when there is a pool) and returns the results in
    /// shard order.
    fn each_shard<R: Send>(&mut self, f: impl Fn(usize, &mut Shard) -> R + Sync) -> Vec<R> {
        match &self.pool {
            Some(pool) => pool.install(|| {
                self.shards
                    .par_iter_mut()
                    .enumerate()
                    .map(|(i, s)| f(i, s))
                    .collect()
            }),
            None => self
                .shards
                .iter_mut()
                .enumerate()
                .map(|(i, s)| f(i, s))
                .collect(),
        }
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        super::describe(self.threads)
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.widths[0] || data.classes != *self.widths.last().unwrap_or(&0) {
            return Err(EngineError::data_mismatch(&self.model(), &data));
        }
        // The f32 images are made on first use; make the ones every epoch reads now, not in
        // the middle of the first step.
        for split in [&data.train, &data.val, &data.test] {
            split.try_images()?;
        }
        self.data = Some(data);
        Ok(())
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        // The whole epoch runs inside the pool: shard work is then forked from a worker thread
        // whose siblings are still awake, instead of being injected (and the pool woken) anew
        // at every step, which cost as much as the step itself at batch 128.
        let mut stats = match self.pool.take() {
            Some(pool) => {
                let result = pool.install(|| self.epoch_steps(order, hyper));
                self.pool = Some(pool);
                result?
            }
            None => self.epoch_steps(order, hyper)?,
        };
        stats.val = Some(self.evaluate(SplitName::Val)?);
        Ok(stats)
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let split = data.split(split);
        let features = data.features;
        let n_shards = self.shards.len();
        let (layers, activation) = (self.layers.clone(), self.activation);
        let params = std::mem::take(&mut self.params);
        let results = self.each_shard(|i, s| {
            let rows = part(split.len, n_shards, i);
            let shape = Shape {
                layers: &layers,
                activation,
                threads: 1,
            };
            net::evaluate(
                shape,
                &params,
                &split.images()[rows.start * features..rows.end * features],
                &split.labels[rows],
                &mut s.workspace,
            )
        });
        self.params = params;
        let (loss_sum, correct) = results
            .iter()
            .fold((0.0, 0), |(l, c), r| (l + r.0, c + r.1));
        let n = split.len.max(1) as f64;
        Ok(EvalStats {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            samples: split.len,
        })
    }

    fn params(&self) -> Result<Params, EngineError> {
        Ok(Params {
            model: self.model(),
            values: self.params.clone(),
        })
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        let Some((_, activation)) = params.model.mlp().filter(|(w, _)| *w == self.widths) else {
            return Err(EngineError::params_mismatch(&self.model(), params));
        };
        self.params.copy_from_slice(&params.values);
        self.activation = activation;
        self.state = OptimizerState::new(self.params.len());
        Ok(())
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.best.copy_from_slice(&self.params);
        Ok(())
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.params.copy_from_slice(&self.best);
        Ok(())
    }

    fn training_state(&self) -> Result<TrainingState, EngineError> {
        Ok(super::training_state(&self.params, &self.best, &self.state))
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        super::set_training_state(state, &mut self.params, &mut self.best, &mut self.state)
    }
}

/// Gathers one shard's rows and runs forward and backward on them; an empty shard (a batch
/// smaller than the thread count) contributes a zero gradient.
fn shard_step(
    shard: &mut Shard,
    shape: Shape<'_>,
    params: &[f32],
    train: &crate::data::Split,
    indices: &[u32],
    scale: f32,
) -> (f64, usize) {
    let features = shape.layers[0].fan_in;
    if indices.is_empty() {
        shard.grad.fill(0.0);
        return (0.0, 0);
    }
    let images = train.images();
    for (r, &i) in indices.iter().enumerate() {
        let i = i as usize;
        shard.images[r * features..(r + 1) * features]
            .copy_from_slice(&images[i * features..(i + 1) * features]);
        shard.labels[r] = train.labels[i];
    }
    net::loss_and_gradient_scaled(
        shape,
        params,
        &shard.images,
        &shard.labels,
        indices.len(),
        scale,
        &mut shard.grad,
        &mut shard.workspace,
    )
}
