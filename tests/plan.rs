//! The GPU's scheduler (`gpu::plan`): the dispatches it plans for a network, with no device.

use wgtrain::gpu::kernels::{KERNEL_TABLE, MAX_FUSED_CLASSES};
use wgtrain::gpu::plan::{Op, StepPlan};
use wgtrain::model::{Activation, ImageShape, Layer, Network};

fn dense(widths: &[usize]) -> Network {
    Network::dense(widths, Activation::Tanh).unwrap()
}

#[test]
fn the_paper_mlp_takes_three_dispatches_a_step() {
    let plan = StepPlan::new(&dense(&[784, 128, 10]), 32, true);
    assert_eq!(plan.dispatches_per_step(), 3);
    assert!(plan.activation_per_model && plan.stats_in_update);
    // Without the gather fused, a gather of its own.
    assert_eq!(
        StepPlan::new(&dense(&[784, 128, 10]), 32, false).dispatches_per_step(),
        4
    );
    // Softmax regression: the loss fused, so the gather cannot be.
    let softmax = StepPlan::new(&dense(&[784, 10]), 32, true);
    assert!(matches!(softmax.forward[0].op, Op::Gather(_)));
    assert_eq!(softmax.dispatches_per_step(), 3);
}

#[test]
fn more_classes_than_a_tile_keep_a_softmax_of_their_own() {
    let plan = StepPlan::new(&dense(&[20, 8, MAX_FUSED_CLASSES + 1]), 16, true);
    let last = plan.forward.last().map(|s| &s.op);
    assert!(matches!(last, Some(Op::SoftmaxXent)));
    // matmul_gather, matmul, softmax_xent; the output layer's input gradient; one update.
    assert_eq!(plan.dispatches_per_step(), 5);
}

#[test]
fn a_network_of_layers_goes_layer_by_layer() {
    let input = ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let layers = [
        Layer::Conv2d {
            filters: 2,
            kernel: 3,
            stride: 1,
            padding: 1,
            activation: Activation::Relu,
        },
        Layer::MaxPool2d {
            window: 2,
            stride: 2,
        },
        Layer::Dropout { p: 0.5 },
        Layer::Dense {
            units: 3,
            activation: Activation::None,
        },
    ];
    let net = Network::plan(input, &layers, 3).unwrap();
    let plan = StepPlan::new(&net, 8, true);
    assert!(!plan.activation_per_model && !plan.stats_in_update && plan.draws_dropout());
    assert!(plan.layout.grads.is_some());
    // gather, conv, relu, pool, dropout, dense, softmax_xent; batch_stats; dense weight and
    // input gradients, dropout, pool, relu, conv parameters; 4 updates.
    assert_eq!(plan.dispatches_per_step(), 7 + 1 + 6 + 4);
    // Each layer's delta is its own region, after every output.
    let l = &plan.layout;
    assert!(l.deltas.windows(2).all(|d| d[0] < d[1]));
    assert!(l.deltas[0] > *l.outputs.last().unwrap());
}

#[test]
fn the_kernel_table_has_one_row_per_kernel_in_its_order() {
    for (i, (kernel, name, _, _)) in KERNEL_TABLE.iter().enumerate() {
        assert_eq!(*kernel as usize, i, "{name}");
        assert_eq!(kernel.name(), *name);
    }
    let mut names: Vec<_> = KERNEL_TABLE.iter().map(|row| row.1).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), KERNEL_TABLE.len());
}
