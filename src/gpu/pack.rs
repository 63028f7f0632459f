//! Packing whole training runs onto one device: each run keeps its own thread, training loop,
//! early stopping and run directory, and its engine is a seat in a [`GpuPack`]. A seat's
//! `train_epoch` waits until every seat still in the pack has asked for its epoch, then one
//! of them records the epoch for all ([`GpuModels::train_epoch`]) and hands each its
//! result. A run that stops early (or fails) leaves the pack and the others train on without
//! it. Everything else a run does (evaluate, checkpoint, keep its best) touches only its own
//! model and happens between packed epochs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::context::{AdapterSummary, GpuContext, GpuError};
use super::models::{EpochJob, GpuModels};
use crate::config::Hyper;
use crate::data::{Dataset, SplitName};
use crate::engine::{
    Awaited, Engine, EngineError, EpochStats, EvalStats, TrainingState, ready, wait,
};
use crate::model::{Network, Params};

/// Where a seat's run is between epochs.
enum Seat {
    /// Doing its own work (loading, evaluating, writing files) or not started.
    Busy,
    /// Waiting for the packed epoch with this order and these hyperparameters.
    Ready { order: Vec<u32>, hyper: Hyper },
    /// The packed epoch ran; the result waits for the seat's thread to take it.
    Done(Result<EpochStats, EngineError>),
    /// Gone: finished, stopped early, failed or never started.
    Left,
}

struct PackState {
    models: GpuModels,
    seats: Vec<Seat>,
}

/// K models of one shape trained in the same dispatches, shared by K runs.
pub struct GpuPack {
    state: Mutex<PackState>,
    turn: Condvar,
    info: Arc<AdapterSummary>,
    detail: String,
}

/// One run's place in a [`GpuPack`]. Dropping the last handle to it leaves the pack.
pub struct PackSeat {
    pack: Arc<GpuPack>,
    index: usize,
}

impl std::fmt::Debug for PackSeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackSeat({} of {})", self.index, self.pack.detail)
    }
}

fn poisoned() -> EngineError {
    EngineError::Panicked {
        what: "another run of the GPU pack",
    }
}

impl GpuPack {
    /// A pack of `models` models of `model`'s shape trained at `batch_size`: one seat per
    /// model.
    // wgpu's handles are Send and Sync natively, where seats go to threads; in a browser
    // (one thread) they are neither, and nothing sends them.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn seats(
        ctx: GpuContext,
        model: &Arc<Network>,
        batch_size: usize,
        models: usize,
    ) -> Result<Vec<Arc<PackSeat>>, GpuError> {
        let info = Arc::clone(&ctx.info);
        let detail = format!("{} (pack of {models})", ctx.describe());
        let packed = GpuModels::new(ctx, model, batch_size, models)?;
        let pack = Arc::new(GpuPack {
            state: Mutex::new(PackState {
                models: packed,
                seats: (0..models).map(|_| Seat::Busy).collect(),
            }),
            turn: Condvar::new(),
            info,
            detail,
        });
        Ok((0..models)
            .map(|index| {
                Arc::new(PackSeat {
                    pack: Arc::clone(&pack),
                    index,
                })
            })
            .collect())
    }

    fn lock(&self) -> Result<MutexGuard<'_, PackState>, EngineError> {
        self.state.lock().map_err(|_| poisoned())
    }
}

