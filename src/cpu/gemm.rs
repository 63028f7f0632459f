//! Row-major matrix products on the `gemm` crate's kernels (the set [`CpuKernels::active`]
//! names: AVX-512, AVX2+FMA, NEON; rayon threads), named after what the network computes with
//! them. Each checks its slice lengths so the unsafe call below can never read or write out of
//! bounds.

use super::kernels::CpuKernels;
use super::scalar::Scalar;

/// Below this many multiply-adds a product runs on one thread: splitting it costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A strided read-only matrix operand: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct Operand<'a, T> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub col_stride: usize,
}

fn last_index(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride
    }
}

/// dst (m × n, row stride n) = lhs (m × k) · rhs (k × n), plus dst when `accumulate`, on the
/// kernels this process runs.
#[allow(clippy::too_many_arguments)]
fn product<T: Scalar>(
    dst: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand<'_, T>,
    rhs: Operand<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    product_on(
        CpuKernels::active(),
        dst,
        (m, n, k),
        lhs,
        rhs,
        accumulate,
        threads,
    );
}

/// [`product`] on the kernel set `kernels`, one of [`CpuKernels::runnable`], rather than on
/// the set this process runs: how the tests hold every set this CPU has to the reference.
pub fn product_on<T: Scalar>(
    kernels: CpuKernels,
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: Operand<'_, T>,
    rhs: Operand<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= m * n,
        "gemm: dst holds {} < {m}×{n}",
        dst.len()
    );
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    assert!(
        lhs.data.len() > last_index(m, k, lhs.row_stride, lhs.col_stride),
        "gemm: lhs too short"
    );
    assert!(
        rhs.data.len() > last_index(k, n, rhs.row_stride, rhs.col_stride),
        "gemm: rhs too short"
    );
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // The active set was chosen among those this CPU runs; any other is looked at again.
    assert!(
        kernels == CpuKernels::active() || kernels.runs_here(),
        "gemm: this CPU cannot run the {} kernels",
        kernels.name()
    );
    // The microkernels prefer a column-major dst: a row-major one (n > 1) is computed as its
    // transpose, dstᵀ = rhsᵀ · lhsᵀ, as `gemm::gemm` does before its own dispatch (handed this
    // already, it computes it as given). Each operand as (data, column stride, row stride).
    let strided = |o: Operand<'_, T>| {
        (
            o.data.as_ptr(),
            o.col_stride as isize,
            o.row_stride as isize,
        )
    };
    let transposed = |o: Operand<'_, T>| {
        (
            o.data.as_ptr(),
            o.row_stride as isize,
            o.col_stride as isize,
        )
    };
    let ((rows, cols), (dst_cs, dst_rs), (a, a_cs, a_rs), (b, b_cs, b_rs)) = match n > 1 {
        true => ((n, m), (n as isize, 1), transposed(rhs), transposed(lhs)),
        false => ((m, n), (1, n as isize), strided(lhs), strided(rhs)),
    };
    let dst = dst.as_mut_ptr();
    // SAFETY: the asserts above bound every index the kernel touches and say this CPU runs
    // `kernels`; dst does not alias the operands (it is a distinct &mut borrow). Both calls
    // compute dst = dst·[accumulate] + lhs·rhs.
    unsafe {
        match T::gemm_entry(kernels) {
            Some(entry) => entry(
                rows,
                cols,
                k,
                dst,
                dst_cs,
                dst_rs,
                accumulate,
                a,
                a_cs,
                a_rs,
                b,
                b_cs,
                b_rs,
                parallelism,
            ),
            None => gemm::gemm::<T>(
                rows,
                cols,
                k,
                dst,
                dst_cs,
                dst_rs,
                accumulate,
                a,
                a_cs,
                a_rs,
                b,
                b_cs,
                b_rs,
                T::one(),
                T::one(),
                false,
                false,
                false,
                parallelism,
            ),
        }
    }
}

