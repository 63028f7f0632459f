//! Training networks of layers: the `network` config key and its errors, the CPU engine's
//! layers path against the fused dense path it generalises, and a small convolutional network
//! through the binary: train, model file, eval, predict, exact resume, gradcheck, and the GPU
//! path's refusal.

use std::sync::Arc;

use wgtrain::config::{ConfigError, TrainConfig};
use wgtrain::cpu::{CpuEngine, CpuPath};
use wgtrain::data::{Dataset, SplitName, epoch_order};
use wgtrain::engine::{Engine, wait};
use wgtrain::model::{Activation, Init, Params};
use wgtrain::rundir::RunDir;

use crate::common::{stderr, wgtrain, write_dataset};

fn from_str(text: &str, sets: &[&str]) -> Result<TrainConfig, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    TrainConfig::from_toml_str(text, std::path::Path::new("cnn.toml"), "cnn", &sets)
}

/// A small CNN for 8×8 images of 4 classes: conv → pool → dropout → dense → logits.
const SMALL_CNN: &str = r#"
network = [
  { conv = 4, kernel = 3, padding = 1, activation = "relu" },
  { max_pool = 2 },
  { dropout = 0.25 },
  { dense = 12, activation = "tanh" },
  { dense = 4 },
]
learning_rate = 0.05
batch_size = 16
init = "pytorch"
epochs = 3
early_stopping = false
"#;

#[test]
fn network_entries_take_pytorchs_defaults_and_plan_against_the_images() {
    let config = from_str(SMALL_CNN, &[]).unwrap();
    let net = config.model_for((8, 8), 4).unwrap();
    assert!(
        net.declared_widths().is_none(),
        "a network config is planned on the images"
    );
    // conv 4 (3×3, stride 1, padding 1) keeps 8×8; the pool's stride is its window.
    let shapes: Vec<(usize, usize, usize)> = net
        .outputs
        .iter()
        .map(|s| (s.channels, s.height, s.width))
        .collect();
    assert_eq!(
        shapes,
        [(4, 8, 8), (4, 4, 4), (4, 4, 4), (12, 1, 1), (4, 1, 1)]
    );
    assert_eq!(net.param_count, (4 * 9 + 4) + (64 * 12 + 12) + (12 * 4 + 4));
    // The same config on images of another size plans another network, or says why not.
    let e = config.model_for((1, 1), 4).unwrap_err().to_string();
    assert!(
        e.contains("layer 2 (max pool") && e.contains("1×1 images"),
        "{e}"
    );
    let e = config.model_for((8, 8), 10).unwrap_err().to_string();
    assert!(e.contains("layer 5") && e.contains("10 classes"), "{e}");
}

#[test]
fn bad_network_entries_are_errors_naming_the_layer_before_any_data_is_read() {
    for (text, sets, wants) in [
        (SMALL_CNN, &["layers=[64, 4]"][..], "layers"),
        (SMALL_CNN, &["activation=relu"][..], "activation"),
        ("network = []", &[][..], "needs at least one layer"),
        (
            "network = [{ conv = 4, dense = 3 }]",
            &[][..],
            "layer 1: says both conv and dense",
        ),
        (
            "network = [{ dense = 4 }, { kernel = 3 }]",
            &[][..],
            "layer 2: says none of",
        ),
        (
            "network = [{ max_pool = 2, padding = 1 }, { dense = 4 }]",
            &[][..],
            "layer 1: max_pool takes no padding",
        ),
        (
            "network = [{ dropout = 0.5, activation = \"relu\" }, { dense = 4 }]",
            &[][..],
            "dropout takes no activation",
        ),
        ("network = [{ conv = 4, kernl = 3 }]", &[][..], "kernl"),
    ] {
        let e = from_str(text, sets).unwrap_err().to_string();
        assert!(e.contains(wants), "{text} {sets:?}: {e}");
    }
}

#[test]
fn a_network_config_round_trips_through_the_run_directorys_toml() {
    let config = from_str(SMALL_CNN, &["seed=7"]).unwrap();
    let text = config.to_toml();
    assert!(!text.contains("activation = \"tanh\"\nlayers"), "{text}");
    let back = from_str(&text, &[]).unwrap();
    assert_eq!(back, config);
}

/// A dense-only network trains on the CPU engine's layers path exactly as the network of its
/// widths trains on the fused dense path: same initial draws, same data order, same update
/// (to f32 rounding of the two GEMM paths).
#[test]
fn the_layers_path_trains_a_dense_network_as_the_fused_dense_path_trains_its_widths() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 200, 40, 6, 3, false);
    let data = Arc::new(Dataset::load(dir.path(), 0.2, 1).unwrap());
    let text = r#"
