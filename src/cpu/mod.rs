//! The CPU path: reference maths (`ops`), a thin row-major wrapper over the `gemm` crate
//! (`gemm`), the batched forward/backward pass built on it (`net`), and the engine (`engine`).
//! Everything numeric is generic over [`Scalar`] so the same code runs in f32 for training and
//! in f64 for the gradient check.

pub mod engine;
pub mod gemm;
pub mod net;
pub mod ops;

pub use engine::CpuEngine;

/// The float types the CPU path runs in: f32 (training) and f64 (gradient check, references).
pub trait Scalar:
    num_traits::Float + std::iter::Sum + Default + Send + Sync + std::fmt::Debug + 'static
{
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}
