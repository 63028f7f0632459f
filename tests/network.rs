//! Networks as lists of layers: planning against the input's shape (errors naming the layer),
//! the torchinfo-style summary, and the reference loss and gradient (`cpu::layers`) against
//! finite differences and against the fused dense pass it generalises.

use wgtrain::config::GradientReduction;
use wgtrain::cpu::dense::{Shape, Workspace, loss_and_gradient};
use wgtrain::cpu::layers_reference::{StepCounters, loss_and_gradient_reference};
use wgtrain::model::{Activation, layer_views, param_count};
use wgtrain::model::{ImageShape, Layer, Network};

use crate::common::{rng, uniform};

const IMAGE: ImageShape = ImageShape {
    channels: 1,
    height: 6,
    width: 6,
};

fn dense(units: usize, activation: Activation) -> Layer {
    Layer::Dense { units, activation }
}

fn conv(filters: usize, kernel: usize, stride: usize, padding: usize) -> Layer {
    Layer::Conv2d {
        filters,
        kernel,
        stride,
        padding,
        activation: Activation::Tanh,
    }
}

/// A small network of every layer kind on 2-channel 7×7 images, 3 classes: conv with padding,
/// pooling, a strided conv, dropout, a sigmoid dense layer, the logits.
fn every_kind() -> (ImageShape, Vec<Layer>) {
    let input = ImageShape {
        channels: 2,
        height: 7,
        width: 7,
    };
    let layers = vec![
        conv(3, 3, 1, 1),
        Layer::MaxPool2d {
            window: 2,
            stride: 2,
        },
        conv(4, 3, 2, 1),
        Layer::Dropout { p: 0.3 },
        dense(5, Activation::Sigmoid),
        dense(3, Activation::None),
    ];
    (input, layers)
}

/// The example network on Fashion-MNIST's 28×28 images: conv 32 → pool → conv 64 →
/// pool → dropout → dense 128 → dropout → `classes`, ReLU, 3×3 kernels with padding 1.
fn example_network(classes: usize) -> (ImageShape, Vec<Layer>) {
    let relu_conv = |filters| Layer::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding: 1,
        activation: Activation::Relu,
    };
    let pool = Layer::MaxPool2d {
        window: 2,
        stride: 2,
    };
    let layers = vec![
        relu_conv(32),
        pool,
        relu_conv(64),
        pool,
        Layer::Dropout { p: 0.25 },
        dense(128, Activation::Relu),
        Layer::Dropout { p: 0.5 },
        dense(classes, Activation::None),
    ];
    let input = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    (input, layers)
}

#[test]
fn a_network_of_dense_layers_is_the_mlp_of_those_widths() {
    // `layers = [36, 10, 3]` keeps meaning what it means: same parameter layout, same loss,
    // same gradient as the path that trains today.
    let layers = [dense(10, Activation::Tanh), dense(3, Activation::None)];
    let net = Network::plan(IMAGE, &layers, 3).unwrap();
    let widths = [36, 10, 3];
    assert_eq!(net.param_count, param_count(&widths));
    let mut r = rng(1);
    let rows = 5;
    let params = uniform(&mut r, net.param_count);
    let x = uniform(&mut r, rows * 36);
    let labels: Vec<u8> = (0..rows as u8).map(|i| i % 3).collect();
    let scale = 1.0 / rows as f64;
    let mut ours = vec![f64::NAN; params.len()];
    let (loss, correct) = loss_and_gradient_reference(
        &net,
        &params,
        &x,
        &labels,
        rows,
        scale,
        None,
        Some(&mut ours),
    );
    let views = layer_views(&widths);
    let shape = Shape {
        layers: &views,
        activation: Activation::Tanh,
        threads: 1,
    };
    let mut theirs = vec![f64::NAN; params.len()];
    let mut ws = Workspace::new(&views, rows);
    let (mlp_loss, mlp_correct) = loss_and_gradient(
        shape,
        &params,
        &x,
        &labels,
        rows,
        GradientReduction::Mean,
        &mut theirs,
        &mut ws,
    );
    assert_eq!(correct, mlp_correct);
    assert!((loss - mlp_loss).abs() < 1e-12, "{loss} vs {mlp_loss}");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() < 1e-12, "parameter {i}: {a} vs {b}");
    }
}

