//! The fast CPU path (gemm) against the reference loops, and single optimiser steps against
//! values computed by hand.

use std::sync::Arc;

use wgtrain::config::{GradientReduction, Hyper, Optimizer, TrainConfig};
use wgtrain::cpu::dense::{Shape, Workspace, loss_and_gradient};
use wgtrain::cpu::gemm::{linear_backward_input, linear_backward_weight, linear_forward};
use wgtrain::cpu::ops::{self, OptimizerState};
use wgtrain::model::{Activation, Init, Network, Params, layer_views};

use crate::common::{rng, uniform};

/// Dot-product error bound for length-k sums in f32: 2·k·ε·Σ|aᵢbᵢ| (the index bugs this catches
/// are O(1)). Σ|aᵢbᵢ| ≤ k for inputs in [-1, 1].
fn f32_tolerance(k: usize) -> f64 {
    2.0 * k as f64 * f32::EPSILON as f64 * k as f64 + 1e-6
}

const SIZES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (7, 33, 5),
    (33, 7, 129),
    (128, 784, 128),
    (129, 128, 10),
    (3, 784, 1),
    (64, 65, 63),
];

#[test]
fn linear_forward_matches_reference() {
    for (case, &(rows, fan_in, fan_out)) in SIZES.iter().enumerate() {
        let mut r = rng(case as u64);
        let x = uniform(&mut r, rows * fan_in);
        let w = uniform(&mut r, fan_out * fan_in);
        let b = uniform(&mut r, fan_out);
        let reference = ops::linear_forward_reference(&x, &w, &b, rows, fan_in, fan_out);
        let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let mut out: Vec<f32> = (0..rows).flat_map(|_| to32(&b)).collect();
        linear_forward(&mut out, &to32(&x), &to32(&w), rows, fan_in, fan_out, 2);
        for (i, (&got, &want)) in out.iter().zip(&reference).enumerate() {
            assert!(
                (got as f64 - want).abs() <= f32_tolerance(fan_in),
                "shape {rows}x{fan_in}->{fan_out} element {i}: got {got} want {want}"
            );
        }
    }
}

#[test]
fn linear_backward_matches_reference() {
    for (case, &(rows, fan_in, fan_out)) in SIZES.iter().enumerate() {
        let mut r = rng(100 + case as u64);
        let dz = uniform(&mut r, rows * fan_out);
        let a = uniform(&mut r, rows * fan_in);
        let w = uniform(&mut r, fan_out * fan_in);
        let (dw_ref, _) = ops::linear_backward_params_reference(&dz, &a, rows, fan_in, fan_out);
        let da_ref = ops::linear_backward_input_reference(&dz, &w, rows, fan_in, fan_out);
        // f64 through the same gemm path: any index error shows far above rounding.
        let mut dw = vec![f64::NAN; fan_out * fan_in];
        let mut da = vec![f64::NAN; rows * fan_in];
        linear_backward_weight(&mut dw, &dz, &a, rows, fan_in, fan_out, 2);
        linear_backward_input(&mut da, &dz, &w, rows, fan_in, fan_out, 2);
        for (got, want) in dw.iter().zip(&dw_ref).chain(da.iter().zip(&da_ref)) {
            assert!(
                (got - want).abs() < 1e-9,
                "shape {rows}x{fan_in}->{fan_out}: got {got} want {want}"
            );
        }
    }
}

#[test]
fn softmax_xent_matches_f64_definition_and_its_gradient_rows_sum_to_zero() {
    let mut r = rng(7);
    let (rows, classes) = (9, 10);
    let mut logits = uniform(&mut r, rows * classes);
    logits[3] = 60.0; // large logits must not overflow
    logits[15] = -80.0;
    let labels: Vec<u8> = (0..rows).map(|i| (i * 3 % classes) as u8).collect();
    let mut grad = vec![f64::NAN; rows * classes];
    let (loss, correct) = ops::softmax_xent(&logits, &labels, classes, 0.5, Some(&mut grad));
    let mut want_loss = 0.0;
    let mut want_correct = 0;
    for (row, z) in logits.chunks(classes).enumerate() {
        let max = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        want_loss += lse - z[labels[row] as usize];
        let argmax = z
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > z[best] { i } else { best });
        want_correct += usize::from(argmax == labels[row] as usize);
        let g = &grad[row * classes..(row + 1) * classes];
        assert!(
            g.iter().sum::<f64>().abs() < 1e-12,
            "row {row} gradient does not sum to 0"
        );
        for (c, &gv) in g.iter().enumerate() {
            let p = (z[c] - lse).exp();
            let t = if c == labels[row] as usize { 1.0 } else { 0.0 };
            assert!((gv - 0.5 * (p - t)).abs() < 1e-12);
        }
    }
    assert!((loss - want_loss).abs() < 1e-9 * want_loss.abs().max(1.0));
    assert_eq!(correct, want_correct);
}