network = [{ dense = 10, activation = "tanh" }, { dense = 3 }]
learning_rate = 0.1
batch_size = 32
"#;
    let config = from_str(text, &[]).unwrap();
    let model = config.model_for(data.image_size, data.classes).unwrap();
    let network = Params::init_model(model, Init::Xavier, 5);
    let mlp = Params::init(&[36, 10, 3], Activation::Tanh, Init::Xavier, 5).unwrap();
    assert_eq!(network.values, mlp.values, "the same initial draws");
    // The network of dense layers planned on images takes the fused dense path as the widths'
    // network does; forced through the layers path, it trains the same to f32 rounding.
    assert_eq!(CpuPath::for_network(&network.model), CpuPath::FusedDense);
    let mut a = CpuEngine::on_path(&network, 1, 32, CpuPath::Layers).unwrap();
    let mut b = CpuEngine::new(&mlp, 1, 32).unwrap();
    a.upload(Arc::clone(&data)).unwrap();
    b.upload(Arc::clone(&data)).unwrap();
    let hyper = config.hyper();
    for epoch in 1..=2 {
        let order = epoch_order(1, epoch, data.train.len);
        let (sa, sb) = (
            wait(a.train_epoch(&order, &hyper)).unwrap(),
            wait(b.train_epoch(&order, &hyper)).unwrap(),
        );
        assert_eq!(sa.correct, sb.correct, "epoch {epoch}");
        assert!(
            (sa.loss_sum - sb.loss_sum).abs() <= 1e-4 * sb.loss_sum,
            "epoch {epoch}"
        );
    }
    let (pa, pb) = (
        wait(a.params()).unwrap().values,
        wait(b.params()).unwrap().values,
    );
    let worst = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "parameters differ by {worst}");
    // And it refuses the other engine's parameters, saying what each is.
    let e = a.set_params(&mlp).unwrap_err().to_string();
    assert!(
        e.contains("layers [36, 10, 3]") && e.contains("network"),
        "{e}"
    );
}

