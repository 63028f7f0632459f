//! `CpuEngine`: the [`Engine`] on the CPU, f32, on the fast GEMM with every core busy.
//! Batches are gathered from the resident training split in the order the host gives.

use std::sync::Arc;

use super::net::{self, Shape, Workspace};
use super::ops::{self, OptimizerState};
use crate::config::Hyper;
use crate::data::{Dataset, SplitName};
use crate::engine::{Engine, EngineError, EpochStats, EvalStats};
use crate::model::{Activation, LayerView, Params};

/// Rows per forward pass when evaluating a split.
const EVAL_ROWS: usize = 1024;

pub struct CpuEngine {
    widths: Vec<usize>,
    activation: Activation,
    layers: Vec<LayerView>,
    params: Vec<f32>,
    grad: Vec<f32>,
    state: OptimizerState<f32>,
    /// (B, I) rows of the current mini-batch, gathered by index.
    batch_images: Vec<f32>,
    batch_labels: Vec<u8>,
    workspace: Workspace<f32>,
    best: Vec<f32>,
    data: Option<Arc<Dataset>>,
    threads: usize,
}

impl CpuEngine {
    /// An engine holding `params`; `threads = 0` means one per core.
    pub fn new(params: &Params, threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let layers = params.layers();
        CpuEngine {
            widths: params.widths.clone(),
            activation: params.activation,
            workspace: Workspace::new(&layers, EVAL_ROWS),
            layers,
            params: params.values.clone(),
            best: params.values.clone(),
            grad: vec![0.0; params.values.len()],
            state: OptimizerState::new(params.values.len()),
            batch_images: Vec::new(),
            batch_labels: Vec::new(),
            data: None,
            threads,
        }
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        format!(
            "cpu ({} thread{})",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        if data.features != self.widths[0] || data.classes != *self.widths.last().unwrap_or(&0) {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: vec![data.features, data.classes],
            });
        }
        self.data = Some(data);
        Ok(())
    }

    fn train_epoch(&mut self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let features = data.features;
        let batch = hyper.batch_size.max(1);
        if self.workspace.capacity() < batch {
            self.workspace = Workspace::new(&self.layers, batch);
        }
        self.batch_images.resize(batch * features, 0.0);
        self.batch_labels.resize(batch, 0);
        let mut stats = EpochStats::default();
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = indices.len();
            for (r, &i) in indices.iter().enumerate() {
                let i = i as usize;
                self.batch_images[r * features..(r + 1) * features]
                    .copy_from_slice(&data.train.images[i * features..(i + 1) * features]);
                self.batch_labels[r] = data.train.labels[i];
            }
            let shape = Shape {
                layers: &self.layers,
                activation: self.activation,
                threads: self.threads,
            };
            let (loss_sum, correct) = net::loss_and_gradient(
                shape,
                &self.params,
                &self.batch_images,
                &self.batch_labels,
                rows,
                hyper.gradient,
                &mut self.grad,
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
                &self.layers,
                hyper,
            );
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.samples += rows;
            stats.steps += 1;
        }
        stats.val = Some(self.evaluate(SplitName::Val)?);
        Ok(stats)
    }

    fn evaluate(&mut self, split: SplitName) -> Result<EvalStats, EngineError> {
        let data = self.data.clone().ok_or(EngineError::NoData)?;
        let split = data.split(split);
        let shape = Shape {
            layers: &self.layers,
            activation: self.activation,
            threads: self.threads,
        };
        let (loss_sum, correct) = net::evaluate(
            shape,
            &self.params,
            &split.images,
            &split.labels,
            &mut self.workspace,
        );
        let n = split.len.max(1) as f64;
        Ok(EvalStats {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            samples: split.len,
        })
    }

    fn params(&self) -> Result<Params, EngineError> {
        Ok(Params {
            widths: self.widths.clone(),
            activation: self.activation,
            values: self.params.clone(),
        })
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        if params.widths != self.widths {
            return Err(EngineError::ShapeMismatch {
                expected: self.widths.clone(),
                found: params.widths.clone(),
            });
        }
        self.params.copy_from_slice(&params.values);
        self.activation = params.activation;
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
}
