//! `CpuEngine`: the [`Engine`] on the CPU, f32, for any network. It holds the parameters, the
//! kept best and the optimiser, and runs one epoch loop; how a step computes the loss and
//! gradient is its [`CpuPath`], chosen from the network when the engine is built:
//!
//! - **fused dense** (a network of dense layers with one hidden activation, the paper's MLP):
//!   each mini-batch is split into chunks of about [`super::dense_steps::CHUNK_ROWS`] rows;
//!   the threads take chunks, each chunk runs forward and backward on one thread
//!   ([`super::dense`]: at these sizes one thread per product beats splitting every product),
//!   and the chunks' losses and gradients are summed in chunk order (the last gradients
//!   inside the update; `cpu/dense_steps.rs`).
//! - **layers** (any network): the whole mini-batch goes through [`layers::loss_and_gradient`]
//!   (im2col and the GEMM, each on every thread) in one workspace allocated when the engine is
//!   built, then the update.
//!
//! Either way every sum is split where the data says, never where the threads do, and added
//! in one order: a run gives the same bits on any thread count, and resumes on another.

use std::sync::Arc;

use super::dense_steps::{Batch, DensePath, EVAL_ROWS};
use super::layers::{self, LayersWorkspace};
use super::layers_reference::StepCounters;
use super::ops::{self, OptimizerState};
use crate::config::{GradientReduction, Hyper};
use crate::data::{Dataset, Split, SplitName};
use crate::engine::{Awaited, Engine, EngineError, EpochStats, EvalStats, TrainingState, ready};
use crate::model::{LayerView, Network, Params};

/// Fewest rows a pass of the layers path is sized for, so evaluating a split takes few passes
/// even when the mini-batch is small.
const MIN_PASS_ROWS: usize = 128;

/// How a CPU engine computes a step's loss and gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPath {
    /// Chunks of the mini-batch through the fused dense passes, one per thread at a time.
    FusedDense,
    /// The whole mini-batch through the network layer by layer, every product on every thread.
    Layers,
}

impl CpuPath {
    /// The fastest path that trains `net`.
    pub fn for_network(net: &Network) -> Self {
        match net.dense_stack() {
            Some(_) => CpuPath::FusedDense,
            None => CpuPath::Layers,
        }
    }
}

/// Bytes a CPU engine for `net` holds on `threads` threads with mini-batches of `batch_size`
/// rows, at the least. Saturates instead of overflowing.
pub fn engine_bytes_for(net: &Network, threads: usize, batch_size: usize) -> u128 {
    match net.dense_stack() {
        Some((widths, _)) => engine_bytes(&widths, threads),
        None => layers_engine_bytes(net, batch_size, threads),
    }
}

/// Bytes the fused dense path holds for a network of `widths` on `threads` threads, at the
/// least: the parameters, the best copy and two optimiser moments, and per shard (one per
/// thread, and one more that sums when a batch has more chunks than threads) a gradient and
/// the evaluation buffers (activations and deltas for [`EVAL_ROWS`] rows). Saturates instead
/// of overflowing, so an absurd network gives a huge number, never a wrapped small one.
pub fn engine_bytes(widths: &[usize], threads: usize) -> u128 {
    let params = crate::model::param_count_u128(widths);
    let activations: u128 = widths.iter().skip(1).map(|&w| w as u128).sum();
    let per_shard = params.saturating_add((2 * EVAL_ROWS as u128).saturating_mul(activations));
    let floats = params
        .saturating_mul(4)
        .saturating_add((threads.max(1) as u128 + 1).saturating_mul(per_shard));
    floats.saturating_mul(std::mem::size_of::<f32>() as u128)
}

/// Bytes the layers path holds for `net` with passes of `rows` rows on `threads` threads, at
/// the least: the parameters, best copy, gradient and two moments, the workspace and the
/// gathered batch.
fn layers_engine_bytes(net: &Network, rows: usize, threads: usize) -> u128 {
    let rows = rows.max(MIN_PASS_ROWS);
    let params = 5 * net.param_count as u128;
    let workspace = LayersWorkspace::<f32>::floats(net, rows, threads);
    let batch = rows as u128 * net.input.len() as u128;
    let floats = params.saturating_add(workspace).saturating_add(batch);
    floats.saturating_mul(std::mem::size_of::<f32>() as u128)
}

pub struct CpuEngine {
    net: Arc<Network>,
    /// Where each layer's weights and biases sit (the update penalises weights only).
    views: Vec<LayerView>,
    params: Vec<f32>,
    best: Vec<f32>,
    state: OptimizerState<f32>,
    path: Path,
    /// `None` when one thread is asked for (or a pool could not be made).
    pool: Option<rayon::ThreadPool>,
    data: Option<Arc<Dataset>>,
    threads: usize,
}

/// A path's own buffers.
enum Path {
    FusedDense(DensePath),
    Layers(Box<LayersPath>),
}

