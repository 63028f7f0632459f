//! The float types the CPU path runs in, and tanh as it computes it.

use super::kernels::{CpuKernels, GemmEntry};

/// The float types the CPU path runs in: f32 (training) and f64 (gradient check, references).
pub trait Scalar:
    num_traits::Float + std::iter::Sum + Default + Send + Sync + std::fmt::Debug + 'static
{
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// tanh as the CPU path computes it (see [`tanh_f32`] for f32).
    fn tanh_activation(self) -> Self {
        self.tanh()
    }
    /// This type's GEMM entry on `kernels`, where wgtrain calls the kernels itself (x86-64);
    /// `None` where the `gemm` crate chooses.
    fn gemm_entry(kernels: CpuKernels) -> Option<GemmEntry<Self>>;
}

// `#[inline]` on these so that code instantiating the generic passes outside this crate (the
// `cargo bench` programs) inlines and vectorises them as the engines here do.
impl Scalar for f32 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn tanh_activation(self) -> Self {
        tanh_f32(self)
    }
    fn gemm_entry(kernels: CpuKernels) -> Option<GemmEntry<Self>> {
        super::kernels::f32_entry(kernels)
    }
}

/// tanh in f32 as a clamped rational function (Eigen's `ptanh_float` coefficients), within a few
/// ulp of the true value: libm's `tanhf` is a branchy scalar call that cost a third of an
/// epoch of the paper's tanh model, and this one vectorises. Inputs beyond ±7.9988 saturate.
#[inline]
pub fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.998_811_7;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_7e-3;
    const B4: f32 = 1.185_347e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    let q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    let r = p / q;
    // Below 4e-4 the rational form loses relative accuracy; tanh(x) = x to f32 precision there.
    // Both sides are computed so the choice compiles to a blend and the loop vectorises.
    if x.abs() < 4e-4 { x } else { r }
}

impl Scalar for f64 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    fn gemm_entry(kernels: CpuKernels) -> Option<GemmEntry<Self>> {
        super::kernels::f64_entry(kernels)
    }
}
