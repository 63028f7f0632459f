//! The run's random streams: one ChaCha8 generator per purpose, all seeded by the run's seed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// ChaCha stream numbers keep the run's random draws independent of one another: changing the
/// number of epochs, say, never changes the split or the initial weights.
pub const STREAM_SPLIT: u64 = 1;
pub const STREAM_INIT: u64 = 2;
/// The gradient check's sample of rows and parameters.
pub const STREAM_GRADCHECK: u64 = 3;
/// Epoch `e`'s visiting order draws from stream `STREAM_EPOCH_BASE + e`.
pub const STREAM_EPOCH_BASE: u64 = 1 << 32;

/// A ChaCha8 generator for one purpose of one run.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
