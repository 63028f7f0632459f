//! The GPU path against the CPU path: every kernel (through the same harness `wgtrain check`
//! runs), training steps for every activation × momentum × penalty, an epoch on real data,
//! determinism, and flat memory. Tolerances are documented where each comparison is made
//! (src/check/: kernels.rs, layers.rs, conv.rs, matmul.rs, matmul_fused.rs for the kernels).

use std::sync::Arc;

use wgtrain::check::check_epoch;
use wgtrain::config::{Optimizer, TrainConfig};
use wgtrain::cpu::CpuEngine;
use wgtrain::data::{Dataset, epoch_order};
use wgtrain::engine::{Engine, wait};
use wgtrain::gpu::{GpuEngine, Tuning, shaders};
use wgtrain::model::{Activation, Params};

use crate::common::{fashion_mnist, gpu, write_dataset};

#[test]
fn every_shader_parses_and_validates_without_a_gpu() {
    for (family, _) in shaders::FAMILIES {
        for tuning in Tuning::candidates() {
            let source = shaders::assembled(family, &tuning).unwrap();
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{family}: {}", e.emit_to_string(&source)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{family} ({tuning:?}): {e:?}"));
        }
    }
}

#[test]
fn matmul_is_compiled_with_the_k_step_and_loop_form_it_is_given() {
    let tuned = Tuning {
        tile_k: 64,
        prefetch: true,
        ..Tuning::default()
    };
    let source = shaders::assembled("matmul", &tuned).unwrap();
    assert!(source.contains("const TILE_K: u32 = 64u;"));
    assert!(source.contains("const PREFETCH: bool = true;"));
    assert!(!source.contains(shaders::TILE_K_DECLARATION));
    assert!(!source.contains(shaders::PREFETCH_DECLARATION));
    let default = shaders::assembled("matmul", &Tuning::default()).unwrap();
    assert!(default.contains(shaders::TILE_K_DECLARATION));
    assert!(default.contains(shaders::PREFETCH_DECLARATION));
    assert_eq!(
        shaders::assembled("softmax_xent", &tuned),
        shaders::assembled("softmax_xent", &Tuning::default()),
        "only matmul has a k step and a loop form"
    );
    assert!(shaders::assembled("no such family", &tuned).is_none());
}

fn adapter_named(name: &str, driver: &str) -> wgtrain::gpu::AdapterSummary {
    wgtrain::gpu::AdapterSummary {
        index: 0,
        name: name.into(),
        backend: "vulkan".into(),
        device_type: "DiscreteGpu".into(),
        driver: driver.into(),
        max_storage_buffer_binding_size: 1 << 27,
        max_compute_workgroup_storage_size: 1 << 15,
        max_compute_invocations_per_workgroup: 256,
        timestamp_queries: true,
        software: false,
        pci_bus_id: String::new(),
        chosen_by: None,
    }
}

