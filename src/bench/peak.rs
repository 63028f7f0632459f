//! What this CPU can compute at most, as `bench` measures it: the practical f32 GEMM peak of
//! the CPU path's own GEMM (the floor an epoch is held to), and the FMA peak of its cores on
//! the same kernel set (what that GEMM is held to).

use serde::Serialize;
use web_time::Instant;

use crate::cpu::CpuKernels;

/// The practical f32 GEMM peak of this CPU: the CPU path's own GEMM (the `gemm` crate) on
/// square products of each of `sizes`, `runs` timed after two untimed ones per size; the peak is
/// the fastest product's rate. With [`super::rows::epoch_flops`] it gives the floor no implementation of an
/// epoch goes below, so it errs high: a median on one size (the first definition) came out
/// below the rate the epoch's own products reached on a shared 2-vCPU machine (a share of the
/// floor of 154%), since neighbours slow some runs and 1024³ is no size's best everywhere.
#[derive(Debug, Clone, Copy)]
pub struct GemmPeak {
    pub gflops: f64,
    /// Side of the square product that was fastest.
    pub size: usize,
    pub threads: usize,
    /// Products timed per size.
    pub runs: usize,
}

pub fn cpu_gemm_peak(sizes: &[usize], threads: usize, runs: usize) -> GemmPeak {
    // The engine's own pool rule, so the peak is taken on the threads an epoch gets.
    let (pool, threads) = crate::cpu::thread_pool(threads);
    let runs = runs.max(1);
    let mut best = GemmPeak {
        gflops: 0.0,
        size: 0,
        threads,
        runs,
    };
    for &size in sizes {
        let (a, b) = (gemm_operand(size * size, 1), gemm_operand(size * size, 2));
        let mut c = vec![0.0f32; size * size];
        let mut time_one = || {
            let start = Instant::now();
            let mut run =
                || crate::cpu::gemm::row_major_product(&mut c, &a, &b, (size, size, size), threads);
            match &pool {
                Some(pool) => pool.install(run),
                None => run(),
            }
            start.elapsed().as_secs_f64()
        };
        time_one();
        time_one();
        let fastest = (0..runs).map(|_| time_one()).fold(f64::INFINITY, f64::min);
        let gflops = 2.0 * (size as f64).powi(3) / fastest / 1e9;
        if gflops > best.gflops {
            (best.gflops, best.size) = (gflops, size);
        }
    }
    best
}

/// `len` values in [-1, 1) to time products on: no denormals, no overflow, nothing a kernel
/// could shortcut; `seed` makes operands differ.
pub fn gemm_operand(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// This CPU's f32 FMA peak on the kernel set the CPU path runs: `threads` threads each running
/// independent fused multiply-adds on registers alone, no memory touched, so it is what
/// cores × FMA units × lanes × 2 × clock comes to here — measured, since a virtual machine's
/// clock and a core's FMA units are rarely what any file says.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FmaPeak {
    pub gflops: f64,
    pub threads: usize,
    /// f32 lanes per fused multiply-add (16 for AVX-512, 8 for AVX2, 4 for NEON).
    pub lanes: usize,
    /// The kernel set whose instructions it ran.
    pub kernels: &'static str,
}

/// Independent accumulators per thread: more than an FMA's latency (4 cycles) times the units
/// issuing them (2) on the CPUs measured, so the loop is bound by throughput, not latency.
const FMA_CHAINS: usize = 12;

/// FMA rounds per thread in one timing: about 20–50 ms of work on one core.
const FMA_ROUNDS: usize = 1 << 21;

/// [`FmaPeak`] on `threads` (0: one per core), the fastest of `runs` timings.
pub fn cpu_fma_peak(threads: usize, runs: usize) -> FmaPeak {
    let threads = crate::host::resolve_threads(threads);
    let kernels = CpuKernels::active();
    let lanes = kernels.f32_lanes();
    let flops_per_thread = (FMA_ROUNDS * FMA_CHAINS * lanes * 2) as f64;
    // Each thread times itself (this thread only waits, and would not get a core back before
    // a worker ends on a machine with as many cores as workers); the rate is the sum of
    // theirs, which run side by side from the barrier on.
    let barrier = std::sync::Barrier::new(threads);
    let rate_once = || -> f64 {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        std::hint::black_box(fma_rounds(kernels, FMA_ROUNDS));
                        start.elapsed().as_secs_f64()
                    })
                })
                .collect();
            (workers.into_iter())
                .map(|w| match w.join() {
                    Ok(secs) => flops_per_thread / secs,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .sum()
        })
    };
    rate_once();
    let fastest = (0..runs.max(1)).map(|_| rate_once()).fold(0.0, f64::max);
    FmaPeak {
        gflops: fastest / 1e9,
        threads,
        lanes,
        kernels: kernels.name(),
    }
}

/// `rounds` rounds of [`FMA_CHAINS`] fused multiply-adds of `kernels`' width; returns their
/// sum so none can be optimised away.
fn fma_rounds(kernels: CpuKernels, rounds: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the active kernel set is one this CPU runs, so it has their features.
        match kernels {
            CpuKernels::Avx512f => return unsafe { x86_fma::avx512(rounds) },
            CpuKernels::Avx2Fma => return unsafe { x86_fma::avx2(rounds) },
            _ => {}
        }
    }
    // Elsewhere, chains of `lanes` plain f32 lanes, which the compiler vectorises where it
    // can: fused where the target always has FMA (aarch64), else a multiply and an add (what
    // the `gemm` crate's scalar kernels do; `mul_add` would be a libm call there).
    let lanes = kernels.f32_lanes();
    let mut acc = [[1.0f32; 16]; FMA_CHAINS];
    for _ in 0..rounds {
        for chain in &mut acc {
            for x in &mut chain[..lanes] {
                *x = if cfg!(target_arch = "aarch64") {
                    x.mul_add(0.999_999, 1e-7)
                } else {
                    *x * 0.999_999 + 1e-7
                };
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86_fma {
    use std::arch::x86_64::*;

    use crate::bench::peak::FMA_CHAINS;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2(rounds: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); FMA_CHAINS];
        for _ in 0..rounds {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
        // SAFETY: __m256 is eight f32 lanes.
        let lanes: [f32; 8] = unsafe { std::mem::transmute(sum) };
        lanes.iter().sum()
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn avx512(rounds: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); FMA_CHAINS];
        for _ in 0..rounds {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
        _mm512_reduce_add_ps(sum)
    }
}
