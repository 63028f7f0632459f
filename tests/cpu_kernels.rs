//! The CPU path's kernel sets (`cpu::kernels`): every set this CPU runs held to the reference
//! product and the x86-64 sets to each other's bits, `WGTRAIN_CPU_KERNELS` choosing among
//! them, and a run saying which one it ran.

use std::path::Path;
use std::process::{Command, Output};

use wgtrain::cpu::gemm::{Operand, product_on};
use wgtrain::cpu::kernels::{CpuKernels, ENV, KernelsError};
use wgtrain::rundir::RunDir;

use crate::common::{rng, stderr, uniform, write_dataset};

/// (m, k, n), so that every path of the gemm driver is taken in some layout: single elements
/// and k ≤ 2, odd edges, small products, dot products longer than a 16-lane register and past
/// the 512- and 1024-deep blocks, the paper's layer shapes (784 deep: two blocks), a row and a
/// column of outputs (n = 1 is the one case computed without transposing dst), and products
/// large enough for the cache-sized blocks.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (5, 2, 9),
    (7, 33, 5),
    (33, 129, 7),
    (16, 1100, 10),
    (128, 784, 128),
    (129, 128, 10),
    (3, 784, 1),
    (1, 300, 40),
    (40, 300, 1),
    (64, 63, 65),
    (100, 1500, 90),
];

/// An (rows × cols) operand of `values` (row-major), stored as given or as its transpose.
fn operand<T>(values: &[T], (rows, cols): (usize, usize), transposed: bool) -> Operand<'_, T> {
    match transposed {
        false => Operand {
            data: values,
            row_stride: cols,
            col_stride: 1,
        },
        true => Operand {
            data: values,
            row_stride: 1,
            col_stride: rows,
        },
    }
}

/// c (m × n) = [c] + a · b on `kernels`, in f32 and f64, each layout of a and b, against
/// the f64 sum of the same numbers; returns the f32 results of every case, in order.
fn check_products(kernels: CpuKernels) -> Vec<Vec<f32>> {
    let mut all = Vec::new();
    for (case, &(m, k, n)) in SHAPES.iter().enumerate() {
        let mut r = rng(500 + case as u64);
        for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
            for accumulate in [false, true] {
                // Stored as given: a[i·k + p], or transposed: a[p·m + i] (likewise b).
                let a = uniform(&mut r, m * k);
                let b = uniform(&mut r, k * n);
                let c = uniform(&mut r, m * n);
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                let want: Vec<f64> = (0..m * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        let start = if accumulate { c[e] } else { 0.0 };
                        start + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>()
                    })
                    .collect();
                let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                let (a32, b32) = (to32(&a), to32(&b));
                let mut c32 = to32(&c);
                let mut c64 = c.clone();
                product_on(
                    kernels,
                    &mut c32,
                    (m, n, k),
                    operand(&a32, (m, k), a_t),
                    operand(&b32, (k, n), b_t),
                    accumulate,
                    2,
                );
                product_on(
                    kernels,
                    &mut c64,
                    (m, n, k),
                    operand(&a, (m, k), a_t),
                    operand(&b, (k, n), b_t),
                    accumulate,
                    2,
                );
                // f32: a loose 2·(k + 1)²·ε, as the values are at most 1; the f64 bound, far
                // tighter, is the one that catches an index slip.
                let f32_bound = 2.0 * (k + 1) as f64 * f32::EPSILON as f64 * (k + 1) as f64;
                let what = format!(
                    "{} kernels, {m}×{k}·{k}×{n}, a{} b{}, accumulate {accumulate}",
                    kernels.name(),
                    if a_t { "ᵀ" } else { "" },
                    if b_t { "ᵀ" } else { "" },
                );
                for (e, w) in want.iter().enumerate() {
                    assert!(
                        (c32[e] as f64 - w).abs() <= f32_bound,
                        "{what}: f32 [{e}] {} vs {w}",
                        c32[e]
                    );
                    assert!(
                        (c64[e] - w).abs() <= 1e-9,
                        "{what}: f64 [{e}] {} vs {w}",
                        c64[e]
                    );
                }
                all.push(c32);
            }
        }
    }
    all
}

#[test]
fn product_on_every_kernel_set_this_cpu_runs_matches_the_reference_and_the_x86_sets_agree() {
    let sets = CpuKernels::runnable();
    assert_eq!(sets[0], CpuKernels::widest());
    let results: Vec<Vec<Vec<f32>>> = sets.iter().map(|&k| check_products(k)).collect();
    // Where there are two sets (AVX-512 and AVX2), they sum in one order, so every product
    // has the same bits on both: a table made on one is the table of the other.
    if let [avx512, avx2] = &results[..] {
        for (case, (x, y)) in avx512.iter().zip(avx2).enumerate() {
            assert!(
                x.iter()
                    .map(|v| v.to_bits())
                    .eq(y.iter().map(|v| v.to_bits())),
                "case {case}: the AVX-512 and AVX2 kernels gave other bits"
            );
        }
    }
}

