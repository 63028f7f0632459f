//! Dropout masks from a counter-based generator: whether element `e` of layer `l`
//! is kept at step `s` of epoch `t` is a pure function of (seed, t, s, l, e), evaluated in u32
//! arithmetic only (wrapping multiplies, shifts, xors) so that Rust and WGSL, which has no
//! 64-bit integers, compute the same bits. No generator state is carried from step to step, so
//! a resumed run and a GPU pack draw the same masks as one run from the start, and the CPU
//! and the GPU agree with dropout on as closely as without it.

/// Chris Wellons' `lowbias32` integer hash (a 32-bit finaliser with a bias of about 0.17 per
/// mille across output bits): the mixing step, applied once per counter word.
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// 32 random bits for one element: the seed's two halves, then the epoch, step, layer and
/// element, each xored into the running hash before it is mixed again.
pub fn dropout_bits(seed: u64, epoch: u32, step: u32, layer: u32, element: u32) -> u32 {
    hash32(counters_hash(seed, epoch, step, layer) ^ element)
}

/// The running hash of every counter but the element: one per mask, so a mask's elements
/// each cost one `hash32` (not six).
fn counters_hash(seed: u64, epoch: u32, step: u32, layer: u32) -> u32 {
    let mut h = hash32(seed as u32 ^ 0x9e37_79b9);
    for word in [(seed >> 32) as u32, epoch, step, layer] {
        h = hash32(h ^ word);
    }
    h
}

/// One layer's dropout at one step: which elements survive and by how much they are scaled
/// (inverted dropout: kept values are divided by 1 − p, so evaluation needs no rescaling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    pub seed: u64,
    pub epoch: u32,
    pub step: u32,
    pub layer: u32,
    /// An element is dropped when the top 24 of its bits are below this: p · 2^24, rounded.
    /// Integers on both sides, so the decision is the same bits everywhere.
    pub threshold: u32,
}

impl DropoutMask {
    /// The mask of `layer` at `step` of `epoch` for dropout probability `p` (0 ≤ p < 1).
    pub fn new(seed: u64, epoch: u32, step: u32, layer: u32, p: f64) -> Self {
        DropoutMask {
            seed,
            epoch,
            step,
            layer,
            threshold: (p.clamp(0.0, 1.0) * (1u32 << 24) as f64).round() as u32,
        }
    }

    /// The probability this mask drops an element with, as its threshold holds it.
    pub fn p(&self) -> f64 {
        self.threshold as f64 / (1u32 << 24) as f64
    }

    /// [`counters_hash`] of this mask's counters.
    pub fn counters(&self) -> u32 {
        counters_hash(self.seed, self.epoch, self.step, self.layer)
    }

    /// What a kept element is multiplied by in f32: 1 / (1 − p), as the CPU path computes it
    /// in f32 (the kernels' uniform).
    pub fn scale_f32(&self) -> f32 {
        1.0 / (1.0 - self.p() as f32)
    }

    /// Whether element `element` is kept.
    pub fn keeps(&self, element: u32) -> bool {
        dropout_bits(self.seed, self.epoch, self.step, self.layer, element) >> 8 >= self.threshold
    }
}
