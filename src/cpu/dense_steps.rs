//! The fused dense path's side of the CPU engine ([`super::engine`]): a mini-batch cut into
//! chunks of [`CHUNK_ROWS`] rows, each run forward and backward on one thread into its own
//! shard ([`super::dense`]), in waves of one chunk per thread; the chunks' gradients summed in
//! chunk order, the last wave's inside the update, which splits the parameters into one
//! range per thread. Where a step is one wave, its chunks and its update go to the pool in one
//! hand-over ([`DensePath::step_and_update`]). Every element is summed in one order whatever
//! the thread count, so any thread count gives the same bits.

use rayon::prelude::*;

use super::dense::{self, Shape, Workspace};
use super::ops::{self, OptimizerState};
use crate::config::Hyper;
use crate::data::Split;
use crate::model::{Activation, LayerView};

/// Rows of a split the fused dense path evaluates as one chunk (one forward pass).
pub const EVAL_ROWS: usize = 512;
/// Rows of a mini-batch per chunk on the fused dense path: below this a chunk's work is
/// shorter than waking a sibling thread (measured: 2 threads at batch 32 were slower), and
/// the paper's batch of 128 is 2 chunks, one per thread of a 2-core machine.
pub const CHUNK_ROWS: usize = 64;

/// The fused dense path: a chunk's buffers (a shard) for each thread, and one more that sums
/// when a batch has more chunks than threads.
pub(super) struct DensePath {
    activation: Activation,
    shards: Vec<Shard>,
    /// The shards' gradient buffers, for [`DensePath::step_and_update`] (kept to allocate
    /// nothing in a step).
    grads: Vec<SendPtr<f32>>,
    /// Threads that take chunks.
    threads: usize,
    /// Chunks the current epoch's batches are split into: fixed by the batch size.
    chunks: usize,
}

/// One chunk's buffers on the fused dense path.
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

impl DensePath {
    /// The path for a network of `views` with `params` parameters, on `threads` threads.
    pub(super) fn new(
        activation: Activation,
        views: &[LayerView],
        params: usize,
        threads: usize,
    ) -> Self {
        DensePath {
            activation,
            shards: (0..threads)
                .map(|_| Shard::new(views, params, EVAL_ROWS))
                .collect(),
            grads: Vec::with_capacity(threads),
            threads,
            chunks: 1,
        }
    }

    /// Sizes the chunks and shards for mini-batches of `batch` rows of `features` values.
    pub(super) fn prepare(&mut self, batch: usize, views: &[LayerView], features: usize) {
        self.chunks = (batch / CHUNK_ROWS).max(1);
        let shards = match self.chunks <= self.threads {
            true => self.chunks,
            false => self.threads + 1,
        };
        let shard_rows = batch.div_ceil(self.chunks);
        let params = self.shards[0].grad.len();
        while self.shards.len() < shards {
            self.shards.push(Shard::new(views, params, EVAL_ROWS));
        }
        for shard in &mut self.shards {
            if shard.workspace.capacity() < shard_rows {
                shard.workspace = Workspace::new(views, shard_rows);
            }
            shard.images.resize(shard_rows * features, 0.0);
            shard.labels.resize(shard_rows, 0);
        }
    }