/// The order the x86-64 kernel sets sum a product's depth in, written out: each output's
/// depth cut into `blocks`, each block summed from zero with fused multiply-adds in depth
/// order, and the blocks' sums added to dst (or to `start`) in turn.
#[cfg(target_arch = "x86_64")]
fn in_fixed_blocks(
    (m, n): (usize, usize),
    at: impl Fn(usize, usize) -> f32,
    bt: impl Fn(usize, usize) -> f32,
    start: Option<&[f32]>,
    blocks: &[std::ops::Range<usize>],
) -> Vec<f32> {
    (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            let sums = blocks.iter().map(|block| {
                (block.clone()).fold(0.0f32, |acc, p| at(i, p).mul_add(bt(p, j), acc))
            });
            let mut sums = sums.peekable();
            let first = match start {
                Some(c) => c[e],
                None => sums.next().unwrap_or(0.0),
            };
            sums.fold(first, |dst, sum| dst + sum)
        })
        .collect()
}

#[test]
#[cfg(target_arch = "x86_64")]
fn products_sum_their_depth_in_blocks_no_machine_changes_on_every_x86_kernel_set() {
    // The gemm driver sized its depth blocks from the L1 cache: 512 deep on a 32 KiB 8-way L1,
    // 1024 on a 48 KiB 12-way one for the AVX2 set, so the same kernels gave other bits on
    // another machine. Products now sum in even blocks of at most 512 where the driver sized
    // them from the caches (more than 64 × 64 outputs), and in 512-deep blocks from the start
    // where it did not (at most 64 × 64), on any machine.
    let cases = [
        ((128, 784, 128), vec![0..392, 392..784]),
        ((100, 1500, 90), vec![0..500, 500..1000, 1000..1500]),
        ((70, 513, 66), vec![0..257, 257..513]),
        ((40, 784, 30), vec![0..512, 512..784]),
    ];
    for kernels in CpuKernels::runnable() {
        for (case, ((m, k, n), blocks)) in cases.iter().enumerate() {
            let mut r = rng(900 + case as u64);
            for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
                for accumulate in [false, true] {
                    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
                    let (a, b) = (to32(uniform(&mut r, m * k)), to32(uniform(&mut r, k * n)));
                    let start = to32(uniform(&mut r, m * n));
                    let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                    let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                    let want =
                        in_fixed_blocks((*m, *n), at, bt, accumulate.then_some(&start[..]), blocks);
                    let mut got = start.clone();
                    product_on(
                        kernels,
                        &mut got,
                        (*m, *n, *k),
                        operand(&a, (*m, *k), a_t),
                        operand(&b, (*k, *n), b_t),
                        accumulate,
                        2,
                    );
                    let differ = got
                        .iter()
                        .zip(&want)
                        .filter(|(g, w)| g.to_bits() != w.to_bits());
                    assert_eq!(
                        differ.count(),
                        0,
                        "{} kernels, {m}×{k}·{k}×{n}, a{} b{}, accumulate {accumulate}: not the fixed order",
                        kernels.name(),
                        if a_t { "ᵀ" } else { "" },
                        if b_t { "ᵀ" } else { "" },
                    );
                }
            }
        }
    }
}

#[test]
fn wgtrain_cpu_kernels_chooses_a_set_this_cpu_runs_and_refuses_the_rest() {
    let widest = CpuKernels::widest();
    for value in ["", "auto", " Auto "] {
        assert_eq!(CpuKernels::parse(value), Ok(widest), "{value:?}");
    }
    let unknown = CpuKernels::parse("avx3").unwrap_err();
    assert!(matches!(unknown, KernelsError::Unknown { .. }));
    assert!(
        unknown
            .to_string()
            .contains("expected auto, avx2 or avx512"),
        "{unknown}"
    );
    // What the CPU has, asked of std rather than of the code under test.
    #[cfg(target_arch = "x86_64")]
    let (avx512, avx2) = (
        std::arch::is_x86_feature_detected!("avx512f"),
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (avx512, avx2) = (false, false);
    for (value, set, has) in [
        ("avx512", CpuKernels::Avx512f, avx512),
        ("AVX512F", CpuKernels::Avx512f, avx512),
        ("avx2", CpuKernels::Avx2Fma, avx2),
        ("avx2+fma", CpuKernels::Avx2Fma, avx2),
    ] {
        match CpuKernels::parse(value) {
            Ok(chosen) => assert!(has && chosen == set, "{value} chose {chosen:?}"),
            Err(e) => {
                assert!(!has, "{value} refused on a CPU that has it: {e}");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("cannot run the {} kernels", set.name()))
                        && text.contains(&format!("its widest are {}", widest.name())),
                    "{text}"
                );
            }
        }
    }
    assert_eq!(widest == CpuKernels::Avx512f, avx512);
    assert_eq!(CpuKernels::runnable().contains(&CpuKernels::Avx2Fma), avx2);
}

