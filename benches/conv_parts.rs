//! `cargo bench --bench conv_parts`: the CPU convolution's pieces at batch 128 on
//! configs/cnn.toml's convolutions (conv 1→32 on 28×28, conv 32→64 on 14×14, 3×3, padding 1),
//! on every thread, channels-last as the training pass runs them: the first layer's narrow
//! path (`cpu::conv_narrow`) and the second's through im2col (GEMM and bias a chunk of
//! images at a time): the filters' layout change, the forward pass with its output stored
//! and pooled as it goes, the backward pass from a stored gradient and through the pooling,
//! each against the GEMM's rate on large square products on the same threads, and im2col of
//! a whole batch at once for comparison; then the first pooling and a dropout mask, and a
//! whole training step of the network. Medians after warm-up; compare figures only within one
//! run (see BENCHMARKS.md).

use std::hint::black_box;

use wgtrain::bench::{cpu_gemm_peak, gemm_operand as filled, median_secs};
use wgtrain::cpu::channels_last::{self as cl, filters_to_channels_last};
use wgtrain::cpu::conv_chunks::{ConvScratch, Epilogue, Gradient};
use wgtrain::cpu::conv_narrow::{
    self, conv2d_backward_params_narrow, conv2d_forward_narrow, filters_to_taps_first,
};
use wgtrain::cpu::im2col::{cols_len, conv2d_backward_im2col, conv2d_forward_im2col, im2col};
use wgtrain::cpu::kernels::CpuKernels;
use wgtrain::model::Activation;
use wgtrain::model::{Conv2d, MaxPool2d};

fn report(what: &str, flops: Option<f64>, secs: f64, peak: f64) {
    let (gflops, share) = match flops {
        Some(f) => {
            let g = f / secs / 1e9;
            (format!("{g:.1}"), format!("{:.0}%", 100.0 * g / peak))
        }
        None => ("–".into(), "–".into()),
    };
    println!("| {what} | {:.2} | {gflops} | {share} |", secs * 1e3);
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = 128;
    let peak = cpu_gemm_peak(&[384, 768, 1024], threads, 7);
    println!(
        "GEMM peak: {:.1} GFLOP/s on {} thread(s) (fastest of 7 at 384³, 768³, 1024³)",
        peak.gflops, peak.threads
    );
    println!("| what (batch {rows}) | ms (median) | GFLOP/s | share of peak |");
    println!("|---|---|---|---|");
    let layers = [
        (
            "conv1 1→32, 28×28",
            Conv2d {
                channels: 1,
                height: 28,
                width: 28,
                filters: 32,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        ),
        (
            "conv2 32→64, 14×14",
            Conv2d {
                channels: 32,
                height: 14,
                width: 14,
                filters: 64,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        ),
    ];
    let mut total = 0.0;
    for (name, shape) in layers {
        let x = filled(rows * shape.in_len(), 1);
        let w = filled(shape.weights_len(), 2);
        let b = filled(shape.filters, 3);
        let dz = filled(rows * shape.out_len(), 4);
        let mut z = vec![0f32; dz.len()];
        let (mut dw, mut db) = (vec![0f32; w.len()], vec![0f32; b.len()]);
        let mut dx = vec![0f32; x.len()];
        let pool = MaxPool2d {
            channels: shape.filters,
            height: shape.out_height(),
            width: shape.out_width(),
            window: 2,
            stride: 2,
        };
        let (mut pooled, mut argmax) = (
            vec![0f32; rows * pool.out_len()],
            vec![0u32; rows * pool.out_len()],
        );
        let dpool = filled(pooled.len(), 5);
        let mut scratch = ConvScratch::default();
        // One GEMM's multiply-adds: positions × (C·K·K) × O.
        let macs = (shape.positions(rows) * shape.window_len() * shape.filters) as f64;
        let reps = 15;
        // The layer's step as configs/cnn.toml runs it: the filters' layout, the forward
        // pooled as it goes, and the backward through the pooling.
        let mut time = |what: &str, flops: Option<f64>, in_step: bool, f: &mut dyn FnMut()| {
            let secs = median_secs(reps, f);
            total += if in_step { secs } else { 0.0 };
            report(&format!("{name}: {what}"), flops, secs, peak.gflops);
        };
        let (none, kernels) = (Activation::None, CpuKernels::active());
        // The first layer takes the narrow path, the other im2col.
        let first_layer = conv_narrow::suits(&shape);
        let mut filters = w.clone();
        time("filters' layout", None, true, &mut || match first_layer {
            true => filters_to_taps_first(&shape, &w, &mut filters),
            false => filters_to_channels_last(&shape, &w, &mut filters),
        });
        let forward = |epilogue: Epilogue<'_, f32>, scratch: &mut ConvScratch<f32>| {
            let x = black_box(&x);
            match first_layer {
                true => conv2d_forward_narrow(
                    kernels,
                    &shape,
                    none,
                    x,
                    (&filters, &b),
                    rows,
                    epilogue,
                    scratch,
                    threads,
                ),
                false => conv2d_forward_im2col(
                    &shape, none, x, &filters, &b, rows, epilogue, scratch, threads,
                ),
            }
        };
        time(
            "forward, output stored",
            Some(2.0 * macs),
            false,
            &mut || forward(Epilogue::Store { out: &mut z }, &mut scratch),
        );
        time(
            "forward, pooled as it goes",
            Some(2.0 * macs),
            true,
            &mut || {
                let (out, argmax) = (&mut pooled[..], &mut argmax[..]);
                forward(
                    Epilogue::Pool {
                        shape: pool,
                        out,
                        argmax,
                    },
                    &mut scratch,
                )
            },
        );
        let mut dz = dz.clone();
        let mut backward = |gradient: Gradient<'_, f32>, dx: Option<&mut [f32]>| {
            let (grads, x) = ((&mut dw[..], &mut db[..]), black_box(&x));
            match first_layer {
                true => conv2d_backward_params_narrow(
                    kernels,
                    &shape,
                    none,
                    gradient,
                    x,
                    rows,
                    grads,
                    &mut scratch,
                    threads,
                ),
                false => conv2d_backward_im2col(
                    &shape,
                    none,
                    gradient,
                    x,
                    &filters,
                    rows,
                    grads,
                    dx,
                    &mut scratch,
                    threads,
                ),
            }
        };
        // The first layer's input gradient is never needed.
        let flops = Some(if first_layer { 2.0 } else { 4.0 } * macs);
        time(
            "backward from the stored gradient",
            flops,
            false,
            &mut || {
                let dx = (!first_layer).then_some(&mut dx[..]);
                backward(
                    Gradient::Stored {
                        dz: &mut dz,
                        a_out: &z,
                    },
                    dx,
                )
            },
        );
        time("backward through the pooling", flops, true, &mut || {
            let dx = (!first_layer).then_some(&mut dx[..]);
            let (dpool, pooled, argmax) = (&dpool[..], &pooled[..], &argmax[..]);
            backward(
                Gradient::Pooled {
                    shape: pool,
                    dpool,
                    pooled,
                    argmax,
                },
                dx,
            )
        });
        if !first_layer {
            let mut cols = vec![0f32; cols_len(&shape, rows)];
            let secs = median_secs(reps, || {
                im2col(&shape, black_box(&x), rows, &mut cols, threads)
            });
            report(
                &format!("{name}: (im2col of the whole batch at once)"),
                None,
                secs,
                peak.gflops,
            );
        }
    }
    println!(
        "\nboth layers' steps as configs/cnn.toml runs them (filters, pooled forward, backward through the pooling): {:.1} ms per batch of {rows}",
        total * 1e3
    );
    whole_step(rows, threads);
}