#[test]
fn activations_match_their_definitions_and_stay_finite_at_extremes() {
    let inputs = [-1e4, -100.0, -20.0, -1.0, 0.0, 0.5, 20.0, 100.0, 1e4];
    for (act, f) in [
        (Activation::Tanh, f64::tanh as fn(f64) -> f64),
        (Activation::Sigmoid, |x: f64| 1.0 / (1.0 + (-x).exp())),
        (Activation::Relu, |x: f64| x.max(0.0)),
    ] {
        let mut z: Vec<f32> = inputs.iter().map(|&v| v as f32).collect();
        ops::activation_forward(act, &mut z);
        for (&x, &got) in inputs.iter().zip(&z) {
            assert!(got.is_finite(), "{act:?}({x}) = {got}");
            assert!(
                (got as f64 - f(x)).abs() <= 1e-6 + 1e-5 * f(x).abs(),
                "{act:?}({x}) = {got}, want {}",
                f(x)
            );
        }
    }
}

fn hyper(optimizer: Optimizer, lr: f64, gamma: f64, l1: f64, l2: f64) -> Hyper {
    let mut h = TrainConfig::default().hyper();
    (h.optimizer, h.learning_rate, h.momentum_gamma, h.l1, h.l2) = (optimizer, lr, gamma, l1, l2);
    h
}

/// A [2, 2] softmax-regression network with hand-picked weights, one sample of class 0.
/// z = W·x + b = [0.5·1 + (−1)·2 + 0.1, 0.25·1 + 0.5·2 − 0.2] = [−1.4, 1.05];
/// p = softmax(z); dL/dz = p − [1, 0]; dW = dz·xᵀ, db = dz.
fn tiny_case() -> (Params, Vec<f32>, Vec<u8>, Vec<f64>) {
    let params = Params {
        values: vec![0.5, -1.0, 0.25, 0.5, 0.1, -0.2],
        ..Params::zeros(Arc::new(Network::dense(&[2, 2], Activation::None).unwrap()))
    };
    let x = vec![1.0f32, 2.0];
    let p0 = 1.0 / (1.0 + (1.05f64 + 1.4).exp());
    let dz = [p0 - 1.0, 1.0 - p0];
    let grad = vec![
        dz[0] * 1.0,
        dz[0] * 2.0,
        dz[1] * 1.0,
        dz[1] * 2.0,
        dz[0],
        dz[1],
    ];
    (params, x, vec![0], grad)
}

fn gradient_of(params: &Params, x: &[f32], labels: &[u8]) -> Vec<f32> {
    let layers = params.layers();
    let mut ws = Workspace::new(&layers, 1);
    let mut grad = vec![f32::NAN; params.values.len()];
    let shape = Shape {
        layers: &layers,
        activation: params.model.dense_stack().unwrap().1,
        threads: 1,
    };
    loss_and_gradient(
        shape,
        &params.values,
        x,
        labels,
        1,
        GradientReduction::Mean,
        &mut grad,
        &mut ws,
    );
    grad
}

#[test]
fn backprop_gradient_of_tiny_network_matches_hand_computation() {
    let (params, x, labels, want) = tiny_case();
    let grad = gradient_of(&params, &x, &labels);
    for (g, w) in grad.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{grad:?} vs {want:?}");
    }
}

#[test]
fn sgd_step_matches_hand_computation_with_l1_and_l2_on_weights_only() {
    let (mut params, x, labels, g) = tiny_case();
    let before = params.values.clone();
    let grad = gradient_of(&params, &x, &labels);
    let (lr, l1, l2) = (0.1, 0.01, 0.02);
    let mut state = OptimizerState::new(6);
    let layers = params.layers();
    ops::update(
        &mut params.values,
        &grad,
        &mut state,
        &layers,
        &hyper(Optimizer::Sgd, lr, 0.0, l1, l2),
    );
    for i in 0..6 {
        let w = before[i] as f64;
        let penalty = if i < 4 { l1 * w.signum() + l2 * w } else { 0.0 };
        let want = w - lr * (g[i] + penalty);
        assert!(
            (params.values[i] as f64 - want).abs() < 1e-6,
            "param {i}: {} vs {want}",
            params.values[i]
        );
    }
}