/// `wgtrain train` of a small MLP on `data` with `WGTRAIN_CPU_KERNELS` set to `kernels`
/// (removed where `None`, whatever the tests themselves run under).
fn train_on(kernels: Option<&str>, data: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wgtrain"));
    match kernels {
        Some(value) => command.env(ENV, value),
        None => command.env_remove(ENV),
    };
    command
        .args(["train", "--device", "cpu", "--quiet", "--data"])
        .arg(data)
        .args(["--set", "layers=[36, 10, 3]", "--set", "batch_size=16"])
        .args(extra)
        .output()
        .expect("run wgtrain")
}

#[test]
fn a_run_names_its_kernels_and_the_other_x86_set_trains_the_same_bits_or_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let dir = |name: &str| tmp.path().join(name);
    let detail = |run: &Path| RunDir::new(run).read_summary().unwrap().device_detail;
    let model = |run: &Path| std::fs::read(run.join("model.safetensors")).unwrap();
    let widest = CpuKernels::widest().name();

    let o = train_on(
        None,
        &data,
        &["--out", dir("a").to_str().unwrap(), "--set", "epochs=2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        detail(&dir("a")).ends_with(&format!(", {widest} kernels)")),
        "{}",
        detail(&dir("a"))
    );

    // A value no CPU has is refused before anything is written.
    let o = train_on(Some("avx3"), &data, &["--out", dir("b").to_str().unwrap()]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: WGTRAIN_CPU_KERNELS=\"avx3\""),
        "{}",
        stderr(&o)
    );
    assert!(!dir("b").exists());

    let a = dir("a");
    let a = a.to_str().unwrap();
    if CpuKernels::widest() == CpuKernels::Avx512f {
        // The AVX2 set on a CPU with AVX-512: named as such, and the same bits.
        let c = dir("c");
        let o = train_on(
            Some("avx2"),
            &data,
            &["--out", c.to_str().unwrap(), "--set", "epochs=2"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            detail(&c).ends_with(", avx2+fma kernels)"),
            "{}",
            detail(&c)
        );
        assert!(
            model(&dir("a")) == model(&c),
            "the two kernel sets trained other bits"
        );
        // Resumed on it, the run records both legs, and has nothing to say of them.
        let o = train_on(Some("avx2"), &data, &["--resume", a, "--set", "epochs=3"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
        let legs = RunDir::new(dir("a")).read_summary().unwrap().legs;
        assert_eq!(legs.len(), 2, "{legs:?}");
        assert!(legs[0].device.contains("avx512f") && legs[1].device.contains("avx2+fma"));
        let o = train_on(
            None,
            &data,
            &["--resume", c.to_str().unwrap(), "--set", "epochs=3"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            model(&dir("a")) == model(&c),
            "resumed on the other set, the runs parted"
        );
    } else {
        let o = train_on(
            Some("avx512"),
            &data,
            &["--out", dir("c").to_str().unwrap()],
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("cannot run the avx512f kernels"),
            "{}",
            stderr(&o)
        );
        assert!(!dir("c").exists());
        // Resumed on the same set, nothing is noted.
        let o = train_on(None, &data, &["--resume", a, "--set", "epochs=3"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    }
}

#[test]
fn legs_round_alike_on_any_thread_count_and_x86_kernel_set_but_not_on_another_device() {
    let leg = |device: &str| wgtrain::checkpoint::Leg {
        first_epoch: 1,
        last_epoch: 1,
        device: device.to_string(),
        changed: Vec::new(),
    };
    let one = leg("cpu (1 thread, avx2+fma kernels)");
    assert!(one.rounds_as(&leg("cpu (16 threads, avx2+fma kernels)")));
    assert!(one.rounds_as(&leg("cpu (2 threads, avx512f kernels)")));
    assert!(!one.rounds_as(&leg("cpu (1 thread, neon kernels)")));
    assert!(!one.rounds_as(&leg("NVIDIA H100 (vulkan)")));
    // A leg written before runs named their kernels rounds as any CPU leg, as it did then.
    assert!(one.rounds_as(&leg("cpu (1 thread)")));
    assert!(leg("cpu (2 threads)").rounds_as(&leg("cpu (1 thread)")));
    assert!(!leg("cpu (1 thread)").rounds_as(&leg("NVIDIA H100 (vulkan)")));
}
