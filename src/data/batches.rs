//! The only shuffler: every engine consumes the order this returns, so CPU and GPU see identical
//! batches in identical order, and a resumed run sees the order an uninterrupted one would.

use rand::seq::SliceRandom;

use crate::model::rng::{STREAM_EPOCH_BASE, rng_for};

/// The visiting order of the `n` training rows in `epoch` (1-based): a seeded permutation that
/// depends only on `(seed, epoch, n)`.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng_for(seed, STREAM_EPOCH_BASE + epoch as u64));
    order
}