#[test]
fn the_tuning_file_keeps_one_arrangement_per_adapter_and_driver_and_variables_win() {
    use wgtrain::gpu::tuning::{TuningFile, TuningOverrides};
    let candidates = Tuning::candidates();
    assert_eq!(candidates[0], Tuning::default());
    assert_eq!(candidates.len(), 2 * 3 * 2 * 2, "every combination once");
    assert!(
        candidates
            .iter()
            .enumerate()
            .all(|(i, c)| !candidates[..i].contains(c))
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("tuning.toml");
    assert_eq!(
        TuningFile::load(&path).unwrap(),
        TuningFile::default(),
        "missing: empty"
    );
    let (gpu_a, gpu_b) = (adapter_named("GPU A", "1.0"), adapter_named("GPU B", "1.0"));
    let fast = Tuning {
        fuse_gather: false,
        tile_k: 64,
        submit_every: 64,
        prefetch: true,
    };
    let mut file = TuningFile::default();
    file.record(&gpu_a, candidates[3], "first".into());
    file.record(&gpu_b, candidates[5], "other".into());
    file.record(&gpu_a, fast, "again".into());
    file.save(&path).unwrap();
    let file = TuningFile::load(&path).unwrap();
    assert_eq!(
        file.adapter.len(),
        2,
        "a second tuning replaces the first: {file:?}"
    );
    assert_eq!(file.find(&gpu_a), Some(fast));
    assert_eq!(file.find(&gpu_b), Some(candidates[5]));
    // Another driver is another adapter: it starts from the defaults.
    let new_driver = adapter_named("GPU A", "2.0");
    assert_eq!(file.find(&new_driver), None);
    let none = TuningOverrides::default();
    assert_eq!(file.tuning_for(&new_driver, &none), Tuning::default());
    let forced = TuningOverrides {
        tile_k: Some(16),
        prefetch: Some(false),
        ..Default::default()
    };
    assert_eq!(
        file.tuning_for(&gpu_a, &forced),
        Tuning {
            tile_k: 16,
            prefetch: false,
            ..fast
        }
    );
    // A file written before the loop form was a knob reads as it ran then: not pipelined.
    let old = "[[adapter]]\nname = \"GPU C\"\nbackend = \"vulkan\"\ndriver = \"1.0\"\n\
               fuse_gather = true\ntile_k = 32\nsubmit_every = 0\n";
    std::fs::write(&path, old).unwrap();
    let file = TuningFile::load(&path).unwrap();
    let expected = Tuning {
        tile_k: 32,
        ..Tuning::default()
    };
    assert_eq!(file.find(&adapter_named("GPU C", "1.0")), Some(expected));
}

#[test]
fn tune_keeps_the_fastest_arrangement_only_when_it_beats_the_noise() {
    use wgtrain::tune::{MIN_GAIN, TuneRow, choose};
    let fast = Tuning {
        tile_k: 64,
        ..Tuning::default()
    };
    let row = |tuning: Tuning, rounds: [f64; 2], defaults: f64| {
        let median = 0.5 * (rounds[0] + rounds[1]);
        TuneRow {
            arrangement: tuning.changes(),
            tuning,
            round_medians: rounds.to_vec(),
            median_epoch_secs: median,
            speed_vs_defaults: defaults / median,
        }
    };
    // 10% faster with 1% spread: kept.
    let rows = [
        row(fast, [0.9, 0.9], 1.0),
        row(Tuning::default(), [1.0, 1.01], 1.0),
    ];
    let (chosen, noise) = choose(&rows);
    assert_eq!(chosen, fast);
    assert!(
        (noise - MIN_GAIN).abs() < 1e-12,
        "the floor, above the 1% spread: {noise}"
    );
    // 10% faster, but rounds that spread 20%: not kept.
    let rows = [
        row(fast, [0.8, 1.0], 1.0),
        row(Tuning::default(), [1.0, 1.0], 1.0),
    ];
    assert_eq!(choose(&rows).0, Tuning::default());
    // 1% faster: under the floor, not kept.
    let rows = [
        row(fast, [0.99, 0.99], 1.0),
        row(Tuning::default(), [1.0, 1.0], 1.0),
    ];
    assert_eq!(choose(&rows).0, Tuning::default());
}

/// Byte size naga gives the WGSL struct `name` in shader family `family`.
fn wgsl_struct_size(family: &str, name: &str) -> u32 {
    let source = shaders::assembled(family, &Tuning::default()).unwrap();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let (handle, _) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{family}: no struct {name}"));
    layouter[handle].size
}

#[test]
fn uniform_structs_match_their_wgsl_sizes() {
    use wgtrain::gpu::uniforms::*;
    for (family, name, rust) in [
        ("batch", "Step", std::mem::size_of::<StepUniform>()),
        ("matmul", "Model", std::mem::size_of::<ModelHyper>()),
        (
            "matmul",
            "MatmulParams",
            std::mem::size_of::<MatmulParams>(),
        ),
        ("batch", "GatherParams", std::mem::size_of::<GatherParams>()),
        (
            "softmax_xent",
            "XentParams",
            std::mem::size_of::<XentParams>(),
        ),
    ] {
        assert_eq!(wgsl_struct_size(family, name) as usize, rust, "{name}");
        // Uniform structs are bound whole: WebGPU wants a multiple of 16 bytes.
        assert_eq!(rust % 16, 0, "{name}");
    }
}

/// Fails unless every row passed and ran cases.
fn assert_rows_pass(ctx: &wgtrain::gpu::GpuContext, rows: &[wgtrain::check::CheckRow]) {
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "{}: {} {:?} (worst {:.3} of tolerance)",
                r.check, r.detail, r.error, r.worst
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "on {}:\n{}",
        ctx.describe(),
        failed.join("\n")
    );
    assert!(rows.iter().all(|r| r.cases > 0), "every check ran cases");
}