    fn shape<'a>(&self, views: &'a [LayerView]) -> Shape<'a> {
        Shape {
            layers: views,
            activation: self.activation,
            threads: 1,
        }
    }

    /// Forward and backward on the rows `indices` of `train`: the (loss sum, correct) of the
    /// mini-batch. The chunks go in waves of one per thread; after every wave but the last,
    /// shard 0 adds the wave's gradients in chunk order (the first wave computes into it, the
    /// others into the shards after it), so every element is the same sum in the same order
    /// on any thread count. The last wave's gradients are added by [`DensePath::update`].
    pub(super) fn step(
        &mut self,
        views: &[LayerView],
        params: &[f32],
        train: &Split,
        indices: &[u32],
        scale: f32,
    ) -> (f64, usize) {
        let (rows, chunks, shape) = (indices.len(), self.chunks, self.shape(views));
        let (mut loss_sum, mut correct) = (0.0, 0);
        let mut next = 0;
        while next < chunks {
            // The first wave's first chunk computes into shard 0; later waves keep it for the sum.
            let base = usize::from(next > 0);
            let wave = base..base + (chunks - next).min(self.threads);
            let step_shard = |(j, s): (usize, &mut Shard)| {
                let chunk = &indices[part(rows, chunks, next + j)];
                s.result = shard_step(s, shape, params, train, chunk, scale);
            };
            let shards = &mut self.shards[wave.clone()];
            if shards.len() > 1 {
                shards.par_iter_mut().enumerate().for_each(step_shard);
            } else {
                shards.iter_mut().enumerate().for_each(step_shard);
            }
            (loss_sum, correct) = add_results((loss_sum, correct), shards);
            next += wave.len();
            if next < chunks {
                self.add_into_first(wave.start.max(1)..wave.end);
            }
        }
        (loss_sum, correct)
    }

    /// The shards that hold a step's last chunks, after shard 0 (which holds the sum of the
    /// chunks before them): the update adds them. Empty when a step is one chunk.
    fn last_wave(&self) -> std::ops::Range<usize> {
        let (chunks, threads) = (self.chunks, self.threads.max(1));
        if chunks <= threads {
            return 1..chunks.max(1);
        }
        // After the first wave of `threads` chunks, later waves of up to `threads` each.
        1..1 + (chunks - threads - 1) % threads + 1
    }

    /// Adds the gradients of the shards in `others` to shard 0's, in shard order.
    fn add_into_first(&mut self, others: std::ops::Range<usize>) {
        let (first, rest) = self.shards.split_at_mut(1);
        let others = &rest[others.start - 1..others.end - 1];
        let grad = &mut first[0].grad;
        let range = grad.len().div_ceil(self.threads.max(1));
        let add = |(k, g): (usize, &mut [f32])| {
            let len = g.len();
            add_in_order(g, ranges_of(others, k * range, len))
        };
        if self.threads > 1 {
            grad.par_chunks_mut(range).enumerate().for_each(add);
        } else {
            grad.chunks_mut(range).enumerate().for_each(add);
        }
    }

    /// Whether a step is one wave of chunks on more than one thread, run on a pool of that
    /// many (the engine's): then [`DensePath::step_and_update`] takes it.
    pub(super) fn one_wave(&self) -> bool {
        self.threads > 1
            && self.chunks <= self.threads
            && rayon::current_num_threads() == self.threads
    }

    /// A step of one wave ([`DensePath::one_wave`]) in one hand-over of work to the pool:
    /// every thread computes its chunk, waits for the others at a barrier, then adds the
    /// chunks' gradients into shard 0 and updates its own range of the parameters — what
    /// [`DensePath::step`] and [`DensePath::update`] do in two hand-overs, each of which cost
    /// a two-thread step of the paper's MLP about a tenth of its time (every element is the
    /// same sum in the same order, so the same bits). Where the step's loss is not finite no
    /// thread updates, as the two-call path does not; where a chunk panics, no thread
    /// updates and the panic goes on to the caller.
    pub(super) fn step_and_update(
        &mut self,
        views: &[LayerView],
        params: &mut [f32],
        state: &mut OptimizerState<f32>,
        batch: Batch<'_>,
        hyper: &Hyper,
    ) -> (f64, usize) {
        let (rows, chunks, shape) = (batch.indices.len(), self.chunks, self.shape(views));
        let len = params.len();
        // The barrier waits for `threads` threads: the broadcast must bring exactly those.
        assert!(self.one_wave(), "a one-wave step off the engine's pool");
        // The ranges below are cut from these; a shorter one would be read out of bounds.
        assert!(state.first.len() == len && state.second.len() == len);
        let range = len.div_ceil(self.threads);
        let t = state.step + 1;
        // Raw pointers taken with exclusive access before the work is handed out: the
        // barrier parts the phase that reads the parameters and writes whole shards from the
        // one that writes disjoint ranges of the parameters, the moments and shard 0's sum.
        let shards = SendPtr(self.shards.as_mut_ptr());
        self.grads.clear();
        (self.grads).extend(
            self.shards[..chunks]
                .iter_mut()
                .map(|s| SendPtr(s.grad.as_mut_ptr())),
        );
        let grads = &self.grads;
        let weights = SendPtr(params.as_mut_ptr());
        let (first, second) = (
            SendPtr(state.first.as_mut_ptr()),
            SendPtr(state.second.as_mut_ptr()),
        );
        let barrier = std::sync::Barrier::new(self.threads);
        let panicked = std::sync::atomic::AtomicBool::new(false);
        rayon::broadcast(|ctx| {
            let me = ctx.index();
            let computed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if me < chunks {
                    // SAFETY: only this thread touches shard `me` before the barrier, and
                    // every thread only reads the parameters there.
                    let (shard, params) = unsafe {
                        (
                            &mut *shards.ptr().add(me),
                            std::slice::from_raw_parts(weights.ptr(), len),
                        )
                    };
                    let chunk = &batch.indices[part(rows, chunks, me)];
                    shard.result =
                        shard_step(shard, shape, params, batch.train, chunk, batch.scale);
                }
            }));
            if computed.is_err() {
                panicked.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // Every thread reaches the barrier, a panicking one too, so none waits forever.
            barrier.wait();
            if let Err(panic) = computed {
                std::panic::resume_unwind(panic);
            }
            // SAFETY: after the barrier no thread writes a shard (only shard 0's gradient
            // buffer, which the shard does not hold in itself).
            let done = unsafe { std::slice::from_raw_parts(shards.ptr(), chunks) };
            let (loss, _) = add_results((0.0, 0), done);
            let (offset, end) = (me * range, ((me + 1) * range).min(len));
            let failed = panicked.load(std::sync::atomic::Ordering::Relaxed);
            if failed || !loss.is_finite() || offset >= end {
                return;
            }
            let n = end - offset;
            // SAFETY: `offset..end` is this thread's alone: it writes that range of the
            // parameters, the moments and shard 0's gradient, and reads that range of the
            // other shards' gradients, which no thread writes after the barrier.
            let (w, g, f, s) = unsafe {
                (
                    std::slice::from_raw_parts_mut(weights.ptr().add(offset), n),
                    std::slice::from_raw_parts_mut(grads[0].ptr().add(offset), n),
                    std::slice::from_raw_parts_mut(first.ptr().add(offset), n),
                    std::slice::from_raw_parts_mut(second.ptr().add(offset), n),
                )
            };
            let others = (grads[1..].iter())
                .map(|p| unsafe { std::slice::from_raw_parts(p.ptr().add(offset), n) });
            add_in_order(g, others);
            ops::update_range(w, g, f, s, offset, t, views, hyper);
        });
        let (loss_sum, correct) = add_results((0.0, 0), &self.shards[..chunks]);
        if loss_sum.is_finite() {
            state.step = t;
        }
        (loss_sum, correct)
    }

    /// The update with the step's chunk gradients summed: the last wave's are added to shard
    /// 0's inside the update, one parameter range per thread, so no thread idles through a
    /// serial update (every element is still added in shard order).
    pub(super) fn update(
        &mut self,
        params: &mut [f32],
        state: &mut OptimizerState<f32>,
        views: &[LayerView],
        hyper: &Hyper,
    ) {
        let last_wave = self.last_wave();
        if last_wave.is_empty() {
            ops::update(params, &self.shards[0].grad, state, views, hyper);
            return;
        }
        state.step += 1;
        let t = state.step;
        let range = params.len().div_ceil(self.threads.max(1));
        let (first, rest) = self.shards.split_at_mut(1);
        let others = &rest[last_wave.start - 1..last_wave.end - 1];
        let update = |k: usize, w: &mut [f32], g: &mut [f32], f: &mut [f32], s: &mut [f32]| {
            let offset = k * range;
            let len = g.len();
            add_in_order(g, ranges_of(others, offset, len));
            ops::update_range(w, g, f, s, offset, t, views, hyper);
        };
        let grad = &mut first[0].grad;
        if self.threads > 1 {
            (params.par_chunks_mut(range))
                .zip(grad.par_chunks_mut(range))
                .zip(state.first.par_chunks_mut(range))
                .zip(state.second.par_chunks_mut(range))
                .enumerate()
                .for_each(|(k, (((w, g), f), s))| update(k, w, g, f, s));
        } else {
            (params.chunks_mut(range))
                .zip(grad.chunks_mut(range))
                .zip(state.first.chunks_mut(range))
                .zip(state.second.chunks_mut(range))
                .enumerate()
                .for_each(|(k, (((w, g), f), s))| update(k, w, g, f, s));
        }
    }

    /// (loss sum, correct) over `split`: chunks of [`EVAL_ROWS`] rows, one forward pass
    /// each, in waves of one per thread, summed in chunk order.
    pub(super) fn evaluate(
        &mut self,
        views: &[LayerView],
        params: &[f32],
        split: &Split,
    ) -> (f64, usize) {
        let shape = self.shape(views);
        let features = views[0].fan_in;
        let chunks = split.len.div_ceil(EVAL_ROWS);
        let width = self.threads.min(self.shards.len());
        let (mut loss_sum, mut correct) = (0.0, 0);
        let mut next = 0;
        while next < chunks {
            let shards = &mut self.shards[..width.min(chunks - next)];
            let eval = |(j, s): (usize, &mut Shard)| {
                let start = (next + j) * EVAL_ROWS;
                let rows = start..(start + EVAL_ROWS).min(split.len);
                if s.workspace.capacity() < EVAL_ROWS {
                    s.workspace = Workspace::new(views, EVAL_ROWS);
                }
                s.result = dense::evaluate(
                    shape,
                    params,
                    &split.images()[rows.start * features..rows.end * features],
                    &split.labels[rows],
                    &mut s.workspace,
                );
            };
            if shards.len() > 1 {
                shards.par_iter_mut().enumerate().for_each(eval);
            } else {
                shards.iter_mut().enumerate().for_each(eval);
            }
            (loss_sum, correct) = add_results((loss_sum, correct), shards);
            next += shards.len();
        }
        (loss_sum, correct)
    }
}

