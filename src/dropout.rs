//! Dropout masks from a counter-based generator: whether element `e` of layer `l`
//! is kept at step `s` of epoch `t` is a pure function of (seed, t, s, l, e), evaluated in u32
//! arithmetic only (wrapping multiplies, shifts, xors) so that Rust and WGSL, which has no
//! 64-bit integers, compute the same bits. No generator state is carried from step to step, so
//! a resumed run and a GPU pack draw the same masks as one run from the start, and the CPU
//! and the GPU agree with dropout on as closely as without it.
//!
//! Nothing trains through dropout yet; the model is still a list of dense widths.

use crate::cpu::Scalar;

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
    fn counters(&self) -> u32 {
        counters_hash(self.seed, self.epoch, self.step, self.layer)
    }

    /// Whether element `element` is kept.
    pub fn keeps(&self, element: u32) -> bool {
        dropout_bits(self.seed, self.epoch, self.step, self.layer, element) >> 8 >= self.threshold
    }

    /// What a kept element is multiplied by: 1 / (1 − p), in the precision `T` computes in.
    pub fn scale<T: Scalar>(&self) -> T {
        T::one() / (T::one() - T::from_f64(self.p()))
    }
}

/// Dropout forward in place: every element the mask drops becomes 0, every kept one is scaled
/// by 1 / (1 − p). `x` is (B, N) row-major; the element counter runs over the whole batch.
pub fn dropout_forward<T: Scalar>(mask: &DropoutMask, x: &mut [T]) {
    dropout_forward_from(mask, x, 0);
}

/// [`dropout_forward`] on a part of the batch whose first element is element `first` of the
/// whole (so threads can mask parts and draw the whole's mask).
pub fn dropout_forward_from<T: Scalar>(mask: &DropoutMask, x: &mut [T], first: usize) {
    dropout_forward_at(mask, x, |e| first + e);
}

/// [`dropout_forward`] on values whose element counters are not consecutive: `x[e]` is
/// element `element(e)` of the whole (a layout other than the mask's, as the CPU path's
/// channels-last images).
pub fn dropout_forward_at<T: Scalar>(
    mask: &DropoutMask,
    x: &mut [T],
    element: impl Fn(usize) -> usize,
) {
    let (scale, counters) = (mask.scale::<T>(), mask.counters());
    for (e, v) in x.iter_mut().enumerate() {
        // `keeps`, with the counters' hash taken once for the whole mask.
        let kept = hash32(counters ^ element(e) as u32) >> 8 >= mask.threshold;
        *v = if kept { *v * scale } else { T::zero() };
    }
}

/// Dropout backward in place: the gradient goes through exactly where the forward pass let
/// the value through, with the same scale (the same function, applied to the gradient).
pub fn dropout_backward<T: Scalar>(mask: &DropoutMask, grad: &mut [T]) {
    dropout_forward(mask, grad);
}
