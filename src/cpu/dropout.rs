//! Dropout on the CPU: the masks of `model::dropout` applied in place (the CPU twin of
//! dropout.wgsl's entry point).

use super::scalar::Scalar;
use crate::model::dropout::{DropoutMask, hash32};

/// What a kept element is multiplied by: 1 / (1 − p), in the precision `T` computes in.
fn kept_scale<T: Scalar>(mask: &DropoutMask) -> T {
    T::one() / (T::one() - T::from_f64(mask.p()))
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
    let (scale, counters) = (kept_scale::<T>(mask), mask.counters());
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