/// The layers path: one workspace for the whole mini-batch.
struct LayersPath {
    grad: Vec<f32>,
    workspace: LayersWorkspace<f32>,
    /// (rows, C·H·W) of the mini-batch being stepped, gathered by index, and its labels.
    images: Vec<f32>,
    labels: Vec<u8>,
}

impl CpuEngine {
    /// An engine holding `params`, stepping mini-batches of up to `batch_size` rows on the
    /// fastest path for the network; `threads = 0` means one per core.
    pub fn new(params: &Params, threads: usize, batch_size: usize) -> Result<Self, EngineError> {
        Self::on_path(
            params,
            threads,
            batch_size,
            CpuPath::for_network(&params.model),
        )
    }

    /// [`CpuEngine::new`] on a path of the caller's choosing (to compare the two): the fused
    /// dense path takes only networks [`Network::dense_stack`] accepts.
    pub fn on_path(
        params: &Params,
        threads: usize,
        batch_size: usize,
        path: CpuPath,
    ) -> Result<Self, EngineError> {
        let net = Arc::clone(&params.model);
        let (pool, threads) = super::pool::thread_pool(threads);
        let views = net.layer_views();
        let count = params.values.len();
        let path = match path {
            CpuPath::FusedDense => {
                let (_, activation) = net.dense_stack().ok_or_else(|| {
                    EngineError::Mismatch(format!(
                        "the fused dense path cannot train {}",
                        net.describe()
                    ))
                })?;
                Path::FusedDense(DensePath::new(activation, &views, count, threads))
            }
            CpuPath::Layers => {
                let rows = batch_size.max(MIN_PASS_ROWS);
                Path::Layers(Box::new(LayersPath {
                    grad: vec![0.0; count],
                    workspace: LayersWorkspace::new(&net, rows),
                    images: vec![0.0; rows * net.input.len()],
                    labels: vec![0; rows],
                }))
            }
        };
        Ok(CpuEngine {
            net,
            views,
            params: params.values.clone(),
            best: params.values.clone(),
            state: OptimizerState::new(count),
            path,
            pool,
            data: None,
            threads,
        })
    }

    /// Runs `f` on the engine's pool: rayon's work then stays on the engine's threads, and
    /// shard work is forked from a worker whose siblings are still awake instead of being
    /// injected (and the pool woken) anew at every step, which cost as much as the step itself
    /// at batch 128.
    fn on_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        match self.pool.take() {
            Some(pool) => {
                let result = pool.install(|| f(self));
                self.pool = Some(pool);
                result
            }
            None => f(self),
        }
    }

    /// Every step of one epoch (no validation).
    fn epoch_steps(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let batch = hyper.batch_size.max(1);
        match &mut self.path {
            Path::FusedDense(path) => path.prepare(batch, &self.views, data.features),
            Path::Layers(path) => path.prepare(batch)?,
        }
        let dropout = self.net.has_dropout();
        let mut stats = EpochStats::default();
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = indices.len();
            let scale = match hyper.gradient {
                GradientReduction::Mean => 1.0 / rows as f32,
                GradientReduction::Sum => 1.0,
            };
            // (loss sum, correct, whether the update is taken already: a one-wave step takes
            // it with its chunks, where its loss is finite).
            let (loss_sum, correct, updated) = match &mut self.path {
                Path::FusedDense(path) if path.one_wave() => {
                    let batch = Batch {
                        train: &data.train,
                        indices,
                        scale,
                    };
                    let (loss_sum, correct) = path.step_and_update(
                        &self.views,
                        &mut self.params,
                        &mut self.state,
                        batch,
                        hyper,
                    );
                    (loss_sum, correct, true)
                }
                Path::FusedDense(path) => {
                    let (loss_sum, correct) =
                        path.step(&self.views, &self.params, &data.train, indices, scale);
                    (loss_sum, correct, false)
                }
                Path::Layers(path) => {
                    // The masks' counters: the run's seed and the optimiser's step about to be
                    // taken, which a checkpoint keeps, so a resumed run draws the masks it
                    // would have drawn. The 64-bit step fills the generator's two 32-bit
                    // counter words (epoch, step).
                    let t = self.state.step + 1;
                    let counters = dropout.then_some(StepCounters {
                        seed: hyper.seed,
                        epoch: (t >> 32) as u32,
                        step: t as u32,
                    });
                    let indices = indices.iter().map(|&i| i as usize);
                    path.gather(&self.net, &data.train, indices);
                    let (loss_sum, correct) =
                        path.step(&self.net, &self.params, rows, scale, counters, self.threads);
                    (loss_sum, correct, false)
                }
            };
            if !loss_sum.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    step: step + 1,
                    value: loss_sum,
                });
            }
            match &mut self.path {
                _ if updated => {}
                Path::FusedDense(path) => {
                    path.update(&mut self.params, &mut self.state, &self.views, hyper)
                }
                Path::Layers(path) => ops::update(
                    &mut self.params,
                    &path.grad,
                    &mut self.state,
                    &self.views,
                    hyper,
                ),
            }
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.samples += rows;
            stats.steps += 1;
        }
        Ok(stats)
    }

    /// Loss and accuracy over `split`, on the engine's pool.
    fn evaluate_split(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let split = data.split(split);
        let (loss_sum, correct) = match &mut self.path {
            Path::FusedDense(path) => path.evaluate(&self.views, &self.params, split),
            Path::Layers(path) => path.evaluate(&self.net, &self.params, split, self.threads),
        };
        let n = split.len.max(1) as f64;
        Ok(EvalStats {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            samples: split.len,
        })
    }
}