/// One test per WGSL entry point with a check, named after it, so that `cargo test <kernel>`
/// runs exactly that kernel's check (on whatever adapter wgpu finds).
macro_rules! kernel_tests {
    ($($test:ident => $kernel:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let Some(ctx) = gpu() else { return };
                assert_rows_pass(&ctx, &wgtrain::check::run_kernel(&ctx, $kernel));
            }
        )*
        /// The kernels the tests above name, in order.
        const TESTED_KERNELS: &[&str] = &[$($kernel),*];
    };
}

kernel_tests! {
    gather_batch_matches_the_cpu_reference => "gather_batch",
    activation_forward_matches_the_cpu_reference => "activation_forward",
    activation_backward_matches_the_cpu_reference => "activation_backward",
    dropout_forward_matches_the_cpu_reference => "dropout_forward",
    conv2d_forward_matches_the_cpu_reference => "conv2d_forward",
    conv2d_backward_input_matches_the_cpu_reference => "conv2d_backward_input",
    conv2d_backward_params_matches_the_cpu_reference => "conv2d_backward_params",
    max_pool2d_forward_matches_the_cpu_reference => "max_pool2d_forward",
    max_pool2d_backward_matches_the_cpu_reference => "max_pool2d_backward",
    update_matches_the_cpu_reference => "update",
    matmul_matches_the_cpu_reference => "matmul",
    softmax_xent_matches_the_cpu_reference => "softmax_xent",
    matmul_gather_matches_the_cpu_reference => "matmul_gather",
    matmul_softmax_xent_matches_the_cpu_reference => "matmul_softmax_xent",
    matmul_update_matches_the_cpu_reference => "matmul_update",
}

/// batch_stats sums what softmax_xent wrote, so softmax_xent's check runs it too (its row
/// is "softmax_xent + batch_stats").
#[test]
fn batch_stats_matches_the_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let rows = wgtrain::check::run_kernel(&ctx, "softmax_xent");
    assert!(
        rows.iter().all(|r| r.check.contains("batch_stats")),
        "{rows:?}"
    );
    assert_rows_pass(&ctx, &rows);
}

#[test]
fn every_wgsl_entry_point_has_a_check_and_a_test_of_its_name() {
    // Checked by another kernel's check (see batch_stats_matches_the_cpu_reference).
    const CHECKED_WITH_ANOTHER: &[&str] = &["batch_stats"];
    assert_eq!(TESTED_KERNELS, wgtrain::check::kernels().as_slice());
    let mut entry_points = Vec::new();
    for (name, source) in shaders::FAMILIES {
        let mut lines = source.lines();
        while let Some(line) = lines.next() {
            if line.trim_start().starts_with("@compute") {
                let signature = lines.next().unwrap_or_default();
                let name_of = signature
                    .trim_start()
                    .strip_prefix("fn ")
                    .and_then(|rest| rest.split('(').next())
                    .unwrap_or_else(|| panic!("{name}: no fn after @compute"));
                entry_points.push(name_of.to_string());
            }
        }
    }
    assert!(!entry_points.is_empty());
    for entry in &entry_points {
        assert!(
            wgtrain::check::kernels().contains(&entry.as_str())
                || CHECKED_WITH_ANOTHER.contains(&entry.as_str()),
            "WGSL entry point {entry} has no check of its name"
        );
    }
}

#[test]
fn whole_epochs_match_the_cpu_engine_and_packing_changes_nothing() {
    let Some(ctx) = gpu() else { return };
    assert_rows_pass(&ctx, &pollster::block_on(wgtrain::check::run_engines(&ctx)));
}

