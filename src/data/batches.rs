//! The only shuffler: every engine consumes the order this returns, so CPU and GPU see identical
//! batches in identical order, and a resumed run sees the order an uninterrupted one would.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// ChaCha stream numbers keep the run's random draws independent of one another: changing the
/// number of epochs, say, never changes the split or the initial weights.
pub const STREAM_SPLIT: u64 = 1;
pub const STREAM_INIT: u64 = 2;
const STREAM_EPOCH_BASE: u64 = 1 << 32;

/// A ChaCha8 generator for one purpose of one run.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The visiting order of the `n` training rows in `epoch` (1-based): a seeded permutation that
/// depends only on `(seed, epoch, n)`.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng_for(seed, STREAM_EPOCH_BASE + epoch as u64));
    order
}