#[test]
fn a_cnn_gradient_matches_finite_differences_with_dropout_on() {
    // conv (padding, then stride 2) → pool → dropout → dense → logits, on 2-channel 7×7
    // images: every parameter's gradient against a central difference of the loss, with the
    // step's dropout masks fixed by its counters (the same masks in every evaluation).
    let (input, layers) = every_kind();
    let net = Network::plan(input, &layers, 3).unwrap();
    let mut r = rng(2);
    let rows = 4;
    let params: Vec<f64> = uniform(&mut r, net.param_count)
        .iter()
        .map(|v| 0.5 * v)
        .collect();
    let x = uniform(&mut r, rows * input.len());
    let labels = [0u8, 2, 1, 2];
    let step = StepCounters {
        seed: 9,
        epoch: 2,
        step: 5,
    };
    let counters = Some(step);
    let loss =
        |p: &[f64]| loss_and_gradient_reference(&net, p, &x, &labels, rows, 1.0, counters, None).0;
    let mut grad = vec![f64::NAN; params.len()];
    loss_and_gradient_reference(
        &net,
        &params,
        &x,
        &labels,
        rows,
        1.0,
        counters,
        Some(&mut grad),
    );
    let eps = 1e-5;
    for i in 0..params.len() {
        let (mut up, mut down) = (params.clone(), params.clone());
        up[i] += eps;
        down[i] -= eps;
        let numerical = (loss(&up) - loss(&down)) / (2.0 * eps);
        assert!(
            (grad[i] - numerical).abs() < 1e-6 * (1.0 + numerical.abs()),
            "parameter {i} of {}: backprop {} vs numerical {numerical}",
            params.len(),
            grad[i]
        );
    }
    // The masks matter: another step's dropout gives another loss; evaluation drops nothing,
    // which is the network without its dropout layer.
    let other = Some(StepCounters { step: 6, ..step });
    let other_loss =
        loss_and_gradient_reference(&net, &params, &x, &labels, rows, 1.0, other, None).0;
    assert_ne!(loss(&params), other_loss);
    let evaluated =
        loss_and_gradient_reference(&net, &params, &x, &labels, rows, 1.0, None, None).0;
    let without: Vec<Layer> = layers
        .iter()
        .copied()
        .filter(|l| !matches!(l, Layer::Dropout { .. }))
        .collect();
    let plain = Network::plan(input, &without, 3).unwrap();
    let plain_loss =
        loss_and_gradient_reference(&plain, &params, &x, &labels, rows, 1.0, None, None).0;
    assert_eq!(evaluated, plain_loss);
}

#[test]
fn planning_names_the_layer_that_does_not_fit() {
    let cases: [(&[Layer], &str); 6] = [
        (
            &[conv(2, 7, 1, 0), dense(3, Activation::None)],
            "layer 1 (conv 2, 7×7, stride 1, pad 0, tanh): a 7×7 kernel does not fit a 6×6 input padded by 0",
        ),
        (
            &[conv(2, 3, 3, 0), dense(3, Activation::None)],
            "layer 1 (conv 2, 3×3, stride 3, pad 0, tanh): stride 3 is not 1 or 2",
        ),
        (
            &[
                Layer::MaxPool2d {
                    window: 4,
                    stride: 4,
                },
                Layer::MaxPool2d {
                    window: 2,
                    stride: 2,
                },
                dense(3, Activation::None),
            ],
            "layer 2 (max pool 2×2 / 2): a 2×2 window does not fit a 1×1 input",
        ),
        (
            &[Layer::Dropout { p: 1.0 }, dense(3, Activation::None)],
            "layer 1 (dropout 1): p = 1 is not in [0, 1)",
        ),
        (
            &[dense(8, Activation::Relu), dense(4, Activation::None)],
            "layer 2 (dense 4, none): the last layer has 4 units, the data has 3 classes",
        ),
        (
            &[dense(3, Activation::Relu)],
            "layer 1 (dense 3, relu): the last layer gives the logits",
        ),
    ];
    for (layers, want) in cases {
        let e = Network::plan(IMAGE, layers, 3).unwrap_err();
        assert!(e.starts_with(want), "{e}");
    }
    let e = Network::plan(IMAGE, &[conv(2, 3, 1, 1)], 3).unwrap_err();
    assert!(e.contains("the last layer must be dense"), "{e}");
}

#[test]
fn the_summary_lists_every_layer_with_its_output_shape_and_parameters() {
    // The example network on Fashion-MNIST: conv 32 → pool → conv 64 → pool →
    // dropout → dense 128 → dropout → 10, ReLU, 3×3 kernels with padding 1.
    let (input, layers) = example_network(10);
    let net = Network::plan(input, &layers, 10).unwrap();
    // nn.Conv2d(1, 32, 3): 32·1·9 + 32; nn.Conv2d(32, 64, 3): 64·32·9 + 64;
    // nn.Linear(64·7·7, 128); nn.Linear(128, 10).
    let expected = (32 * 9 + 32) + (64 * 32 * 9 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10);
    assert_eq!(net.param_count, expected);
    let summary = net.summary();
    for line in [
        "| input | [B, 1, 28, 28] | – |",
        "| conv 32, 3×3, stride 1, pad 1, relu | [B, 32, 28, 28] | 320 |",
        "| max pool 2×2 / 2 | [B, 32, 14, 14] | 0 |",
        "| conv 64, 3×3, stride 1, pad 1, relu | [B, 64, 14, 14] | 18496 |",
        "| max pool 2×2 / 2 | [B, 64, 7, 7] | 0 |",
        "| dropout 0.25 | [B, 64, 7, 7] | 0 |",
        "| dense 128, relu | [B, 128] | 401536 |",
        "| dense 10, none | [B, 10] | 1290 |",
    ] {
        assert!(summary.contains(line), "{line} not in\n{summary}");
    }
    assert!(
        summary.ends_with(&format!("\n{expected} parameters\n")),
        "{summary}"
    );
}