#[test]
fn training_steps_match_the_cpu_for_every_activation_momentum_and_penalty() {
    let Some(ctx) = gpu() else { return };
    for activation in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        for momentum in [false, true] {
            for (l1, l2) in [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-3)] {
                let c = pollster::block_on(check_epoch(
                    &ctx,
                    activation,
                    momentum,
                    l1,
                    l2,
                    Optimizer::Sgd,
                    &[37, 17, 5],
                ))
                .unwrap();
                assert!(
                    c.ratio <= 1.0,
                    "{activation:?} momentum={momentum} l1={l1} l2={l2}: {}",
                    c.detail
                );
            }
        }
    }
    let c = pollster::block_on(check_epoch(
        &ctx,
        Activation::Tanh,
        false,
        0.0,
        1e-3,
        Optimizer::Adam,
        &[37, 17, 5],
    ))
    .unwrap();
    assert!(c.ratio <= 1.0, "Adam: {}", c.detail);
    // Wider than one matmul tile: the softmax runs as a dispatch of its own; one layer (softmax
    // regression): the gather does; ten layers: hidden input gradients of their own, and more
    // layers than one matmul_update dispatch covers (eight), so two.
    for widths in [
        &[37, 17, 20][..],
        &[37, 5],
        &[37, 9, 8, 7, 6, 5, 6, 7, 8, 9, 5],
    ] {
        let c = pollster::block_on(check_epoch(
            &ctx,
            Activation::Tanh,
            true,
            0.0,
            0.0,
            Optimizer::Sgd,
            widths,
        ))
        .unwrap();
        assert!(c.ratio <= 1.0, "{widths:?}: {}", c.detail);
    }
}

fn tiny_engine_pair(ctx: &wgtrain::gpu::GpuContext) -> (GpuEngine, Arc<Dataset>, TrainConfig) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 300, 60, 6, 3, true);
    let data = Arc::new(Dataset::load(dir.path(), 0.2, 1).unwrap());
    let config = TrainConfig {
        layers: vec![36, 12, 3],
        batch_size: 32,
        ..TrainConfig::default()
    };
    let params = Params::init(&config.layers, config.activation, config.init, 1).unwrap();
    let mut engine = GpuEngine::new(ctx.clone(), &params, config.batch_size).unwrap();
    engine.upload(Arc::clone(&data)).unwrap();
    (engine, data, config)
}

/// The weights after three epochs of the tiny network from seed 1, and how many command
/// buffers its last epoch was submitted in.
fn trained_three_epochs(ctx: &wgtrain::gpu::GpuContext) -> (Vec<f32>, usize) {
    let (mut engine, data, config) = tiny_engine_pair(ctx);
    for epoch in 1..=3 {
        wait(engine.train_epoch(&epoch_order(1, epoch, data.train.len), &config.hyper())).unwrap();
    }
    (
        wait(engine.params()).unwrap().values,
        engine.submissions_last_epoch(),
    )
}

/// The weights after three epochs of the tiny network from seed 1.
fn weights_after_three_epochs(ctx: &wgtrain::gpu::GpuContext) -> Vec<f32> {
    trained_three_epochs(ctx).0
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn two_gpu_runs_with_the_same_seed_give_bit_identical_weights() {
    let Some(ctx) = gpu() else { return };
    let (a, b) = (
        weights_after_three_epochs(&ctx),
        weights_after_three_epochs(&ctx),
    );
    assert!(same_bits(&a, &b), "weights differ between identical runs");
}

/// The tuning knobs (gather fusion, matmul's k step, steps per submission, the tile loop's
/// form) may change speed, never results: every arrangement trains to the same bits. The tiny network's first layer
/// has k = 36, so the k step's masked tail differs between 16 (three passes) and 64 (one); its
/// 240 training rows are 8 steps of 32, submitted whole or in parts of 3, 3 and 2.
#[test]
fn a_gpu_run_never_builds_the_f32_images_the_cpu_path_reads() {
    // The GPU z-scores on the device from the bytes; the f32 copies (150 MB for Fashion-MNIST's
    // training split) are made on first use, and a GPU run must not be that use.
    let Some(ctx) = gpu() else { return };
    let (mut engine, data, config) = tiny_engine_pair(&ctx);
    let stats =
        wait(engine.train_epoch(&epoch_order(1, 1, data.train.len), &config.hyper())).unwrap();
    assert!(stats.val.is_some());
    wait(engine.evaluate(wgtrain::data::SplitName::Test)).unwrap();
    for split in [&data.train, &data.val, &data.test] {
        assert!(!split.images_made());
    }
    let mut cpu = CpuEngine::new(&wait(engine.params()).unwrap(), 1, 32).unwrap();
    cpu.upload(Arc::clone(&data)).unwrap();
    assert!(data.train.images_made() && data.val.images_made());
}

#[test]
fn every_kernel_arrangement_trains_to_the_same_bits() {
    let Some(ctx) = gpu() else { return };
    let mut arranged = ctx.clone();
    arranged.tuning = Tuning::default();
    let (reference, submissions) = trained_three_epochs(&arranged);
    assert_eq!(submissions, 1, "an epoch is one submission by default");
    for tile_k in Tuning::TILE_K_CHOICES {
        for fuse_gather in [false, true] {
            for (submit_every, expected) in [(0, 1), (3, 3)] {
                for prefetch in [false, true] {
                    arranged.tuning = Tuning {
                        fuse_gather,
                        tile_k,
                        submit_every,
                        prefetch,
                    };
                    let (weights, submissions) = trained_three_epochs(&arranged);
                    assert!(
                        same_bits(&weights, &reference),
                        "{:?} trains to other weights than {:?}",
                        arranged.tuning,
                        Tuning::default()
                    );
                    assert_eq!(submissions, expected, "{:?}", arranged.tuning);
                }
            }
        }
    }
}

/// 300 + 60 grey 6×6 images of 3 classes (split 80/20, seed 1), the directory holding them,
/// and their shape.
fn six_by_six_images() -> (tempfile::TempDir, Arc<Dataset>, wgtrain::model::ImageShape) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 300, 60, 6, 3, true);
    let data = Arc::new(Dataset::load(dir.path(), 0.2, 1).unwrap());
    let input = wgtrain::model::ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    (dir, data, input)
}