/// `sum` plus the shards' (loss sum, correct), in shard order: how every step and evaluation
/// adds its chunks' results.
fn add_results(sum: (f64, usize), shards: &[Shard]) -> (f64, usize) {
    (shards.iter()).fold(sum, |(loss, right), s| {
        (loss + s.result.0, right + s.result.1)
    })
}

/// Adds each of `others` (ranges of other gradients as long as `sum`) to `sum`, in order.
fn add_in_order<'a>(sum: &mut [f32], others: impl IntoIterator<Item = &'a [f32]>) {
    for part in others {
        sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
}

/// The same ranges of other shards' gradients, for [`add_in_order`].
fn ranges_of<'a>(
    shards: &'a [Shard],
    offset: usize,
    len: usize,
) -> impl Iterator<Item = &'a [f32]> + 'a {
    shards.iter().map(move |s| &s.grad[offset..offset + len])
}

/// A step's rows: which of `train`'s, and the gradient's scale.
#[derive(Clone, Copy)]
pub(super) struct Batch<'a> {
    pub(super) train: &'a Split,
    pub(super) indices: &'a [u32],
    pub(super) scale: f32,
}

/// A raw pointer handed to the pool's threads, which use it as its owner's SAFETY comment
/// says.
struct SendPtr<T>(*mut T);

// By hand: a derive would ask `T: Copy`, and a pointer copies whatever it points to.
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so a closure captures the wrapper, not the bare field).
    fn ptr(self) -> *mut T {
        self.0
    }
}

// SAFETY: the threads given one use it on disjoint data, or read only, as each use says.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Gathers one chunk's rows and runs forward and backward on them; an empty chunk (a batch
/// of fewer rows than chunks) contributes a zero gradient.
fn shard_step(
    shard: &mut Shard,
    shape: Shape<'_>,
    params: &[f32],
    train: &Split,
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
    dense::loss_and_gradient_scaled(
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

/// The `i`-th of `n` contiguous, near-equal parts of `0..len`.
fn part(len: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    (len * i / n)..(len * (i + 1) / n)
}