#[test]
fn the_gradient_check_covers_every_layer_kind_within_epsilon_squared() {
    // Table 3 for a network of every layer kind: rows named as PyTorch's state_dict names
    // them, each difference within ε² (the paper's mark), dropout's masks held fixed.
    let (input, layers) = every_kind();
    let net = Network::plan(input, &layers, 3).unwrap();
    let names: Vec<String> = net.tensors().iter().map(|t| t.name.clone()).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
    let conv1 = &net.tensors()[0];
    assert_eq!(conv1.dims, [3, 2, 3, 3]);
    // Element 17 of (3, 2, 3, 3) row-major: o 0, c 1, i 2, j 2.
    assert_eq!(conv1.element_name(17), "conv1.weight[0, 1, 2, 2]");
    let mut r = rng(4);
    let rows = 6;
    let params: Vec<f64> = uniform(&mut r, net.param_count)
        .iter()
        .map(|v| 0.5 * v)
        .collect();
    let x = uniform(&mut r, rows * input.len());
    let labels = [0u8, 1, 2, 2, 1, 0];
    let counters = Some(StepCounters {
        seed: 3,
        epoch: 1,
        step: 1,
    });
    let epsilon = 1e-3;
    let objective = wgtrain::gradcheck::Objective {
        input: &x,
        labels: &labels,
        l1: 0.0,
        l2: 0.0,
        reduction: wgtrain::config::GradientReduction::Mean,
    };
    let stencil = wgtrain::gradcheck::Stencil {
        per_tensor: 4,
        epsilon,
        seed: 7,
    };
    let table = wgtrain::gradcheck::gradient_check(&net, &params, &objective, counters, stencil);
    assert_eq!(
        table.len(),
        4 * 4 + 4,
        "4 weights and a bias per layer with parameters"
    );
    for name in &names {
        assert!(
            table
                .iter()
                .any(|row| row.parameter.starts_with(&format!("{name}["))),
            "{name} not checked"
        );
    }
    for row in &table {
        assert!(
            row.difference <= epsilon * epsilon && row.backprop != 0.0,
            "{row:?}"
        );
    }
}

#[test]
fn a_network_starts_where_the_mlp_of_its_widths_does_and_conv_fans_count_the_taps() {
    use wgtrain::model::{Init, Params};
    let layers = [dense(10, Activation::Tanh), dense(3, Activation::None)];
    let net = Network::plan(IMAGE, &layers, 3).unwrap();
    for init in [Init::Paper, Init::Xavier, Init::He, Init::Pytorch] {
        let mlp = Params::init(&[36, 10, 3], Activation::Tanh, init, 11).unwrap();
        assert_eq!(net.init(init, 11), mlp.values, "{init:?}");
    }
    // nn.Conv2d's default: U(±1/√(C·K·K)) for weights and biases; He: N(0, 2/(C·K·K)).
    let layers = [conv(8, 3, 1, 1), dense(3, Activation::None)];
    let input = ImageShape {
        channels: 4,
        height: 6,
        width: 6,
    };
    let net = Network::plan(input, &layers, 3).unwrap();
    let conv1 = net.init(Init::Pytorch, 5);
    let bound = 1.0 / ((4 * 9) as f32).sqrt();
    let conv_len = 8 * 4 * 9 + 8;
    assert!(conv1[..conv_len].iter().all(|v| v.abs() <= bound));
    assert!(conv1[..conv_len].iter().any(|v| v.abs() > 0.9 * bound));
    let he = net.init(Init::He, 5);
    let weights = &he[..8 * 4 * 9];
    let var = weights.iter().map(|w| (w * w) as f64).sum::<f64>() / weights.len() as f64;
    assert!((var / (2.0 / 36.0) - 1.0).abs() < 0.25, "variance {var}");
    assert!(he[8 * 4 * 9..conv_len].iter().all(|&b| b == 0.0));
}