#[test]
fn a_networks_epoch_submitted_in_parts_trains_to_the_same_bits() {
    use wgtrain::model::Init;
    use wgtrain::model::{Layer, Network};
    let Some(ctx) = gpu() else { return };
    let (_dir, data, input) = six_by_six_images();
    let layers = [
        Layer::Conv2d {
            filters: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
            activation: Activation::Relu,
        },
        Layer::MaxPool2d {
            window: 2,
            stride: 2,
        },
        Layer::Dropout { p: 0.25 },
        Layer::Dense {
            units: 3,
            activation: Activation::None,
        },
    ];
    let net = Network::plan(input, &layers, 3).unwrap();
    let params = Params::init_model(Arc::new(net), Init::Pytorch, 1);
    let config = TrainConfig {
        batch_size: 32,
        ..TrainConfig::default()
    };
    let train = |submit_every: u32| -> (Vec<f32>, usize) {
        let mut arranged = ctx.clone();
        arranged.tuning = Tuning {
            submit_every,
            ..Tuning::default()
        };
        let mut engine = GpuEngine::new(arranged, &params, config.batch_size).unwrap();
        engine.upload(Arc::clone(&data)).unwrap();
        for epoch in 1..=2 {
            wait(engine.train_epoch(&epoch_order(1, epoch, data.train.len), &config.hyper()))
                .unwrap();
        }
        (
            wait(engine.params()).unwrap().values,
            engine.submissions_last_epoch(),
        )
    };
    let (whole, one) = train(0);
    assert_eq!(one, 1, "an epoch is one submission by default");
    // 240 training rows at batch 32: 8 steps, submitted 3, 3 and 2 (with validation).
    let (parts, three) = train(3);
    assert_eq!(three, 3);
    assert!(
        same_bits(&whole, &parts),
        "submitting in parts changed the weights"
    );
}

#[test]
fn gpu_memory_stays_flat_from_epoch_to_epoch() {
    let Some(ctx) = gpu() else { return };
    let (mut engine, data, config) = tiny_engine_pair(&ctx);
    let counts = || {
        let c = ctx.device.get_internal_counters();
        (
            c.hal.buffers.read(),
            c.hal.bind_groups.read(),
            c.hal.buffer_memory.read(),
        )
    };
    wait(engine.train_epoch(&epoch_order(1, 1, data.train.len), &config.hyper())).unwrap();
    engine.keep_best().unwrap();
    let after_first = counts();
    for epoch in 2..=5 {
        wait(engine.train_epoch(&epoch_order(1, epoch, data.train.len), &config.hyper())).unwrap();
        engine.keep_best().unwrap();
        wait(engine.evaluate(wgtrain::data::SplitName::Test)).unwrap();
    }
    assert_eq!(
        counts(),
        after_first,
        "(buffers, bind groups, buffer bytes) grew after the first epoch"
    );
}

