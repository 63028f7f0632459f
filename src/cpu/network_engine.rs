//! `NetworkEngine`: the [`Engine`] on the CPU for a network of layers (convolutions, pooling,
//! dropout, dense), f32. A step runs the whole mini-batch through
//! [`network::loss_and_gradient`] (im2col and the GEMM, each on every thread) in one workspace
//! allocated when the engine is built, then the same update as the MLP engine. Results repeat
//! bit for bit for a given thread count.

use std::sync::Arc;

use super::network::{self, NetworkWorkspace, StepCounters};
use super::ops::{self, OptimizerState};
use crate::config::{GradientReduction, Hyper};
use crate::data::{Dataset, Split, SplitName};
use crate::engine::{Engine, EngineError, EpochStats, EvalStats, TrainingState};
use crate::model::{LayerView, Model, Params};
use crate::network::Network;

/// Fewest rows a pass is sized for, so evaluating a split takes few passes even when the
/// mini-batch is small.
const MIN_PASS_ROWS: usize = 128;

pub struct NetworkEngine {
    net: Arc<Network>,
    /// Where each layer's weights and biases sit (the update penalises weights only).
    views: Vec<LayerView>,
    params: Vec<f32>,
    best: Vec<f32>,
    grad: Vec<f32>,
    state: OptimizerState<f32>,
    workspace: NetworkWorkspace<f32>,
    /// (rows, C·H·W) of the mini-batch being stepped, gathered by index, and its labels.
    images: Vec<f32>,
    labels: Vec<u8>,
    pool: Option<rayon::ThreadPool>,
    data: Option<Arc<Dataset>>,
    threads: usize,
}

/// Bytes a `NetworkEngine` for `net` holds with passes of `rows` rows, at the least: the
/// parameters, best copy, gradient and two moments, the workspace and the gathered batch.
pub fn network_engine_bytes(net: &Network, rows: usize) -> u128 {
    let rows = rows.max(MIN_PASS_ROWS) as u128;
    let params = 5 * net.param_count as u128 + NetworkWorkspace::<f32>::floats_fixed(net) as u128;
    let per_image = NetworkWorkspace::<f32>::floats_per_image(net) + net.input.len();
    (params + rows * per_image as u128) * std::mem::size_of::<f32>() as u128
}

impl NetworkEngine {
    /// An engine holding `params` of a network, stepping mini-batches of up to `batch_size`
    /// rows; `threads = 0` means one per core.
    pub fn new(params: &Params, threads: usize, batch_size: usize) -> Result<Self, EngineError> {
        let Model::Network(net) = &params.model else {
            return Err(EngineError::Mismatch(format!(
                "the network engine cannot train the MLP {}",
                params.model.describe()
            )));
        };
        let (pool, threads) = super::thread_pool(threads);
        let rows = batch_size.max(MIN_PASS_ROWS);
        let count = params.values.len();
        Ok(NetworkEngine {
            views: net.layer_views(),
            workspace: NetworkWorkspace::new(net, rows),
            images: vec![0.0; rows * net.input.len()],
            labels: vec![0; rows],
            net: Arc::clone(net),
            params: params.values.clone(),
            best: params.values.clone(),
            grad: vec![0.0; count],
            state: OptimizerState::new(count),
            pool,
            data: None,
            threads,
        })
    }

    fn model(&self) -> Model {
        Model::Network(Arc::clone(&self.net))
    }

    /// Runs `f` on the engine's pool (rayon's work in im2col and the GEMM then stays on the
    /// engine's threads).
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

    /// Copies the rows `indices` of `split` (z-scored images) into the batch buffers.
    fn gather(&mut self, split: &Split, indices: impl Iterator<Item = usize>) -> usize {
        let len = self.net.input.len();
        let images = split.images();
        let mut rows = 0;
        for (r, i) in indices.enumerate() {
            self.images[r * len..(r + 1) * len].copy_from_slice(&images[i * len..(i + 1) * len]);
            self.labels[r] = split.labels[i];
            rows += 1;
        }
        rows
    }

    fn epoch_steps(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let batch = hyper.batch_size.max(1);
        if batch > self.workspace.capacity() {
            return Err(EngineError::Mismatch(format!(
                "batch_size {batch} is larger than the {} rows the engine was built for",
                self.workspace.capacity()
            )));
        }
        let dropout = self.net.has_dropout();
        let mut stats = EpochStats::default();
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = self.gather(&data.train, indices.iter().map(|&i| i as usize));
            let scale = match hyper.gradient {
                GradientReduction::Mean => 1.0 / rows as f32,
                GradientReduction::Sum => 1.0,
            };
            // The masks' counters: the run's seed and the optimiser's step about to be taken,
            // which a checkpoint keeps, so a resumed run draws the masks it would have drawn.
            // The 64-bit step fills the generator's two 32-bit counter words (epoch, step).
            let t = self.state.step + 1;
            let counters = dropout.then_some(StepCounters {
                seed: hyper.seed,
                epoch: (t >> 32) as u32,
                step: t as u32,
            });
            let (loss_sum, correct) = network::loss_and_gradient(
                &self.net,
                &self.params,
                &self.images,
                &self.labels,
                rows,
                scale,
                counters,
                Some(&mut self.grad),
                self.threads,
                &mut self.workspace,
            );
            if !loss_sum.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    step: step + 1,
                    value: loss_sum,
                });
            }
            ops::update(
                &mut self.params,
                &self.grad,
                &mut self.state,
                &self.views,
                hyper,
            );
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.samples += rows;
            stats.steps += 1;
        }
        Ok(stats)
    }

    fn evaluate_split(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let split = data.split(split);
        let rows_per_pass = self.workspace.capacity();
        let (mut loss_sum, mut correct) = (0.0, 0);
        for start in (0..split.len).step_by(rows_per_pass) {
            let rows = self.gather(split, start..(start + rows_per_pass).min(split.len));
            let (loss, right) = network::loss_and_gradient(
                &self.net,
                &self.params,
                &self.images,
                &self.labels,
                rows,
                1.0,
                None,
                None,
                self.threads,
                &mut self.workspace,
            );
            loss_sum += loss;
            correct += right;
        }
        let n = split.len.max(1) as f64;
        Ok(EvalStats {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            samples: split.len,
        })
    }
}

impl Engine for NetworkEngine {
    fn describe(&self) -> String {
        super::describe(self.threads)
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.net.input.len() || data.classes != self.net.classes() {
            return Err(EngineError::data_mismatch(&self.model(), &data));
        }
        for split in [&data.train, &data.val, &data.test] {
            split.try_images()?;
        }
        self.data = Some(data);
        Ok(())
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        self.on_pool(|engine| {
            let mut stats = engine.epoch_steps(order, hyper)?;
            stats.val = Some(engine.evaluate_split(SplitName::Val)?);
            Ok(stats)
        })
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        self.on_pool(|engine| engine.evaluate_split(split))
    }

    fn params(&self) -> Result<Params, EngineError> {
        Ok(Params {
            model: self.model(),
            values: self.params.clone(),
        })
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        if params.model != self.model() {
            return Err(EngineError::params_mismatch(&self.model(), params));
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

    fn training_state(&self) -> Result<TrainingState, EngineError> {
        Ok(super::training_state(&self.params, &self.best, &self.state))
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        super::set_training_state(state, &mut self.params, &mut self.best, &mut self.state)
    }
}
