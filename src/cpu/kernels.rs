//! Which vector kernels the CPU path's GEMM runs: by default the widest this CPU has, chosen
//! at run time; `WGTRAIN_CPU_KERNELS=avx2` keeps the AVX2+FMA ones on a CPU with AVX-512 (as
//! PyTorch's `ATEN_CPU_CAPABILITY` does), to time one set against the other.
//!
//! On x86-64 wgtrain calls the `gemm` crate's kernels itself, through `gemm-common`'s generic
//! driver, rather than through `gemm::gemm`, whose own choice cannot be overruled: what is named
//! here is what runs. Calling them itself also fixes the order of every sum ([`DriverPath`]):
//! the AVX2 and the AVX-512 sets give the same bits, whatever the machine's caches, so a table
//! made on one x86-64 CPU is reproduced to the last digit on any other with AVX2. Elsewhere
//! (aarch64, wasm32) `gemm::gemm` chooses.

use std::sync::OnceLock;

/// The environment variable that chooses the kernels: `avx2`, `avx512`, or `auto` (unset).
pub const ENV: &str = "WGTRAIN_CPU_KERNELS";

/// A kernel set of the CPU path's GEMM. The x86-64 sets sum in one order
/// ([`CpuKernels::sums_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKernels {
    /// x86-64 with AVX-512F: 16 f32 lanes.
    Avx512f,
    /// x86-64 with AVX2 and FMA: 8 f32 lanes.
    Avx2Fma,
    /// aarch64's NEON kernels.
    Neon,
    /// wasm32's SIMD128 kernels.
    Simd128,
    /// The `gemm` crate's scalar kernels (an x86-64 CPU without AVX2 and FMA, or a wasm32
    /// build without SIMD128).
    Scalar,
}

/// Why `WGTRAIN_CPU_KERNELS` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    #[error("{ENV}={given:?}: expected auto, avx2 or avx512")]
    Unknown { given: String },
    #[error(
        "{ENV}={given:?}: this CPU cannot run the {wanted} kernels (its widest are {best}); unset {ENV} to run those"
    )]
    Missing {
        given: String,
        wanted: &'static str,
        best: &'static str,
    },
}