#[test]
fn gpu_epoch_on_fashion_mnist_matches_the_cpu_epoch() {
    let Some(ctx) = gpu() else { return };
    let config = TrainConfig::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/momentum.toml"),
        &[],
    )
    .unwrap();
    let data = Arc::new(Dataset::load(&fashion_mnist(), config.val_fraction, config.seed).unwrap());
    let params = Params::init(&config.layers, config.activation, config.init, config.seed).unwrap();
    let mut cpu = CpuEngine::new(&params, 0, config.batch_size).unwrap();
    let mut gpu = GpuEngine::new(ctx.clone(), &params, config.batch_size).unwrap();
    cpu.upload(Arc::clone(&data)).unwrap();
    gpu.upload(Arc::clone(&data)).unwrap();
    let order = epoch_order(config.seed, 1, data.train.len);
    let c = wait(cpu.train_epoch(&order, &config.hyper())).unwrap();
    let g = wait(gpu.train_epoch(&order, &config.hyper())).unwrap();
    // 375 f32 steps from identical weights and batches; only summation order differs, so the
    // losses agree to rounding. The bound: loss rel 1e-3, params max abs 1e-3.
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs();
    assert!(
        rel(c.loss_sum, g.loss_sum) < 1e-3,
        "train loss {} vs {}",
        c.loss_sum,
        g.loss_sum
    );
    let (cv, gv) = (c.val.unwrap(), g.val.unwrap());
    assert!(
        rel(cv.loss, gv.loss) < 1e-3,
        "val loss {} vs {}",
        cv.loss,
        gv.loss
    );
    assert!(
        (cv.accuracy - gv.accuracy).abs() < 2e-3,
        "val accuracy {} vs {}",
        cv.accuracy,
        gv.accuracy
    );
    let max = wait(cpu.params())
        .unwrap()
        .values
        .iter()
        .zip(&wait(gpu.params()).unwrap().values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-3, "weights differ by up to {max}");
}

#[test]
fn a_buffer_beyond_the_adapters_limits_is_a_clear_error() {
    let Some(ctx) = gpu() else { return };
    let too_big = ctx.limits.max_storage_buffer_binding_size + 4;
    let err = wgtrain::gpu::buffers::storage_zeroed(&ctx, "train_pixels", too_big).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("train_pixels") && text.contains("max_"),
        "{text}"
    );
}

#[test]
fn a_lost_device_is_a_clear_error_not_a_panic() {
    let Some(ctx) = gpu() else { return };
    let (mut engine, data, config) = tiny_engine_pair(&ctx);
    wait(engine.train_epoch(&epoch_order(1, 1, data.train.len), &config.hyper())).unwrap();
    ctx.device.destroy();
    let err =
        wait(engine.train_epoch(&epoch_order(1, 2, data.train.len), &config.hyper())).unwrap_err();
    assert!(err.to_string().contains("lost"), "{err}");
}