#[test]
fn momentum_steps_follow_the_papers_rule() {
    // v ← γv − αg, w ← w + v, with a constant gradient of 1 on one weight: after two steps
    // v = −α(1 + γ) and w = w0 − α − α(1 + γ).
    let widths = [1, 2];
    let mut params = vec![0.3f32, -0.2, 0.0, 0.0];
    let grad = vec![1.0f32, 0.0, 0.0, 0.0];
    let mut state = OptimizerState::new(4);
    let h = hyper(Optimizer::Sgd, 0.1, 0.9, 0.0, 0.0);
    let layers = layer_views(&widths);
    ops::update(&mut params, &grad, &mut state, &layers, &h);
    ops::update(&mut params, &grad, &mut state, &layers, &h);
    assert!((state.first[0] - (-0.1 * 1.9)).abs() < 1e-7);
    assert!(
        (params[0] - (0.3 - 0.1 - 0.19)).abs() < 1e-6,
        "{}",
        params[0]
    );
    assert_eq!(params[1], -0.2, "a zero gradient leaves a weight alone");
}

#[test]
fn adam_step_matches_its_definition() {
    // The first Adam step moves each parameter by −α·g/(|g| + ε') ≈ −α·sign(g).
    let layers = layer_views(&[1, 2]);
    let mut params = vec![1.0f32, 1.0, 0.0, 0.0];
    let grad = vec![0.5f32, -2.0, 0.0, 0.0];
    let mut state = OptimizerState::new(4);
    ops::update(
        &mut params,
        &grad,
        &mut state,
        &layers,
        &hyper(Optimizer::Adam, 0.01, 0.0, 0.0, 0.0),
    );
    assert!(
        (params[0] - 0.99).abs() < 1e-6 && (params[1] - 1.01).abs() < 1e-6,
        "{params:?}"
    );
    assert_eq!(&params[2..], &[0.0, 0.0]);
    // Second step, same gradient: m̂ = g and v̂ = g², so the same move again.
    ops::update(
        &mut params,
        &grad,
        &mut state,
        &layers,
        &hyper(Optimizer::Adam, 0.01, 0.0, 0.0, 0.0),
    );
    assert!((params[0] - 0.98).abs() < 1e-5, "{params:?}");
}

