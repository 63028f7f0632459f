//! Backprop against central differences in f64, for every activation, with and without L1/L2.

use wgtrain::config::GradientReduction;
use wgtrain::gradcheck::{GradRow, Objective, Stencil, gradient_check};
use wgtrain::model::{Activation, Init, Params};

use crate::common::{rng, uniform};

/// The check of `params`' network at its own values, no dropout.
fn check_params(
    params: &Params,
    objective: &Objective<'_>,
    per_tensor: usize,
    epsilon: f64,
    seed: u64,
) -> Vec<GradRow> {
    let values: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let stencil = Stencil {
        per_tensor,
        epsilon,
        seed,
    };
    gradient_check(&params.model, &values, objective, None, stencil)
}

fn check(
    widths: &[usize],
    act: Activation,
    init: Init,
    l1: f64,
    l2: f64,
    reduction: GradientReduction,
    epsilon: f64,
) -> f64 {
    let mut r = rng(21);
    let rows = 6;
    let input = uniform(&mut r, rows * widths[0]);
    let classes = *widths.last().unwrap();
    let labels: Vec<u8> = (0..rows).map(|i| (i % classes) as u8).collect();
    let params = Params::init(widths, act, init, 5).unwrap();
    let objective = Objective {
        input: &input,
        labels: &labels,
        l1,
        l2,
        reduction,
    };
    let rows = check_params(&params, &objective, 4, epsilon, 3);
    assert_eq!(
        rows.len(),
        (widths.len() - 1) * 5,
        "4 weights + 1 bias per layer"
    );
    rows.iter()
        .map(|r| r.difference / r.numerical.abs().max(1e-3))
        .fold(0.0, f64::max)
}

#[test]
fn backprop_matches_finite_differences_for_every_activation_and_penalty() {
    for act in [
        Activation::None,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Relu,
    ] {
        for (l1, l2) in [(0.0, 0.0), (0.05, 0.0), (0.0, 0.05), (0.01, 0.03)] {
            for reduction in [GradientReduction::Mean, GradientReduction::Sum] {
                let widths: &[usize] = if act == Activation::None {
                    &[7, 4]
                } else {
                    &[7, 5, 6, 3]
                };
                // ε = 1e-5 in f64: truncation (ε²) and rounding (1e-16/ε) errors both ≪ 1e-6.
                let worst = check(widths, act, Init::Xavier, l1, l2, reduction, 1e-5);
                assert!(
                    worst < 1e-5,
                    "{act:?} l1={l1} l2={l2} {reduction:?}: relative difference {worst}"
                );
            }
        }
    }
}

#[test]
fn papers_epsilon_passes_on_the_papers_init_with_l1() {
    // ε = 1e-2 straddles the |w| kink for the paper's tiny initial weights; the check moves
    // the checked weights clear of it, so the paper's ε² threshold holds. (ReLU is left to the
    // test below: under this init every pre-activation lies within ε of ReLU's kink.)
    for act in [Activation::Tanh, Activation::Sigmoid] {
        let mut r = rng(2);
        let input = uniform(&mut r, 4 * 12);
        let labels = [0u8, 1, 2, 1];
        let params = Params::init(&[12, 8, 3], act, Init::Paper, 1).unwrap();
        let objective = Objective {
            input: &input,
            labels: &labels,
            l1: 1e-2,
            l2: 1e-2,
            reduction: GradientReduction::Mean,
        };
        for row in check_params(&params, &objective, 3, 1e-2, 4) {
            assert!(row.difference <= 1e-4, "{act:?} {}: {row:?}", row.parameter);
        }
    }
}

#[test]
fn gradient_check_detects_a_wrong_objective() {
    // The check must be able to fail: differentiate the summed loss but compare against the
    // mean-loss gradient by lying about the reduction of a second objective.
    let mut r = rng(8);
    let input = uniform(&mut r, 5 * 6);
    let labels = [0u8, 1, 2, 0, 1];
    let params = Params::init(&[6, 4, 3], Activation::Tanh, Init::Xavier, 2).unwrap();
    let mean = Objective {
        input: &input,
        labels: &labels,
        l1: 0.0,
        l2: 0.0,
        reduction: GradientReduction::Mean,
    };
    let sum = Objective {
        reduction: GradientReduction::Sum,
        ..mean
    };
    let a = check_params(&params, &mean, 2, 1e-5, 1);
    let b = check_params(&params, &sum, 2, 1e-5, 1);
    for (m, s) in a.iter().zip(&b) {
        // Sum = 5 × mean: mixing them up would be caught by any nonzero entry.
        assert!((s.backprop - 5.0 * m.backprop).abs() < 1e-9);
        if m.backprop.abs() > 1e-6 {
            assert!((s.numerical - m.backprop).abs() > 1e-4);
        }
    }
}

#[test]
fn a_dense_relu_network_at_the_papers_epsilon_is_judged_away_from_its_kinks() {
    // Under the paper's init every hidden pre-activation lies within ε = 1e-2 of ReLU's kink,
    // so a first-layer entry's stencil moves some ReLU across it: the dense stack's check
    // draws other entries or marks them, as a convolution's does, and judges the rest by ε².
    // With L1 the drawn weights move clear of |w|'s kink first, and the ReLU kinks are
    // marked where the differences are then taken.
    for l1 in [0.0, 1e-2] {
        let mut r = rng(2);
        let input = uniform(&mut r, 4 * 12);
        let labels = [0u8, 1, 2, 1];
        let params = Params::init(&[12, 8, 3], Activation::Relu, Init::Paper, 1).unwrap();
        let objective = Objective {
            input: &input,
            labels: &labels,
            l1,
            l2: 0.0,
            reduction: GradientReduction::Mean,
        };
        let epsilon = 1e-2;
        let rows = check_params(&params, &objective, 3, epsilon, 4);
        assert!(
            rows.iter().any(|row| row.kink),
            "l1 {l1}: no kink marked: {rows:?}"
        );
        let judged: Vec<&GradRow> = rows.iter().filter(|row| !row.kink).collect();
        assert!(!judged.is_empty(), "l1 {l1}: {rows:?}");
        for row in judged {
            assert!(row.difference <= epsilon * epsilon, "l1 {l1}: {row:?}");
        }
    }
}