#[test]
fn a_profile_times_every_kernel_family_of_a_step() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 300, 60, 6, 3, true);
    let data = Arc::new(Dataset::load(dir.path(), 0.2, 1).unwrap());
    let config = TrainConfig {
        layers: vec![36, 12, 7, 3],
        batch_size: 32,
        ..TrainConfig::default()
    };
    let model = config.model_for(data.image_size, data.classes).unwrap();
    let models = wgtrain::gpu::GpuModels::new(ctx.clone(), &model, 32, 1).unwrap();
    if !models.can_profile() {
        let e = wgtrain::bench::profile_gpu(&ctx, &config, &data, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("timestamp"), "{e}");
        return;
    }
    for fuse_gather in [false, true] {
        let mut ctx = ctx.clone();
        ctx.tuning.fuse_gather = fuse_gather;
        let p = wgtrain::bench::profile_gpu(&ctx, &config, &data, 32).unwrap();
        // 240 training rows at batch 32: every step fits one query set.
        assert_eq!(p.steps, 8);
        // [36, 12, 7, 3]: the gather (unless fused), three forward matmuls (the output
        // layer's with the softmax, which also writes the input gradient below it), one more
        // input gradient, and one matmul_update for all three layers.
        assert_eq!(p.dispatches_per_step, usize::from(!fuse_gather) + 3 + 1 + 1);
        let per_family: Vec<(&str, usize)> = p
            .families
            .iter()
            .map(|f| (f.family, f.dispatches_per_step))
            .collect();
        let first = if fuse_gather {
            vec![("matmul forward, gathered (+bias, activation)", 1)]
        } else {
            vec![
                ("gather_batch", 1),
                ("matmul forward (+bias, activation)", 1),
            ]
        };
        let rest = [
            ("matmul forward (+bias, activation)", 1),
            (
                "matmul forward (+bias) + softmax_xent (+ input gradient below)",
                1,
            ),
            (
                "matmul weight + bias gradients + update, every layer (+ batch sums)",
                1,
            ),
            ("matmul input gradient (× slope)", 1),
        ];
        // Families are listed in order, each once: the unfused first layer's forward adds to
        // the second layer's.
        let mut want: Vec<(&str, usize)> = first;
        for r in rest {
            match want.iter_mut().find(|w| w.0 == r.0) {
                Some(w) => w.1 += r.1,
                None => want.push(r),
            }
        }
        assert_eq!(per_family, want, "fuse_gather = {fuse_gather}");
        // The families partition the span from the first timestamp to the last.
        let sum: f64 = p.families.iter().map(|f| f.gpu_secs_per_step).sum();
        assert!(p.gpu_secs_per_step > 0.0);
        assert!(p.record_secs_per_step > 0.0);
        assert!((sum - p.gpu_secs_per_step).abs() <= 1e-9 + 1e-6 * p.gpu_secs_per_step);
    }
    // Ten layers: one matmul_update dispatch per eight layers, so two per step.
    let deep = [36, 9, 8, 7, 6, 5, 6, 7, 8, 9, 3];
    let config = TrainConfig {
        layers: deep.to_vec(),
        ..config
    };
    let p = wgtrain::bench::profile_gpu(&ctx, &config, &data, 32).unwrap();
    // Ten layers: the gather (unless fused), ten forward matmuls, eight input gradients (the
    // fused softmax writes the ninth), two matmul_updates.
    assert_eq!(
        p.dispatches_per_step,
        usize::from(!ctx.tuning.fuse_gather) + 10 + 8 + 2
    );
    let updates = p
        .families
        .iter()
        .find(|f| f.family.starts_with("matmul weight"))
        .map(|f| f.dispatches_per_step);
    assert_eq!(updates, Some(2));
}

/// A network whose first layer is dropout (on the input images): two epochs on the GPU match
/// the CPU engine's. The first layer has no layer below to pass its gradient to, and must not
/// write one anywhere.
#[test]
fn a_network_that_starts_with_dropout_trains_as_on_the_cpu() {
    use wgtrain::model::Init;
    use wgtrain::model::{Layer, Network};
    let Some(ctx) = gpu() else { return };
    let (_dir, data, input) = six_by_six_images();
    let layers = [
        Layer::Dropout { p: 0.2 },
        Layer::Dense {
            units: 8,
            activation: Activation::Tanh,
        },
        Layer::Dense {
            units: 3,
            activation: Activation::None,
        },
    ];
    let net = Network::plan(input, &layers, 3).unwrap();
    let params = Params::init_model(Arc::new(net), Init::Pytorch, 1);
    let config = TrainConfig {
        batch_size: 32,
        momentum: true,
        ..TrainConfig::default()
    };
    let mut cpu = CpuEngine::new(&params, 1, config.batch_size).unwrap();
    let mut gpu = GpuEngine::new(ctx.clone(), &params, config.batch_size).unwrap();
    cpu.upload(Arc::clone(&data)).unwrap();
    gpu.upload(Arc::clone(&data)).unwrap();
    for epoch in 1..=2 {
        let order = epoch_order(1, epoch, data.train.len);
        let c = wait(cpu.train_epoch(&order, &config.hyper())).unwrap();
        let g = wait(gpu.train_epoch(&order, &config.hyper())).unwrap();
        let rel = (c.loss_sum - g.loss_sum).abs() / c.loss_sum.abs();
        assert!(
            rel < 1e-4,
            "epoch {epoch}: train loss {} vs {}",
            c.loss_sum,
            g.loss_sum
        );
    }
    let (c, g) = (
        wait(cpu.params()).unwrap().values,
        wait(gpu.params()).unwrap().values,
    );
    let max = c
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "parameters differ by up to {max}");
}