impl CpuKernels {
    /// The name summaries, legs and `bench` print: `avx512f`, `avx2+fma`, `neon`, `simd128`,
    /// `scalar`.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Avx512f => "avx512f",
            CpuKernels::Avx2Fma => "avx2+fma",
            CpuKernels::Neon => "neon",
            CpuKernels::Simd128 => "simd128",
            CpuKernels::Scalar => "scalar",
        }
    }

    /// The family of sets that sum in one order, so give the same bits: the two x86-64 sets
    /// are one (`x86-64`), every other set its own.
    pub fn sums_as(self) -> &'static str {
        match self {
            CpuKernels::Avx512f | CpuKernels::Avx2Fma => "x86-64",
            other => other.name(),
        }
    }

    /// The set a name from [`CpuKernels::name`] stands for.
    pub fn named(name: &str) -> Option<CpuKernels> {
        [
            CpuKernels::Avx512f,
            CpuKernels::Avx2Fma,
            CpuKernels::Neon,
            CpuKernels::Simd128,
            CpuKernels::Scalar,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// f32 lanes per vector register of this set: what one fused multiply-add computes.
    pub fn f32_lanes(self) -> usize {
        match self {
            CpuKernels::Avx512f => 16,
            CpuKernels::Avx2Fma => 8,
            CpuKernels::Neon | CpuKernels::Simd128 => 4,
            CpuKernels::Scalar => 1,
        }
    }

    /// The widest set this CPU runs.
    pub fn widest() -> CpuKernels {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512f() {
                CpuKernels::Avx512f
            } else if has_avx2_fma() {
                CpuKernels::Avx2Fma
            } else {
                CpuKernels::Scalar
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            CpuKernels::Neon
        }
        #[cfg(target_arch = "wasm32")]
        {
            match gemm::get_wasm_simd128() {
                true => CpuKernels::Simd128,
                false => CpuKernels::Scalar,
            }
        }
        #[cfg(not(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "wasm32"
        )))]
        {
            CpuKernels::Scalar
        }
    }

    /// Every set this CPU runs, the widest first: the AVX2+FMA set beside the AVX-512 one.
    pub fn runnable() -> Vec<CpuKernels> {
        match CpuKernels::widest() {
            CpuKernels::Avx512f => vec![CpuKernels::Avx512f, CpuKernels::Avx2Fma],
            widest => vec![widest],
        }
    }

    /// Whether this CPU runs this set (a CPU with AVX-512F has AVX2 and FMA too).
    pub fn runs_here(self) -> bool {
        let widest = CpuKernels::widest();
        match self {
            CpuKernels::Avx2Fma => matches!(widest, CpuKernels::Avx512f | CpuKernels::Avx2Fma),
            _ => self == widest,
        }
    }

    /// The set `WGTRAIN_CPU_KERNELS` chooses (the widest where it is unset, empty or `auto`),
    /// or why this CPU cannot run it. The command line calls this before any work, so a bad
    /// value is an error there rather than a silent fallback.
    pub fn from_env() -> Result<CpuKernels, KernelsError> {
        match std::env::var_os(ENV) {
            Some(value) => match value.to_str() {
                Some(value) => CpuKernels::parse(value),
                None => Err(KernelsError::Unknown {
                    given: value.to_string_lossy().into_owned(),
                }),
            },
            None => Ok(CpuKernels::widest()),
        }
    }

    /// What `value`, as `WGTRAIN_CPU_KERNELS` holds it, chooses on this CPU.
    pub fn parse(value: &str) -> Result<CpuKernels, KernelsError> {
        let best = CpuKernels::widest();
        let wanted = match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => return Ok(best),
            "avx2" | "avx2+fma" => CpuKernels::Avx2Fma,
            "avx512" | "avx512f" => CpuKernels::Avx512f,
            _ => {
                return Err(KernelsError::Unknown {
                    given: value.to_string(),
                });
            }
        };
        match wanted.runs_here() {
            true => Ok(wanted),
            false => Err(KernelsError::Missing {
                given: value.to_string(),
                wanted: wanted.name(),
                best: best.name(),
            }),
        }
    }

    /// The set this process runs: chosen once, on first use, by [`CpuKernels::from_env`]
    /// (the widest set where its value cannot be honoured; the command line has refused such
    /// a value before it gets here).
    pub fn active() -> CpuKernels {
        static ACTIVE: OnceLock<CpuKernels> = OnceLock::new();
        *ACTIVE.get_or_init(|| CpuKernels::from_env().unwrap_or_else(|_| CpuKernels::widest()))
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    use gemm_common::simd::{MixedSimd, V4};
    <V4 as MixedSimd<f32, f32, f32, f32>>::try_new().is_some()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use gemm_common::simd::{MixedSimd, V3};
    <V3 as MixedSimd<f32, f32, f32, f32>>::try_new().is_some()
}

/// One GEMM entry: dst (m × n) = dst + lhs (m × k) · rhs (k × n) where `read_dst`, else the
/// product alone, with element strides as `gemm::gemm` takes them (column stride first).
pub type GemmEntry<T> = unsafe fn(
    usize,
    usize,
    usize,
    *mut T,
    isize,
    isize,
    bool,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    gemm_common::Parallelism,
);

/// Defines `fn $name<T: Scalar>(kernels: CpuKernels, args…)` (`Scalar` as the caller names
/// it), which runs `$body(args…)` compiled for `kernels`' vector width: AVX-512 or AVX2 on
/// x86-64, the target's own elsewhere; a set this CPU cannot run is refused with a panic,
/// never run. For the CPU path's own loops (the GEMM has its kernels): they do the same
/// operations in the same order whatever the width, since Rust never fuses a multiply and an
/// add, so every set gives the same bits.
macro_rules! vector_width_clones {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$meta])*
        $vis fn $name<T: Scalar>(
            kernels: $crate::cpu::kernels::CpuKernels,
            $($arg: $ty),*
        ) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512f<T: Scalar>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2<T: Scalar>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                use $crate::cpu::kernels::CpuKernels;
                assert!(kernels.runs_here(), "the {} kernels on a CPU without them", kernels.name());
                match kernels {
                    // SAFETY: the CPU has the set's features (asserted above).
                    CpuKernels::Avx512f => return unsafe { avx512f($($arg),*) },
                    CpuKernels::Avx2Fma => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = kernels;
            $body($($arg),*)
        }
    };
}
pub(crate) use vector_width_clones;

