//! The CPU path: reference maths (`ops`, and for convolution, pooling and dropout `conv` and
//! `dropout`), a thin row-major wrapper over the `gemm` crate (`gemm`) on the kernel set
//! `kernels` chooses, the two fast passes built on it — the fused pass of a network of dense layers (`dense`) and the layer-by-layer
//! pass of any network (`layers`, with `im2col` and the channels-last image layout
//! `channels_last`) — and the one engine that runs either (`engine`).
//! Everything numeric is generic over [`Scalar`] so the same code runs in f32 for training and
//! in f64 for the gradient check.

pub mod channels_last;
pub mod conv;
pub mod conv_chunks;
pub mod conv_narrow;
pub mod dense;
mod dense_steps;
pub mod dropout;
pub mod engine;
pub mod gemm;
pub mod im2col;
pub mod kernels;
pub mod layers;
pub mod layers_reference;
pub mod ops;
mod pool;
mod scalar;

pub use engine::{CpuEngine, CpuPath, engine_bytes, engine_bytes_for};
pub use kernels::CpuKernels;
pub use pool::thread_pool;
pub use scalar::{Scalar, tanh_f32};