#[test]
fn the_fast_cpu_pass_gives_the_reference_loss_and_gradient() {
    use wgtrain::cpu::layers::{LayersWorkspace, loss_and_gradient};
    let cases = [every_kind(), example_network(3)];
    let counters = Some(StepCounters {
        seed: 1,
        epoch: 1,
        step: 3,
    });
    for (input, layers) in cases {
        let net = Network::plan(input, &layers, 3).unwrap();
        let mut r = rng(6);
        let rows = 4;
        let params = net.init(wgtrain::model::Init::Pytorch, 2);
        let params64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
        let x = uniform(&mut r, rows * input.len());
        let labels = [2u8, 0, 1, 2];
        let scale = 1.0 / rows as f64;
        let mut want = vec![0.0; params.len()];
        let (want_loss, want_correct) = loss_and_gradient_reference(
            &net,
            &params64,
            &x,
            &labels,
            rows,
            scale,
            counters,
            Some(&mut want),
        );
        // f64: the same sums in another order. The workspace is larger than the batch and
        // dirty from a step on other images: nothing of that may leak into this one.
        let mut ws = LayersWorkspace::new(&net, 8);
        let other: Vec<f64> = x.iter().rev().copied().collect();
        let mut scratch = vec![0.0; params.len()];
        loss_and_gradient(
            &net,
            &params64,
            &other,
            &[1, 1, 0, 0, 2, 2, 1, 0],
            8.min(other.len() / input.len()),
            1.0,
            None,
            Some(&mut scratch),
            2,
            &mut ws,
        );
        let mut got = vec![f64::NAN; params.len()];
        let (loss, correct) = loss_and_gradient(
            &net,
            &params64,
            &x,
            &labels,
            rows,
            scale,
            counters,
            Some(&mut got),
            2,
            &mut ws,
        );
        assert_eq!(correct, want_correct);
        assert!((loss - want_loss).abs() < 1e-10 * want_loss.abs());
        let largest = want.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-10 * largest,
                "{input:?} parameter {i}: {g} vs {w}"
            );
        }
        // f32, what training will run: within f32 rounding of the f64 reference.
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut got32 = vec![f32::NAN; params.len()];
        let (loss32, _) = loss_and_gradient(
            &net,
            &params,
            &x32,
            &labels,
            rows,
            0.25f32,
            counters,
            Some(&mut got32),
            2,
            &mut LayersWorkspace::new(&net, rows),
        );
        assert!((loss32 - want_loss).abs() < 1e-4 * want_loss.abs());
        for (i, (g, w)) in got32.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() < 1e-4 * largest,
                "{input:?} f32 parameter {i}: {g} vs {w}"
            );
        }
    }
}

/// A finite difference across a ReLU's or a pooling's kink measures no derivative: gradcheck
/// marks such entries (after drawing others) and judges only the rest; a marked entry's
/// stencil does change which side of a kink the network is on, an unmarked one's does not.
#[test]
fn gradcheck_marks_entries_whose_stencil_straddles_a_kink() {
    use wgtrain::cpu::layers_reference::kink_pattern;
    let (input, layers) = every_kind();
    let net = Network::plan(input, &layers, 3).unwrap();
    let mut r = rng(6);
    let rows = 6;
    let params: Vec<f64> = uniform(&mut r, net.param_count);
    let x = uniform(&mut r, rows * input.len());
    let labels = [0u8, 1, 2, 2, 1, 0];
    let objective = wgtrain::gradcheck::Objective {
        input: &x,
        labels: &labels,
        l1: 0.0,
        l2: 0.0,
        reduction: GradientReduction::Mean,
    };
    let counters = Some(StepCounters {
        seed: 3,
        epoch: 0,
        step: 1,
    });
    // A stencil this wide crosses kinks for most entries.
    let epsilon = 0.3;
    let stencil = wgtrain::gradcheck::Stencil {
        per_tensor: 4,
        epsilon,
        seed: 7,
    };
    let table = wgtrain::gradcheck::gradient_check(&net, &params, &objective, counters, stencil);
    assert!(table.iter().any(|row| row.kink), "{table:?}");
    let index_of = |name: &str| {
        net.tensors()
            .into_iter()
            .find_map(|t| {
                (0..t.len())
                    .find(|&i| t.element_name(i) == name)
                    .map(|i| t.offset + i)
            })
            .unwrap()
    };
    let straddles = |index: usize| {
        let at = |delta: f64| {
            let mut p = params.clone();
            p[index] += delta;
            kink_pattern(&net, &p, &x, rows, counters)
        };
        let here = at(0.0);
        here != at(epsilon) || here != at(-epsilon)
    };
    for row in &table {
        assert_eq!(straddles(index_of(&row.parameter)), row.kink, "{row:?}");
    }
}