/// The entries of one float type's kernels on x86-64: `gemm-common`'s driver instantiated with
/// the `gemm-f32`/`gemm-f64` microkernels of one set, exactly as the `gemm` crate instantiates
/// them for its own dispatch (lanes `N` per register; MR = MR_DIV_N · N rows per microkernel),
/// handed the depth in blocks that fix the order of the sums ([`DriverPath::depth_block`]).
/// An entry given a `$narrower` one (the entry of the narrower set) hands it the shapes whose
/// sums the driver splits across a register's lanes ([`DriverPath::sums_across_lanes`]).
#[cfg(target_arch = "x86_64")]
macro_rules! gemm_entry {
    ($name:ident, $t:ty, $simd:ty, $lanes:expr, $ukr:path $(, $narrower:ident)?) => {
        /// # Safety
        /// The CPU has the kernel set's features, and the strides keep every access inside
        /// the operands and dst (`cpu::gemm` checks both).
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut $t,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const $t,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const $t,
            rhs_cs: isize,
            rhs_rs: isize,
            parallelism: gemm_common::Parallelism,
        ) {
            use gemm_common::simd::MixedSimd;
            use $ukr as ukr;
            const N: usize = $lanes;
            let path = crate::cpu::kernels::DriverPath::of(
                (m, n, k),
                (dst_cs, dst_rs),
                (lhs_cs, lhs_rs),
                (rhs_cs, rhs_rs),
            );
            $(
                if path.sums_across_lanes() {
                    // SAFETY: forwarded; a CPU with this set has the narrower one's features.
                    return unsafe {
                        $narrower(
                            m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs,
                            rhs_cs, rhs_rs, parallelism,
                        )
                    };
                }
            )?
            let simd = <$simd as MixedSimd<$t, $t, $t, $t>>::try_new()
                .expect("the kernel set was chosen because the CPU has it");
            let block = path.depth_block(k);
            let mut depth = 0;
            loop {
                let kb = block.min(k - depth);
                // SAFETY: forwarded from this function's contract; a block of the depth reads
                // columns depth..depth + kb of lhs and the same rows of rhs.
                unsafe {
                    gemm_common::gemm::gemm_basic_generic::<
                        _,
                        $t,
                        N,
                        { ukr::MR_DIV_N * N },
                        { ukr::NR },
                        { ukr::MR_DIV_N },
                        { ukr::H_M },
                        { ukr::H_N },
                    >(
                        simd,
                        m,
                        n,
                        kb,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst || depth > 0,
                        lhs.wrapping_offset(depth as isize * lhs_cs),
                        lhs_cs,
                        lhs_rs,
                        rhs.wrapping_offset(depth as isize * rhs_rs),
                        rhs_cs,
                        rhs_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        |a, b, c| a * b + c,
                        &ukr::UKR,
                        &ukr::H_UKR,
                        false,
                        parallelism,
                    )
                }
                depth += kb;
                if depth >= k {
                    break;
                }
            }
        }
    };
}

/// Which of its paths gemm-common 0.19's driver (`gemm_basic_generic`) takes for a product,
/// on its own conditions and in its order (the strides are those after `gemm::gemm`'s
/// transposition: the driver prefers a column-major dst).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverPath {
    /// At most 16 × 16 outputs, each a dot product of contiguous rows: summed in a register's
    /// lanes, then across them, in 1024-deep blocks.
    Dot,
    /// k ≤ 2: sums of at most two products.
    OuterProducts,
    /// One row or one column of outputs: for a row-major lhs, each sum split across lanes and
    /// then added across them; for a column-major one, each output in one lane.
    MatrixVector,
    /// At most 64 × 64 outputs: each output in one lane, in 512-deep blocks from the start.
    Small,
    /// Each output in one lane, in depth blocks sized from the L1 cache.
    General,
}