/// One training step of the whole example network (forward, loss, backward, dropout on) through
/// `cpu::layers::loss_and_gradient`, and what 375 of them (an epoch of Fashion-MNIST's 48,000
/// training images) would take.
fn whole_step(rows: usize, threads: usize) {
    use wgtrain::cpu::layers::{LayersWorkspace, loss_and_gradient};
    use wgtrain::cpu::layers_reference::StepCounters;
    use wgtrain::model::{Activation, Init};
    use wgtrain::model::{ImageShape, Layer, Network};
    let conv = |filters| Layer::Conv2d {
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
    let layers = [
        conv(32),
        pool,
        conv(64),
        pool,
        Layer::Dropout { p: 0.25 },
        Layer::Dense {
            units: 128,
            activation: Activation::Relu,
        },
        Layer::Dropout { p: 0.5 },
        Layer::Dense {
            units: 10,
            activation: Activation::None,
        },
    ];
    let input = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let net = Network::plan(input, &layers, 10).expect("the example network plans");
    let params = net.init(Init::Pytorch, 1);
    let x = filled(rows * input.len(), 5);
    let labels: Vec<u8> = (0..rows).map(|i| (i % 10) as u8).collect();
    let mut grad = vec![0f32; params.len()];
    let counters = Some(StepCounters {
        seed: 1,
        epoch: 1,
        step: 1,
    });
    let scale = 1.0 / rows as f32;
    // The pieces beside the convolutions: the first pooling (32×28×28 → 14×14) both ways, and
    // the first dropout's mask over 64·7·7 values per image.
    let pool1 = wgtrain::model::MaxPool2d {
        channels: 32,
        height: 28,
        width: 28,
        window: 2,
        stride: 2,
    };
    let a = filled(rows * pool1.in_len(), 6);
    let (mut z, mut argmax) = (
        vec![0f32; rows * pool1.out_len()],
        vec![0u32; rows * pool1.out_len()],
    );
    let secs = median_secs(9, || {
        cl::max_pool2d_forward(&pool1, black_box(&a), rows, &mut z, &mut argmax)
    });
    println!("pool1 forward (one thread): {:.1} ms", secs * 1e3);
    let mut da = a.clone();
    let secs = median_secs(9, || {
        cl::max_pool2d_backward(&pool1, black_box(&z), &argmax, rows, &mut da)
    });
    println!("pool1 backward (one thread): {:.1} ms", secs * 1e3);
    let mask = wgtrain::model::dropout::DropoutMask::new(1, 1, 1, 4, 0.25);
    let mut d = filled(rows * 64 * 7 * 7, 7);
    let pooled = ImageShape {
        channels: 64,
        height: 7,
        width: 7,
    };
    let secs = median_secs(9, || cl::dropout_forward(&mask, &mut d, 0, &pooled));
    println!(
        "dropout over 64·7·7 per image, channels-last (one thread): {:.1} ms",
        secs * 1e3
    );
    let mut ws = LayersWorkspace::new(&net, rows);
    let secs = median_secs(9, || {
        black_box(loss_and_gradient(
            &net,
            &params,
            &x,
            &labels,
            rows,
            scale,
            counters,
            Some(&mut grad),
            threads,
            &mut ws,
        ));
    });
    println!(
        "whole step of the example network (batch {rows}, forward + backward): {:.1} ms; 375 steps (one epoch of 48,000 images, no update, no validation): {:.1} s",
        secs * 1e3,
        375.0 * secs
    );
}