impl PackSeat {
    /// The adapter the pack runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.pack.info
    }

    /// This seat's engine, starting from `params`.
    pub fn engine(
        self: &Arc<Self>,
        params: &Params,
        batch_size: usize,
    ) -> Result<Box<dyn Engine>, EngineError> {
        let mut state = self.pack.lock()?;
        if batch_size > state.models.batch_size() {
            return Err(EngineError::Mismatch(format!(
                "the pack was built for batch {}, this run uses {batch_size}",
                state.models.batch_size()
            )));
        }
        state.models.init_model(self.index, params)?;
        Ok(Box::new(SeatEngine {
            seat: Arc::clone(self),
        }))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut GpuModels, usize) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut state = self.pack.lock()?;
        f(&mut state.models, self.index)
    }

    fn train_epoch(&self, order: &[u32], hyper: &Hyper) -> Result<EpochStats, EngineError> {
        let pack = &*self.pack;
        let mut state = pack.lock()?;
        state.seats[self.index] = Seat::Ready {
            order: order.to_vec(),
            hyper: *hyper,
        };
        loop {
            match std::mem::replace(&mut state.seats[self.index], Seat::Busy) {
                Seat::Done(result) => return result,
                waiting => state.seats[self.index] = waiting,
            }
            let all_ready = state
                .seats
                .iter()
                .all(|s| matches!(s, Seat::Ready { .. } | Seat::Left));
            if all_ready {
                Self::run_round(&mut state);
                pack.turn.notify_all();
                continue;
            }
            state = pack.turn.wait(state).map_err(|_| poisoned())?;
        }
    }

    /// Records one packed epoch for every ready seat and leaves each its result.
    fn run_round(state: &mut PackState) {
        let jobs: Vec<Option<EpochJob<'_>>> = state
            .seats
            .iter()
            .map(|s| match s {
                Seat::Ready { order, hyper } => Some(EpochJob { order, hyper }),
                _ => None,
            })
            .collect();
        let started = web_time::Instant::now();
        let models = jobs.iter().flatten().count().max(1) as f64;
        let results = match pollster::block_on(state.models.train_epoch(&jobs)) {
            Ok(mut r) => {
                let share = started.elapsed().as_secs_f64() / models;
                for stats in r.iter_mut().flatten().flatten() {
                    stats.shared_secs = Some(share);
                }
                r
            }
            // A failure of the whole epoch (a lost device, say) is every ready seat's: a GPU
            // error goes to each as itself, anything else in words.
            Err(e) => {
                let shared = |e: &EngineError| match e {
                    EngineError::Gpu(g) => EngineError::Gpu(g.clone()),
                    other => EngineError::Mismatch(other.to_string()),
                };
                jobs.iter().map(|j| j.map(|_| Err(shared(&e)))).collect()
            }
        };
        for (seat, result) in state.seats.iter_mut().zip(results) {
            if let Some(r) = result {
                *seat = Seat::Done(r);
            }
        }
    }
}

impl Drop for PackSeat {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned pack has nobody left to wake anyway.
        if let Ok(mut state) = self.pack.state.lock() {
            state.seats[self.index] = Seat::Left;
            self.pack.turn.notify_all();
        }
    }
}

/// The engine a run trains through: its seat in a pack.
struct SeatEngine {
    seat: Arc<PackSeat>,
}

impl Engine for SeatEngine {
    fn describe(&self) -> String {
        format!("{}, model {}", self.seat.pack.detail, self.seat.index + 1)
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        self.seat.with(|m, i| m.upload(i, &data))
    }

    // A seat trains on its run's own thread, waiting its turn in the pack, so its answers
    // are waited for here and handed back ready.
    fn train_epoch<'a>(
        &'a mut self,
        order: &'a [u32],
        hyper: &'a Hyper,
    ) -> Awaited<'a, EpochStats> {
        ready(self.seat.train_epoch(order, hyper))
    }

    fn evaluate(&mut self, split: SplitName) -> Awaited<'_, EvalStats> {
        ready(self.seat.with(|m, i| wait(m.evaluate(i, split))))
    }

    fn params(&self) -> Awaited<'_, Params> {
        ready(self.seat.with(|m, i| wait(m.params(i))))
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        self.seat.with(|m, i| m.set_params(i, params))
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.seat.with(|m, i| m.keep_best(i))
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.seat.with(|m, i| m.restore_best(i))
    }

    fn training_state(&self) -> Awaited<'_, TrainingState> {
        ready(self.seat.with(|m, i| wait(m.training_state(i))))
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        self.seat.with(|m, i| m.set_training_state(i, state))
    }
}