#[cfg(target_arch = "x86_64")]
impl DriverPath {
    fn of(
        (m, n, k): (usize, usize, usize),
        (dst_cs, dst_rs): (isize, isize),
        (lhs_cs, lhs_rs): (isize, isize),
        (rhs_cs, rhs_rs): (isize, isize),
    ) -> DriverPath {
        let dot = lhs_cs == 1 && rhs_rs == 1;
        if dot && m * n <= 16 * 16 {
            DriverPath::Dot
        } else if k <= 2 {
            DriverPath::OuterProducts
        } else if (n <= 1 && ((lhs_rs == 1 && dst_rs == 1) || dot))
            || (m <= 1 && ((rhs_cs == 1 && dst_cs == 1) || dot))
        {
            DriverPath::MatrixVector
        } else if m <= 64 && n <= 64 {
            DriverPath::Small
        } else {
            DriverPath::General
        }
    }

    /// Whether the driver splits each sum across a register's lanes on this path, so that a
    /// kernel set of other width sums in another order. On the others each output is one lane
    /// summed in depth order, which is why the AVX-512 entries hand these shapes (a sliver of
    /// any epoch's arithmetic) to the AVX2 ones: both sets then give the same bits everywhere.
    fn sums_across_lanes(self) -> bool {
        matches!(self, DriverPath::Dot | DriverPath::MatrixVector)
    }

    /// How deep a slice of the depth one call of the driver gets, so that the order of the
    /// sums does not depend on the machine's caches. On the general path the driver splits k
    /// evenly into blocks of at most `max(512, what L1 holds)`: 512 on a 32 KiB 8-way L1 (the
    /// AMD Zen 3 and Zen 4 that made RESULTS.md), but 1024 for the AVX2 kernels on a 48 KiB
    /// 12-way one (recent Intel Xeons), where a 784-deep product was summed in one piece
    /// instead of two halves. Handed the even split into blocks of at most 512 (each then one
    /// block on any machine), it sums as a 512 machine does. Its other paths size their
    /// blocks without the caches, and get the depth whole.
    fn depth_block(self, k: usize) -> usize {
        const MOST: usize = 512;
        match self {
            DriverPath::General if k > MOST => k.div_ceil(k.div_ceil(MOST)),
            _ => k.max(1),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use gemm_common::simd::{V3, V4};

    gemm_entry!(f32_avx2, f32, V3, 8, gemm_f32::microkernel::fma::f32);
    gemm_entry!(
        f32_avx512,
        f32,
        V4,
        16,
        gemm_f32::microkernel::avx512f::f32,
        f32_avx2
    );
    gemm_entry!(f64_avx2, f64, V3, 4, gemm_f64::microkernel::fma::f64);
    gemm_entry!(
        f64_avx512,
        f64,
        V4,
        8,
        gemm_f64::microkernel::avx512f::f64,
        f64_avx2
    );
}

/// The f32 entry of `kernels` where wgtrain calls them itself (x86-64); `None` where
/// `gemm::gemm` chooses.
pub fn f32_entry(kernels: CpuKernels) -> Option<GemmEntry<f32>> {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        CpuKernels::Avx512f => Some(x86::f32_avx512),
        #[cfg(target_arch = "x86_64")]
        CpuKernels::Avx2Fma => Some(x86::f32_avx2),
        _ => None,
    }
}

/// The f64 twin of [`f32_entry`].
pub fn f64_entry(kernels: CpuKernels) -> Option<GemmEntry<f64>> {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        CpuKernels::Avx512f => Some(x86::f64_avx512),
        #[cfg(target_arch = "x86_64")]
        CpuKernels::Avx2Fma => Some(x86::f64_avx2),
        _ => None,
    }
}