/// Forward of a linear layer: out (B, O) += x (B, I) · wᵀ, where w is (O, I).
/// `out` must already hold the bias in every row (the product accumulates onto it).
pub fn linear_forward<T: Scalar>(
    out: &mut [T],
    x: &[T],
    w: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    let lhs = Operand {
        data: x,
        row_stride: fan_in,
        col_stride: 1,
    };
    let rhs = Operand {
        data: w,
        row_stride: 1,
        col_stride: fan_in,
    };
    product(out, rows, fan_out, fan_in, lhs, rhs, true, threads);
}

/// A dense layer's forward with its bias: out (B, O) = x (B, I) · wᵀ + b, the bias written
/// into every row first and the product accumulated onto it (as [`linear_forward`] expects).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_biased<T: Scalar>(
    out: &mut [T],
    x: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    fill_rows(&mut out[..rows * fan_out], b);
    linear_forward(out, x, w, rows, fan_in, fan_out, threads);
}

/// Every row of `out` (whole rows of `row.len()`) set to `row`: the first copied in, then the
/// rows written so far copied after themselves, doubling, so a convolution's hundred thousand
/// short rows take a score of large copies rather than a call each.
fn fill_rows<T: Scalar>(out: &mut [T], row: &[T]) {
    if out.is_empty() {
        return;
    }
    out[..row.len()].copy_from_slice(row);
    let mut done = row.len();
    while done < out.len() {
        let more = done.min(out.len() - done);
        out.copy_within(..more, done);
        done += more;
    }
}

/// A dense layer's parameter gradients: dw (O, I) = dzᵀ · a ([`linear_backward_weight`]) and
/// db (O) = the column sums of dz (B, O), in row order.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_params<T: Scalar>(
    dw: &mut [T],
    db: &mut [T],
    dz: &[T],
    a: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    linear_backward_weight(dw, dz, a, rows, fan_in, fan_out, threads);
    db.fill(T::zero());
    for row in dz[..rows * fan_out].chunks_exact(fan_out) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d = *d + g;
        }
    }
}

/// Weight gradient: dw (O, I) = dzᵀ · a, with dz (B, O) and a (B, I).
pub fn linear_backward_weight<T: Scalar>(
    dw: &mut [T],
    dz: &[T],
    a: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    weight_product(dw, dz, a, (rows, fan_in, fan_out), false, threads);
}

/// [`linear_backward_weight`] added onto `dw`: dw += dzᵀ · a, for a gradient summed over
/// several products.
pub fn linear_backward_weight_onto<T: Scalar>(
    dw: &mut [T],
    dz: &[T],
    a: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    weight_product(dw, dz, a, (rows, fan_in, fan_out), true, threads);
}

fn weight_product<T: Scalar>(
    dw: &mut [T],
    dz: &[T],
    a: &[T],
    (rows, fan_in, fan_out): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    let lhs = Operand {
        data: dz,
        row_stride: 1,
        col_stride: fan_out,
    };
    let rhs = Operand {
        data: a,
        row_stride: fan_in,
        col_stride: 1,
    };
    product(dw, fan_out, fan_in, rows, lhs, rhs, accumulate, threads);
}

/// Input gradient: da (B, I) = dz (B, O) · w (O, I).
pub fn linear_backward_input<T: Scalar>(
    da: &mut [T],
    dz: &[T],
    w: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
    threads: usize,
) {
    row_major_product(da, dz, w, (rows, fan_in, fan_out), threads);
}

/// Plain row-major c (m, n) = a (m, k) · b (k, n): the input gradient's shape, and what
/// `bench::cpu_gemm_peak` times.
pub fn row_major_product<T: Scalar>(
    c: &mut [T],
    a: &[T],
    b: &[T],
    (m, n, k): (usize, usize, usize),
    threads: usize,
) {
    let lhs = Operand {
        data: a,
        row_stride: k,
        col_stride: 1,
    };
    let rhs = Operand {
        data: b,
        row_stride: n,
        col_stride: 1,
    };
    product(c, m, n, k, lhs, rhs, false, threads);
}