impl LayersPath {
    /// Refuses mini-batches larger than the workspace.
    fn prepare(&self, batch: usize) -> Result<(), EngineError> {
        if batch > self.workspace.capacity() {
            return Err(EngineError::Mismatch(format!(
                "batch_size {batch} is larger than the {} rows the engine was built for",
                self.workspace.capacity()
            )));
        }
        Ok(())
    }

    /// Copies the rows `indices` of `split` (z-scored images) into the batch buffers.
    fn gather(&mut self, net: &Network, split: &Split, indices: impl Iterator<Item = usize>) {
        let len = net.input.len();
        let images = split.images();
        for (r, i) in indices.enumerate() {
            self.images[r * len..(r + 1) * len].copy_from_slice(&images[i * len..(i + 1) * len]);
            self.labels[r] = split.labels[i];
        }
    }

    /// Forward and backward on the `rows` gathered rows.
    fn step(
        &mut self,
        net: &Network,
        params: &[f32],
        rows: usize,
        scale: f32,
        counters: Option<StepCounters>,
        threads: usize,
    ) -> (f64, usize) {
        layers::loss_and_gradient(
            net,
            params,
            &self.images,
            &self.labels,
            rows,
            scale,
            counters,
            Some(&mut self.grad),
            threads,
            &mut self.workspace,
        )
    }

    /// (loss sum, correct) over `split`, a workspace's rows at a time.
    fn evaluate(
        &mut self,
        net: &Network,
        params: &[f32],
        split: &Split,
        threads: usize,
    ) -> (f64, usize) {
        let rows_per_pass = self.workspace.capacity();
        let (mut loss_sum, mut correct) = (0.0, 0);
        for start in (0..split.len).step_by(rows_per_pass) {
            let end = (start + rows_per_pass).min(split.len);
            self.gather(net, split, start..end);
            let (loss, right) = layers::loss_and_gradient(
                net,
                params,
                &self.images,
                &self.labels,
                end - start,
                1.0,
                None,
                None,
                threads,
                &mut self.workspace,
            );
            loss_sum += loss;
            correct += right;
        }
        (loss_sum, correct)
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        let threads = self.threads;
        format!(
            "cpu ({threads} thread{}, {} kernels)",
            if threads == 1 { "" } else { "s" },
            super::kernels::CpuKernels::active().name()
        )
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.net.inputs() || data.classes != self.net.classes() {
            return Err(EngineError::data_mismatch(&self.net, &data));
        }
        // The f32 images are made on first use; make the ones every epoch reads now, not in
        // the middle of the first step.
        for split in [&data.train, &data.val, &data.test] {
            split.try_images()?;
        }
        self.data = Some(data);
        Ok(())
    }

    fn train_epoch<'a>(
        &'a mut self,
        order: &'a [u32],
        hyper: &'a Hyper,
    ) -> Awaited<'a, EpochStats> {
        ready(self.on_pool(|engine| {
            let mut stats = engine.epoch_steps(order, hyper)?;
            stats.val = Some(engine.evaluate_split(SplitName::Val)?);
            Ok(stats)
        }))
    }

    fn evaluate(&mut self, split: SplitName) -> Awaited<'_, EvalStats> {
        ready(self.on_pool(|engine| engine.evaluate_split(split)))
    }

    fn params(&self) -> Awaited<'_, Params> {
        ready(Ok(Params {
            model: Arc::clone(&self.net),
            values: self.params.clone(),
        }))
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        if params.model != self.net {
            return Err(EngineError::params_mismatch(&self.net, params));
        }
        self.params.copy_from_slice(&params.values);
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

    fn training_state(&self) -> Awaited<'_, TrainingState> {
        ready(Ok(TrainingState {
            params: self.params.clone(),
            best: self.best.clone(),
            first: self.state.first.clone(),
            second: self.state.second.clone(),
            step: self.state.step,
        }))
    }

    fn set_training_state(&mut self, from: &TrainingState) -> Result<(), EngineError> {
        from.check_len(self.params.len())?;
        self.params.copy_from_slice(&from.params);
        self.best.copy_from_slice(&from.best);
        self.state.first.copy_from_slice(&from.first);
        self.state.second.copy_from_slice(&from.second);
        self.state.step = from.step;
        Ok(())
    }
}