/// The whole application on a small CNN: train (with dropout) on the CPU, the model file's
/// PyTorch names, eval and predict on it, an interrupted-and-resumed run equal to an
/// uninterrupted one bit for bit (dropout masks included), and gradcheck.
#[test]
fn a_small_cnn_trains_saves_evaluates_predicts_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 240, 60, 8, 4, true);
    let config = tmp.path().join("cnn.toml");
    std::fs::write(&config, SMALL_CNN).unwrap();
    let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
    let run = |out: &std::path::Path, extra: &[&str]| {
        let out = out.to_str().unwrap();
        let mut args = vec!["train", "--data", data, "--device", "cpu", "--threads", "2"];
        if extra.contains(&"--resume") {
            args.extend_from_slice(extra);
        } else {
            args.extend_from_slice(&["--config", config, "--out", out]);
            args.extend_from_slice(extra);
        }
        let o = wgtrain(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let whole = tmp.path().join("whole");
    let stdout = run(&whole, &[]);
    // The torchinfo-style summary comes first.
    assert!(stdout.contains("| conv 4, 3×3, stride 1, pad 1, relu | [B, 4, 8, 8] | 40 |"));
    assert!(stdout.contains("872 parameters"), "{stdout}");
    let dir = RunDir::new(&whole);
    let summary = dir.read_summary().unwrap();
    assert_eq!(summary.status, "finished");
    assert!(summary.test_accuracy > 0.5, "{summary:?}");

    // `table` names the network, not the default layers a network config leaves unused.
    let o = wgtrain(&["table", whole.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| network conv 4 3×3 relu → pool 2") && !table.contains("784"),
        "{table}"
    );

    let model = wgtrain::checkpoint::load_model(&dir.model()).unwrap();
    let names: Vec<(String, Vec<usize>)> = model
        .named_tensors()
        .into_iter()
        .map(|(n, d, _)| (n, d))
        .collect();
    assert_eq!(
        names[..2],
        [
            ("conv1.weight".to_string(), vec![4, 1, 3, 3]),
            ("conv1.bias".to_string(), vec![4])
        ]
    );
    assert_eq!(names[2].0, "fc1.weight");

    let model_path = dir.model();
    let model_arg = model_path.to_str().unwrap();
    let o = wgtrain(&["eval", "--model", model_arg, "--data", data, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (eval["test_accuracy"].as_f64().unwrap() - summary.test_accuracy).abs() < 1e-9,
        "eval {eval} against the run's {}",
        summary.test_accuracy
    );
    let images = format!("{data}/t10k-images-idx3-ubyte.gz");
    let o = wgtrain(&["predict", "--model", model_arg, &images, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 60);

    // Two epochs, then a resume to three: the same bytes as three at once.
    let split = tmp.path().join("split");
    run(&split, &["--set", "epochs=2"]);
    run(
        &split,
        &["--set", "epochs=3", "--resume", split.to_str().unwrap()],
    );
    let bytes = |d: &std::path::Path| std::fs::read(RunDir::new(d).checkpoint()).unwrap();
    assert!(bytes(&whole) == bytes(&split), "the resumed run differs");

    let o = wgtrain(&[
        "gradcheck",
        "--config",
        config,
        "--data",
        data,
        "--samples",
        "8",
    ]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}{table}", stderr(&o));
    for tensor in ["conv1.weight[", "conv1.bias[", "fc1.weight[", "fc2.bias["] {
        assert!(table.contains(tensor), "{tensor} unchecked: {table}");
    }
}

/// A CNN on the GPU path (every WGSL kernel of a network, on whatever adapter wgpu finds)
/// trains as on the CPU path: the same metrics to rounding, a rerun repeats bit for bit, and a
/// resumed run is bit-identical to an uninterrupted one (dropout masks included).
#[test]
fn a_cnn_trains_on_the_gpu_as_on_the_cpu_repeats_and_resumes_exactly() {
    if crate::common::gpu().is_none() {
        return crate::common::skip("a GPU adapter", "WGTRAIN_REQUIRE_GPU");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 240, 60, 8, 4, false);
    let config = tmp.path().join("cnn.toml");
    std::fs::write(&config, SMALL_CNN).unwrap();
    let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
    let run = |device: &str, out: &std::path::Path, extra: &[&str]| {
        let out_s = out.to_str().unwrap();
        let mut args = vec![
            "train",
            "--data",
            data,
            "--device",
            device,
            "--threads",
            "1",
        ];
        if extra.contains(&"--resume") {
            args.extend_from_slice(extra);
        } else {
            args.extend_from_slice(&["--config", config, "--out", out_s, "--quiet"]);
            args.extend_from_slice(extra);
        }
        let o = wgtrain(&args);
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        RunDir::new(out)
    };
    let metrics = |dir: &RunDir| -> Vec<Vec<f64>> {
        std::fs::read_to_string(dir.metrics())
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').take(5).map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let cpu = run("cpu", &tmp.path().join("cpu"), &[]);
    let gpu = run("gpu", &tmp.path().join("gpu"), &[]);
    let (c, g) = (metrics(&cpu), metrics(&gpu));
    assert_eq!(c.len(), 3);
    for (c, g) in c.iter().zip(&g) {
        for (a, b) in c.iter().zip(g) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "cpu {c:?} gpu {g:?}"
            );
        }
    }
    let summary = |dir: &RunDir| dir.read_summary().unwrap();
    assert_eq!(summary(&gpu).device, "gpu");
    assert!((summary(&cpu).test_loss - summary(&gpu).test_loss).abs() < 1e-4);

    let bytes = |dir: &RunDir| std::fs::read(dir.checkpoint()).unwrap();
    let again = run("gpu", &tmp.path().join("again"), &[]);
    assert!(bytes(&gpu) == bytes(&again), "a GPU rerun differs");
    let split_dir = tmp.path().join("split");
    run("gpu", &split_dir, &["--set", "epochs=2"]);
    let split_arg = split_dir.to_str().unwrap();
    let split = run(
        "gpu",
        &split_dir,
        &["--set", "epochs=3", "--resume", split_arg],
    );
    assert!(bytes(&gpu) == bytes(&split), "the resumed GPU run differs");
}

/// Every reduction on the CPU path (weight and bias gradients, batch losses, a split's sums)
/// is split into chunks fixed by the data, not by the threads, and summed in chunk order: a
/// network trains to the same bits on 1, 2 or 3 threads, on either CPU path, through
/// batches that do and do not fill the chunks, with dropout's masks in play.
#[test]
fn training_gives_the_same_bits_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 700, 150, 6, 3, false);
    let data = Arc::new(Dataset::load(dir.path(), 0.2, 1).unwrap());
    let networks = [
        "layers = [36, 24, 3]\nactivation = \"relu\"",
        r#"network = [
  { conv = 4, kernel = 3, padding = 1, activation = "relu" },
  { max_pool = 2 },
  { dropout = 0.25 },
  { dense = 8, activation = "relu" },
  { dense = 3 },
]"#,
    ];
    for network in networks {
        // 560 training rows: batches of 200 leave one of 160, batches of 128 one of 48.
        for batch in [128, 200] {
            let text = format!(
                "{network}\nlearning_rate = 0.05\nmomentum = true\nbatch_size = {batch}\ninit = \"xavier\""
            );
            let config = from_str(&text, &[]).unwrap();
            let model = config.model_for(data.image_size, data.classes).unwrap();
            let params = Params::init_model(model, config.init, 3);
            let hyper = config.hyper();
            let run = |threads: usize| {
                let mut engine = CpuEngine::new(&params, threads, batch).unwrap();
                engine.upload(Arc::clone(&data)).unwrap();
                let mut stats = Vec::new();
                for epoch in 1..=2 {
                    let order = epoch_order(1, epoch, data.train.len);
                    let s = wait(engine.train_epoch(&order, &hyper)).unwrap();
                    let val = s.val.unwrap();
                    stats.push((s.loss_sum.to_bits(), s.correct, val.loss.to_bits()));
                }
                let test = wait(engine.evaluate(SplitName::Test)).unwrap();
                stats.push((test.loss.to_bits(), test.samples, test.accuracy.to_bits()));
                let values = wait(engine.params()).unwrap().values;
                (
                    stats,
                    values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            };
            let one = run(1);
            for threads in [2, 3] {
                let other = run(threads);
                assert!(
                    one == other,
                    "{network} batch {batch}: 1 and {threads} threads differ: {:?} vs {:?}",
                    one.0,
                    other.0
                );
            }
        }
    }
}