#[test]
fn f32_training_gradient_matches_f64_gradient() {
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        let params = Params::init(&[30, 17, 5], act, Init::Xavier, 4).unwrap();
        let mut r = rng(9);
        let rows = 13;
        let x64 = uniform(&mut r, rows * 30);
        let labels: Vec<u8> = (0..rows).map(|i| (i % 5) as u8).collect();
        let layers = params.layers();
        let shape = Shape {
            layers: &layers,
            activation: act,
            threads: 2,
        };
        let mut g64 = vec![0.0f64; params.values.len()];
        let p64: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
        loss_and_gradient(
            shape,
            &p64,
            &x64,
            &labels,
            rows,
            GradientReduction::Mean,
            &mut g64,
            &mut Workspace::new(&layers, rows),
        );
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let mut g32 = vec![0.0f32; params.values.len()];
        loss_and_gradient(
            shape,
            &params.values,
            &x32,
            &labels,
            rows,
            GradientReduction::Mean,
            &mut g32,
            &mut Workspace::new(&layers, rows),
        );
        let max = g64
            .iter()
            .zip(&g32)
            .map(|(a, &b)| (a - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(max < 1e-5, "{act:?}: f32 and f64 gradients differ by {max}");
    }
}

#[test]
fn fast_f32_tanh_is_within_a_few_ulp_of_the_true_value() {
    // The CPU path's tanh is a rational approximation (it vectorises; libm's does not).
    let mut worst_ulps = 0.0f64;
    let mut x = -20.0f32;
    while x <= 20.0 {
        let got = wgtrain::cpu::tanh_f32(x) as f64;
        let want = (x as f64).tanh();
        let ulp = (f32::EPSILON as f64) * want.abs().max(f32::MIN_POSITIVE as f64);
        worst_ulps = worst_ulps.max((got - want).abs() / ulp);
        x += 1.0e-3 * (1.0 + x.abs());
    }
    for x in [0.0f32, 1e-8, -1e-8, 3.9e-4, 4.1e-4, 1e-3] {
        let want = (x as f64).tanh();
        assert!(
            (wgtrain::cpu::tanh_f32(x) as f64 - want).abs()
                <= 2.0 * f32::EPSILON as f64 * want.abs(),
            "{x}"
        );
    }
    assert!(worst_ulps <= 4.0, "worst error {worst_ulps:.2} ulp");
}

#[test]
fn gemm_peak_reports_the_fastest_of_the_sizes_it_timed() {
    // Two tiny sizes on one thread: the peak names one of them, and its rate is a real rate.
    let peak = wgtrain::bench::cpu_gemm_peak(&[8, 24], 1, 2);
    assert!([8, 24].contains(&peak.size), "{peak:?}");
    assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
    assert_eq!((peak.threads, peak.runs), (1, 2));
    // No size timed, no peak: a zero rate, never a made-up one.
    assert_eq!(wgtrain::bench::cpu_gemm_peak(&[], 1, 1).gflops, 0.0);
}

#[test]
fn fma_peak_is_a_real_rate_of_the_kernels_the_cpu_path_runs() {
    use wgtrain::cpu::CpuKernels;
    let peak = wgtrain::bench::cpu_fma_peak(1, 1);
    let kernels = CpuKernels::active();
    assert_eq!(peak.kernels, kernels.name());
    // The register widths, in f32 lanes, of each set's instructions.
    let lanes = match kernels {
        CpuKernels::Avx512f => 16,
        CpuKernels::Avx2Fma => 8,
        CpuKernels::Neon | CpuKernels::Simd128 => 4,
        CpuKernels::Scalar => 1,
    };
    assert_eq!((peak.lanes, peak.threads), (lanes, 1));
    assert!(peak.gflops.is_finite() && peak.gflops > 0.0, "{peak:?}");
    // Zero threads means one per core, as everywhere else.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(wgtrain::bench::cpu_fma_peak(0, 1).threads, cores);
}

#[test]
fn a_thread_count_past_the_limit_is_clamped_and_zero_means_every_core() {
    use wgtrain::host::{MAX_THREADS, resolve_threads};
    assert_eq!(resolve_threads(3), 3);
    assert_eq!(resolve_threads(MAX_THREADS), MAX_THREADS);
    assert_eq!(resolve_threads(100_000), MAX_THREADS);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(resolve_threads(0), cores.min(MAX_THREADS));
}

#[test]
fn a_network_larger_than_free_memory_is_refused_before_anything_is_allocated() {
    use wgtrain::device::EngineKind;
    use wgtrain::engine::EngineError;
    let cpu = EngineKind::Cpu { threads: 2 };
    let gb = 1_000_000_000u64;
    // [784, 1e6, 10]: 795 million parameters, 3.18 GB per f32 copy.
    let wide = Network::dense(&[784, 1_000_000, 10], Activation::Tanh).unwrap();
    let within =
        |kind: &EngineKind, net: &Network, gb: Option<u64>| kind.check_memory_within(net, 128, gb);
    match within(&cpu, &wide, Some(8 * gb)) {
        Err(e @ EngineError::OutOfMemory { .. }) => {
            let text = e.to_string();
            assert!(text.contains("795000010 parameters"), "{text}");
            assert!(text.contains("8.0 GB is available"), "{text}");
            assert!(text.contains("fewer --threads"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // Five host copies, the engine's four, and per thread a gradient and 512 rows of
    // activations and deltas (4.1 GB): 43.2 GB on two threads.
    assert!(within(&cpu, &wide, Some(40 * gb)).is_err());
    assert!(within(&cpu, &wide, Some(60 * gb)).is_ok());
    // More threads, more gradients: what fits two threads does not fit sixteen.
    let many = EngineKind::Cpu { threads: 16 };
    assert!(within(&many, &wide, Some(60 * gb)).is_err());
    // The paper's network fits in a few megabytes; unknown free memory checks nothing.
    let paper = Network::dense(&[784, 128, 10], Activation::Tanh).unwrap();
    assert!(within(&cpu, &paper, Some(gb / 10)).is_ok());
    assert!(within(&cpu, &wide, None).is_ok());
}

#[test]
fn free_memory_is_known_on_linux_and_counts_sizes_no_wider_than_u128() {
    if cfg!(target_os = "linux") {
        let free = wgtrain::host::available_memory_bytes().expect("/proc/meminfo");
        assert!(free > 0);
    }
    // Widths near usize::MAX saturate instead of wrapping to a small count.
    let huge = [usize::MAX, usize::MAX, usize::MAX];
    assert_eq!(wgtrain::model::param_count_u128(&huge), u128::MAX);
    assert_eq!(wgtrain::cpu::engine_bytes(&huge, 8), u128::MAX);
    // Such a network is not planned at all: no count of it is ever taken.
    assert!(Network::dense(&huge, Activation::Tanh).is_err());
}
