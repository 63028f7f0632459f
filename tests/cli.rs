//! The real binary end to end on tiny synthetic data, and once on the real Fashion-MNIST;
//! where a test is about a run's results rather than the command, it trains through the
//! library.

use std::path::Path;
use std::process::{Command, Output};

use wgtrain::checkpoint::load_model;
use wgtrain::config::TrainConfig;
use wgtrain::device::EngineKind;
use wgtrain::metrics::{Summary, metrics_header};
use wgtrain::run::{RunOptions, run_training};
use wgtrain::rundir::RunDir;

use crate::common::{fashion_mnist, stderr, wgtrain, write_dataset};

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

const TINY: &[&str] = &[
    "--set",
    "layers=[36, 10, 3]",
    "--set",
    "batch_size=16",
    "--set",
    "epochs=4",
    "--set",
    "init=\"xavier\"",
];

fn train_tiny(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--device") {
        args.extend(["--device", "cpu"]);
    }
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    wgtrain(&args)
}

#[test]
fn train_writes_the_run_directory_contract_and_eval_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 200, 50, 6, 3, true);
    let o = train_tiny(&data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let metrics = std::fs::read_to_string(RunDir::new(&out).metrics()).unwrap();
    let mut lines = metrics.lines();
    // The header is part of the CLI contract: other tools read these names.
    let header = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds";
    assert_eq!(metrics_header(), header);
    assert_eq!(lines.next(), Some(header));
    assert_eq!(lines.count(), 4);
    let config = std::fs::read_to_string(RunDir::new(&out).config()).unwrap();
    assert!(config.contains("layers = [36, 10, 3]"), "{config}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(RunDir::new(&out).summary()).unwrap())
            .unwrap();
    for key in [
        "test_accuracy",
        "test_loss",
        "best_epoch",
        "epochs_run",
        "stopped_early",
        "device",
        "seconds",
    ] {
        assert!(json.get(key).is_some(), "summary.json lacks {key}");
    }
    let summary = Summary::read(&RunDir::new(&out).summary()).unwrap();
    assert_eq!(summary.device, "cpu");
    assert!((0.0..=1.0).contains(&summary.test_accuracy));

    let model = load_model(&RunDir::new(&out).model()).unwrap();
    assert_eq!(model.model.declared_widths().unwrap().0, [36, 10, 3]);
    let named = model.named_tensors();
    assert_eq!(named[0].0, "fc1.weight");
    assert_eq!(
        named[0].1,
        vec![10, 36],
        "PyTorch nn.Linear layout [out, in]"
    );

    let e = wgtrain(&[
        "eval",
        "--model",
        RunDir::new(&out).model().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(e.status.success(), "{}", stderr(&e));
    let line: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert!((line["test_accuracy"].as_f64().unwrap() - summary.test_accuracy).abs() < 1e-12);
    assert!((line["test_loss"].as_f64().unwrap() - summary.test_loss).abs() < 1e-9);
}

#[test]
fn train_refuses_to_overwrite_a_run_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 100, 20, 6, 3, false);
    assert!(train_tiny(&data, &out, &[]).status.success());
    let before = std::fs::read(RunDir::new(&out).summary()).unwrap();
    assert_clean_failure(&train_tiny(&data, &out, &[]), "--force");
    assert_eq!(
        std::fs::read(RunDir::new(&out).summary()).unwrap(),
        before,
        "the earlier run is untouched"
    );
    assert!(train_tiny(&data, &out, &["--force"]).status.success());
}

#[test]
fn bad_inputs_exit_1_with_a_message_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 100, 20, 6, 3, true);
    let out = tmp.path().join("run");
    assert_clean_failure(
        &train_tiny(&data, &out, &["--set", "lr=0.1"]),
        "did you mean \"learning_rate\"",
    );
    assert_clean_failure(
        &train_tiny(&data, &out, &["--set", "batch_size=0"]),
        "batch_size",
    );
    assert_clean_failure(
        &train_tiny(&data, &out, &["--set", "layers=[784, 10]"]),
        "input width must equal the data's 36",
    );
    assert_clean_failure(
        &train_tiny(&data, &out, &["--set", "batch_size=1000"]),
        "batch_size",
    );
    assert_clean_failure(
        &train_tiny(&tmp.path().join("nowhere"), &out, &[]),
        "not found",
    );
    assert!(!out.exists(), "failed runs leave no run directory behind");
    let corrupt = tmp.path().join("corrupt");
    write_dataset(&corrupt, 100, 20, 6, 3, true);
    let f = corrupt.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &train_tiny(&corrupt, &out, &[]),
        "train-images-idx3-ubyte.gz",
    );
    assert_clean_failure(
        &wgtrain(&["train", "--config", "no/such.toml"]),
        "no/such.toml",
    );
    assert_clean_failure(
        &wgtrain(&["eval", "--model", "no/such.safetensors"]),
        "no/such.safetensors",
    );
}

#[test]
fn gradcheck_prints_the_papers_table_and_passes() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 40, 10, 6, 3, true);
    for act in ["tanh", "sigmoid", "relu"] {
        let o = wgtrain(&[
            "gradcheck",
            "--data",
            tmp.path().to_str().unwrap(),
            "--set",
            "layers=[36, 10, 3]",
            "--set",
            &format!("activation={act}"),
            "--set",
            "l2=0.01",
            "--set",
            "l1=0.01",
            "--set",
            "init=\"xavier\"",
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{act}: {}{stdout}", stderr(&o));
        assert!(stdout.contains("| fc1.bias["), "{stdout}");
        assert!(stdout.contains("| fc2.weight["), "{stdout}");
        assert!(stdout.contains("passed: all 6 differences"), "{stdout}");
    }
}

#[test]
fn gradcheck_of_a_network_larger_than_memory_is_a_clear_error() {
    // See: gradcheck built f64 copies of any network the config allowed, with no memory check
    // (4 billion parameters are 80 GB in f32 + f64 + an f64 gradient).
    let gb = 1_000_000_000;
    if wgtrain::host::available_memory_bytes().is_none_or(|free| free > 64 * gb) {
        eprintln!("skipped: this machine may hold 4 billion parameters");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 40, 10, 6, 3, true);
    let o = wgtrain(&[
        "gradcheck",
        "--data",
        tmp.path().to_str().unwrap(),
        "--set",
        "layers=[36, 100000000, 3]",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("GB of memory for the gradient check"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn table_summarises_runs_beside_the_papers_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 100, 20, 6, 3, true);
    let mut dirs = Vec::new();
    for seed in ["1", "2"] {
        let out = tmp.path().join(format!("run{seed}"));
        let o = train_tiny(
            &data,
            &out,
            &[
                "--seed",
                seed,
                "--set",
                "name=toy",
                "--set",
                "paper={test_accuracy = 0.9, test_loss = 0.3}",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        dirs.push(out.to_str().unwrap().to_string());
    }
    let mut args = vec!["table"];
    args.extend(dirs.iter().map(String::as_str));
    let o = wgtrain(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| toy |"))
        .expect(&stdout);
    assert!(row.contains("90.00%") && row.contains("| 2 |"), "{row}");

    // See: a row averaged as seeds runs of one name with other learning rates (89% ± 19 of a
    // run at 0.001 and two at 0.3), and counted one seed twice.
    let other = tmp.path().join("other-rate");
    let o = train_tiny(
        &data,
        &other,
        &[
            "--seed",
            "3",
            "--set",
            "name=toy",
            "--set",
            "learning_rate=0.3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (mixed, says) in [
        (
            other.to_str().unwrap(),
            "but their configs differ (learning_rate = ",
        ),
        (dirs[0].as_str(), "with seed 1: a row counts each seed once"),
    ] {
        let o = wgtrain(&["table", &dirs[0], &dirs[1], mixed]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

/// A run of `config` on `engine` into `out`, with its data in `data`, through the library
/// (as `wgtrain train` calls it).
fn train_in_library(config: &TrainConfig, data: &Path, out: &Path, engine: EngineKind) -> Summary {
    let opts = RunOptions {
        out: out.to_path_buf(),
        force: false,
        data_dir: Some(data.to_path_buf()),
        engine,
        resume: false,
        interrupt: None,
        datasets: None,
        stop_after: None,
    };
    run_training(config, &opts, |_, _| {}).unwrap()
}

/// `configs/softmax.toml` on the vendored Fashion-MNIST for a few epochs, on the CPU.
fn train_softmax_on_fashion_mnist(out: &Path, epochs: usize) -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/softmax.toml");
    let config = TrainConfig::load(&path, &[format!("epochs={epochs}")]).unwrap();
    train_in_library(
        &config,
        &fashion_mnist(),
        out,
        EngineKind::Cpu { threads: 0 },
    )
}

#[test]
fn softmax_on_real_fashion_mnist_reaches_80_percent_in_a_few_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let summary = train_softmax_on_fashion_mnist(&out, 3);
    assert!(
        summary.test_accuracy >= 0.80,
        "test accuracy {}",
        summary.test_accuracy
    );
    assert_eq!(summary.epochs_run, 3);
}

#[test]
fn diverging_run_exits_1_marks_the_summary_and_keeps_its_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 200, 50, 6, 3, true);
    let o = train_tiny(
        &data,
        &out,
        &[
            "--set",
            "learning_rate=1e30",
            "--set",
            "gradient=\"sum\"",
            "--set",
            "activation=\"relu\"",
        ],
    );
    assert_clean_failure(&o, "diverged");
    assert!(
        stderr(&o).contains("learning_rate"),
        "the message suggests a smaller learning rate"
    );
    let summary = Summary::read(&RunDir::new(&out).summary()).unwrap();
    assert!(
        summary.diverged && summary.status == "diverged",
        "{summary:?}"
    );
    let metrics = std::fs::read_to_string(RunDir::new(&out).metrics()).unwrap();
    assert!(metrics.starts_with(&metrics_header()));
}

#[test]
fn train_on_the_gpu_names_device_backend_and_adapter() {
    let Some(context) = crate::common::gpu() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 200, 50, 6, 3, true);
    // TINY's settings.
    let sets: Vec<String> = TINY
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect();
    let config =
        TrainConfig::from_toml_str("", Path::new("(built-in default)"), "momentum", &sets).unwrap();
    let gpu = EngineKind::Gpu {
        context: Box::new(context),
    };
    let summary = train_in_library(&config, &data, &out, gpu);
    assert_eq!(summary.device, "gpu");
    assert!(
        summary.adapter.is_some() && summary.backend.is_some(),
        "{summary:?}"
    );
    let cpu_out = tmp.path().join("cpu");
    let cpu = train_in_library(&config, &data, &cpu_out, EngineKind::Cpu { threads: 0 });
    assert!(
        (summary.test_accuracy - cpu.test_accuracy).abs() <= 0.003,
        "gpu {} cpu {}",
        summary.test_accuracy,
        cpu.test_accuracy
    );
}

#[test]
fn bench_prints_a_table_and_json_rows_for_each_device_and_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 40, 6, 3, true);
    let json = tmp.path().join("bench.jsonl");
    let mut devices = "cpu".to_string();
    if crate::common::gpu().is_some() {
        devices.push_str(",gpu");
    }
    let o = wgtrain(&[
        "bench",
        "--data",
        data.to_str().unwrap(),
        "--set",
        "layers=[36, 10, 3]",
        "--devices",
        &devices,
        "--batch-sizes",
        "16,64",
        "--warmup",
        "0",
        "--epochs",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}{stdout}", stderr(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * devices.split(',').count());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for row in &rows {
        let secs = row["median_epoch_secs"].as_f64().unwrap();
        assert!(
            secs > 0.0 && row["samples_per_sec"].as_f64().unwrap() > 0.0,
            "{row}"
        );
        assert!(
            row["min_epoch_secs"].as_f64().unwrap() <= secs
                && secs <= row["max_epoch_secs"].as_f64().unwrap()
        );
        // 240 training rows (the 20% validation split is cut away): 2·240·(2·(36·10 + 10·3) + 10·3)
        assert_eq!(
            row["flops_per_epoch"].as_f64().unwrap(),
            2.0 * 240.0 * (2.0 * 390.0 + 30.0)
        );
        // The CPU's rows are set against the machine's measured GEMM peak; a GPU has none.
        let share = row["share_of_floor"].as_f64();
        let peak = row["gemm_peak_gflops"].as_f64();
        if row["device"] == "cpu" {
            assert!(share.is_some_and(|s| s > 0.0 && s.is_finite()), "{row}");
            // The peak is there too, and the share is the row's rate over it.
            let (share, peak) = (share.unwrap(), peak.unwrap_or(f64::NAN));
            let gflops = row["gflops"].as_f64().unwrap();
            assert!((share - gflops / peak).abs() <= 1e-12 * share, "{row}");
            // Likewise against the cores' FMA peak.
            let fma_share = row["share_of_fma_peak"].as_f64().unwrap_or(f64::NAN);
            let fma = row["fma_peak_gflops"].as_f64().unwrap_or(f64::NAN);
            assert!(
                (fma_share - gflops / fma).abs() <= 1e-12 * fma_share,
                "{row}"
            );
        } else {
            assert_eq!((share, peak), (None, None), "{row}");
            assert!(row["share_of_fma_peak"].is_null(), "{row}");
            assert!(row["adapter_driver"].as_str().is_some(), "{row}");
        }
        // Every row carries where and when it was measured, and the command that measured it.
        let machine = &row["machine"];
        assert!(
            machine["command"]
                .as_str()
                .is_some_and(|c| c.contains("bench") && c.contains("16,64")),
            "{row}"
        );
        assert_eq!(machine["logical_cores"].as_u64(), Some(cores as u64));
        assert_eq!(machine["os"], std::env::consts::OS, "{row}");
        assert_eq!(machine["wgtrain_version"], env!("CARGO_PKG_VERSION"));
        let date = machine["date"].as_str().unwrap_or_default();
        assert!(
            date.len() == 10 && date.starts_with("20") && date.as_bytes()[4] == b'-',
            "{row}"
        );
        assert!(machine["cpu"].as_str().is_some_and(|c| !c.is_empty()));
        // Which kernels the CPU path ran, and the widest it could have.
        let kernels = wgtrain::cpu::CpuKernels::active().name();
        assert_eq!(machine["cpu_kernels"], kernels, "{row}");
        assert_eq!(
            machine["simd"],
            wgtrain::cpu::CpuKernels::widest().name(),
            "{row}"
        );
    }
    assert!(stdout.starts_with("machine: "), "{stdout}");
    assert!(
        stdout.contains("| cpu |") && stdout.contains("| 64 |"),
        "{stdout}"
    );
    assert!(stdout.contains("CPU f32 GEMM peak here: "), "{stdout}");
    assert!(stdout.contains("CPU f32 FMA peak here: "), "{stdout}");
    let bad = wgtrain(&[
        "bench",
        "--devices",
        "tpu",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_clean_failure(&bad, "unknown device \"tpu\"");
}

#[test]
fn bench_by_default_times_the_cpu_and_a_hardware_gpu_never_a_software_adapter() {
    // Without a GPU, `bench` timed lavapipe by default: minutes of silence for a figure
    // nobody asked for. Its default now takes what `--device auto` takes.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 40, 6, 3, true);
    let o = wgtrain(&[
        "bench",
        "--data",
        data.to_str().unwrap(),
        "--set",
        "layers=[36, 10, 3]",
        "--batch-sizes",
        "16",
        "--warmup",
        "0",
        "--epochs",
        "1",
    ]);
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{err}{stdout}");
    let hardware = pollster::block_on(wgtrain::gpu::GpuContext::open(
        &wgtrain::gpu::AdapterChoice {
            backend: None,
            adapter: None,
            allow_software: false,
        },
    ));
    assert!(stdout.contains("| cpu |"), "{stdout}");
    match hardware {
        Ok(context) => {
            assert!(stdout.contains("| gpu |"), "{stdout}");
            assert!(stdout.contains(&context.info.name), "{stdout}");
        }
        Err(_) => {
            assert!(!stdout.contains("| gpu |"), "{stdout}");
            assert!(!stdout.contains("adapter: "), "{stdout}");
            assert!(err.contains("note: --devices auto"), "{err}");
            if crate::common::gpu().is_some() {
                assert!(err.contains("--devices cpu,gpu times one anyway"), "{err}");
            }
        }
    }
}

/// `wgtrain` with the tuning file at `file`.
fn wgtrain_tuned(file: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(args)
        .env("WGTRAIN_TUNING_FILE", file)
        .envs(env.iter().copied())
        .output()
        .expect("run wgtrain")
}

#[test]
fn tune_keeps_the_fastest_arrangement_and_later_gpu_runs_start_from_it() {
    if crate::common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 40, 6, 3, true);
    let data = data.to_str().unwrap();
    let file = tmp.path().join("cache").join("tuning.toml");
    let tiny = [
        "--data",
        data,
        "--set",
        "layers=[36, 10, 3]",
        "--set",
        "batch_size=16",
    ];
    let tune = |extra: &[&str]| {
        let mut args = vec!["tune", "--rounds", "1", "--warmup", "0", "--epochs", "1"];
        args.extend(tiny);
        args.extend(extra);
        wgtrain_tuned(&file, &[], &args)
    };
    // --dry-run times every arrangement and writes nothing.
    let o = tune(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}{stdout}", stderr(&o));
    let candidates = wgtrain::gpu::Tuning::candidates();
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| arrangement"))
        .collect();
    assert_eq!(rows.len(), candidates.len(), "{stdout}");
    assert!(
        rows.iter().any(|r| r.starts_with("| defaults |")),
        "{stdout}"
    );
    assert!(!file.exists(), "--dry-run wrote {}", file.display());
    // Without it, the kept arrangement (`tune::choose`: the fastest, if it beat the noise) is
    // saved for this adapter, and named on the last line.
    let o = tune(&[]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}{stdout}", stderr(&o));
    let saved = wgtrain::gpu::TuningFile::load(&file).unwrap();
    assert_eq!(saved.adapter.len(), 1, "{saved:?}");
    let entry = &saved.adapter[0];
    let changes = entry.tuning().changes();
    let label = if changes.is_empty() {
        "the defaults"
    } else {
        &changes
    };
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("keeping {label}")),
        "{last} vs {entry:?}"
    );
    assert!(candidates.contains(&entry.tuning()), "{entry:?}");
    // A later run on the adapter starts from the file's arrangement; variables override it.
    let arranged = wgtrain::gpu::TuningFile {
        adapter: vec![wgtrain::gpu::tuning::TunedAdapter {
            fuse_gather: false,
            tile_k: 64,
            submit_every: 3,
            prefetch: true,
            ..entry.clone()
        }],
    };
    arranged.save(&file).unwrap();
    let bench = |env: &[(&str, &str)]| {
        let mut args = vec![
            "bench",
            "--devices",
            "gpu",
            "--warmup",
            "0",
            "--epochs",
            "1",
        ];
        args.extend(tiny);
        let o = wgtrain_tuned(&file, env, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let stdout = bench(&[]);
    assert!(
        stdout.contains(
            "WGTRAIN_FUSE_GATHER=0 WGTRAIN_TILE_K=64 WGTRAIN_SUBMIT_EVERY=3 WGTRAIN_PREFETCH=1 |"
        ),
        "{stdout}"
    );
    let stdout = bench(&[("WGTRAIN_TILE_K", "16")]);
    assert!(
        stdout.contains("WGTRAIN_FUSE_GATHER=0 WGTRAIN_SUBMIT_EVERY=3 WGTRAIN_PREFETCH=1 |"),
        "{stdout}"
    );
}

#[test]
fn tune_times_a_network_of_layers_as_it_times_the_papers_models() {
    if crate::common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, true);
    let file = tmp.path().join("tuning.toml");
    let network = "network=[{conv=4, kernel=3, padding=1, activation=\"relu\"}, {max_pool=2}, {dropout=0.25}, {dense=3}]";
    let o = wgtrain_tuned(
        &file,
        &[],
        &[
            "tune",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--epochs",
            "1",
            "--dry-run",
            "--data",
            data.to_str().unwrap(),
            "--set",
            network,
            "--set",
            "batch_size=16",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}{stdout}", stderr(&o));
    assert!(
        stdout.starts_with("tune: momentum (network conv 4 3×3 relu → pool 2"),
        "the workload names the network: {stdout}"
    );
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| arrangement"))
        .count();
    assert_eq!(rows, wgtrain::gpu::Tuning::candidates().len(), "{stdout}");
}

#[test]
fn bench_times_packed_models_and_profiles_kernels_on_each_device() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 40, 6, 3, true);
    let gpu = crate::common::gpu().is_some();
    let devices = if gpu { "cpu,gpu" } else { "cpu" };
    // The paper's kind of model, and a network of layers with dropout (whose packed models
    // share one dropout stream).
    let models = [
        "layers=[36, 10, 3]",
        "network=[{conv=4, kernel=3, padding=1, activation=\"relu\"}, {max_pool=2}, {dropout=0.25}, {dense=3}]",
    ];
    for (i, model) in models.into_iter().enumerate() {
        let json = tmp.path().join(format!("bench{i}.jsonl"));
        let o = wgtrain(&[
            "bench",
            "--data",
            data.to_str().unwrap(),
            "--set",
            model,
            "--devices",
            devices,
            "--batch-sizes",
            "16",
            "--warmup",
            "0",
            "--epochs",
            "3",
            "--pack",
            "3",
            "--profile",
            "--json",
            json.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{model}: {}{stdout}", stderr(&o));
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(&json)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let packs: Vec<&serde_json::Value> = rows.iter().filter(|r| r["models"] == 3).collect();
        assert_eq!(packs.len(), devices.split(',').count(), "{model}: {rows:?}");
        for p in &packs {
            let (packed, one_by_one) = (
                p["packed_median_secs"].as_f64().unwrap(),
                p["sequential_median_secs"].as_f64().unwrap(),
            );
            assert!(packed > 0.0 && one_by_one > 0.0, "{p}");
            assert!((p["speedup"].as_f64().unwrap() - one_by_one / packed).abs() < 1e-9);
            assert!(p["packed_min_secs"].as_f64().unwrap() <= packed);
        }
        assert!(stdout.contains("3 side by side"), "{model}: {stdout}");
        if gpu {
            let profiled = rows.iter().any(|r| r["families"].is_array());
            assert!(
                profiled || stdout.contains("profile:"),
                "{model}: a GPU gets a profile or the reason it has none: {stdout}"
            );
        }
    }
    assert_clean_failure(
        &wgtrain(&["bench", "--pack", "0", "--data", data.to_str().unwrap()]),
        "--pack must be at least 1",
    );
}

#[test]
fn a_gpu_too_small_for_the_data_is_an_error_on_gpu_and_a_cpu_fallback_on_auto() {
    let Some(ctx) = crate::common::gpu() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    let run = |device: &str, out: &str| {
        let mut args = vec!["train", "--device", device, "--adapter", &ctx.info.name];
        let out = tmp.path().join(out);
        let (data, out) = (
            data.to_str().unwrap().to_string(),
            out.to_str().unwrap().to_string(),
        );
        args.extend(["--data", &data, "--out", &out]);
        args.extend_from_slice(TINY);
        // 200 training images of 36 bytes need 5,760 bytes; allow 1,024.
        Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .args(&args)
            .env("WGTRAIN_GPU_MAX_STORAGE_BINDING", "1024")
            .output()
            .unwrap()
    };
    let gpu = run("gpu", "gpu-run");
    assert_clean_failure(&gpu, "max_storage_buffer_binding_size");
    let auto = run("auto", "auto-run");
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(
        stderr(&auto).contains("training on the CPU instead"),
        "{}",
        stderr(&auto)
    );
    assert_eq!(
        Summary::read(&tmp.path().join("auto-run/summary.json"))
            .unwrap()
            .device,
        "cpu"
    );
}

#[test]
fn a_saved_model_gives_the_same_test_figures_in_numpy_mlp_and_cnn() {
    // Interop. Runs when python3 has numpy and safetensors (CI installs both,
    // and sets WGTRAIN_REQUIRE_NUMPY=1 so that their absence fails the test).
    let ready = Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        crate::common::skip(
            "python3 with numpy and safetensors not found (pip install numpy safetensors)",
            "WGTRAIN_REQUIRE_NUMPY",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    // A network of every layer kind, stride 2 and padding included, and a dense MLP.
    let cnn = tmp.path().join("cnn.toml");
    std::fs::write(
        &cnn,
        r#"network = [
  { conv = 4, kernel = 3, padding = 1, activation = "relu" },
  { max_pool = 2 },
  { conv = 3, kernel = 2, stride = 2, activation = "sigmoid" },
  { dropout = 0.25 },
  { dense = 5, activation = "tanh" },
  { dense = 3 },
]
batch_size = 16
epochs = 3
init = "pytorch"
early_stopping = false
"#,
    )
    .unwrap();
    let runs: [(&str, Vec<&str>); 2] = [
        ("mlp", vec!["--set", "activation=\"sigmoid\""]),
        ("cnn", vec!["--config", cnn.to_str().unwrap()]),
    ];
    for (name, extra) in runs {
        let out = tmp.path().join(name);
        let o = match name {
            "mlp" => train_tiny(&data, &out, &extra),
            _ => {
                let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
                let args = [
                    &["train", "--data", data, "--out", out, "--device", "cpu"][..],
                    &extra,
                ];
                wgtrain(&args.concat())
            }
        };
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let model = RunDir::new(&out).model();
        let ours = wgtrain(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/interop/evaluate_model.py");
        let theirs = Command::new("python3")
            .args([
                script.to_str().unwrap(),
                model.to_str().unwrap(),
                data.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            theirs.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let a: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
        assert_eq!(a["test_accuracy"], b["test_accuracy"], "{name}");
        assert!(
            (a["test_loss"].as_f64().unwrap() - b["test_loss"].as_f64().unwrap()).abs() < 1e-5,
            "{name}: {a} vs {b}"
        );
    }
}

#[test]
fn class_names_name_every_class_once() {
    use wgtrain::predict::class_names;
    assert_eq!(class_names(3, Some("a, b ,c")).unwrap(), ["a", "b", "c"]);
    assert_eq!(class_names(3, None).unwrap(), ["0", "1", "2"]);
    assert_eq!(class_names(10, None).unwrap()[9], "Ankle boot");
    for (list, says) in [
        ("a,b", "gives 2 names, the model has 3 classes"),
        ("a,,c", "the name of class 1 is empty"),
        ("a,b,a", "\"a\" names class 2 and an earlier one"),
    ] {
        let e = class_names(3, Some(list)).unwrap_err().to_string();
        assert!(e.contains(says), "{list}: {e}");
    }
}

#[test]
fn predict_classifies_a_png_of_a_garment_and_every_image_of_an_idx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train_softmax_on_fashion_mnist(&out, 2);
    let model = RunDir::new(&out).model();
    // Test image 0 (an ankle boot) as a photo would have it: 4× larger, dark on light.
    let test = wgtrain::data::read_pair(
        &fashion_mnist(),
        wgtrain::data::TEST_IMAGES,
        wgtrain::data::TEST_LABELS,
    )
    .unwrap();
    assert_eq!(test.labels[0], 9);
    let png = tmp.path().join("boot.png");
    let picture = image::GrayImage::from_fn(112, 112, |x, y| {
        image::Luma([255 - test.pixels[(y / 4 * 28 + x / 4) as usize]])
    });
    picture.save(&png).unwrap();
    let o = wgtrain(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout.starts_with(&format!("{}: Ankle boot", png.display())),
        "{stdout}"
    );

    let idx = fashion_mnist().join("t10k-images-idx3-ubyte.gz");
    let o = wgtrain(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--top",
        "1",
        idx.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = o
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10_000);
    let correct = lines
        .iter()
        .zip(&test.labels)
        .filter(|(l, y)| l["top"][0]["label"].as_u64() == Some(**y as u64))
        .count();
    assert!(correct >= 8_000, "{correct} of 10000 right");

    #[cfg(unix)]
    {
        // `wgtrain predict … | head -1`: the reader goes away after one line of 10,000; wgtrain
        // ends quietly (success, or SIGPIPE as `cat` would), never with a panic.
        let mut child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .args(["predict", "--model", model.to_str().unwrap()])
            .arg(&idx)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(first.contains("Ankle boot"), "{first}");
        let o = child.wait_with_output().unwrap();
        let signal = std::os::unix::process::ExitStatusExt::signal(&o.status);
        assert!(
            o.status.success() || signal == Some(libc::SIGPIPE),
            "{:?}; stderr: {}",
            o.status,
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }

    // A progressive JPEG (every scan there: Pillow's, 32×32) is a picture like any other.
    let progressive =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pictures/progressive-32.jpg");
    let o = wgtrain(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        progressive.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let junk = tmp.path().join("junk.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    assert_clean_failure(
        &wgtrain(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            junk.to_str().unwrap(),
        ]),
        "junk.png",
    );
}

#[test]
fn train_eval_and_plot_draw_their_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(train_tiny(&data, &a, &[]).status.success());
    assert!(train_tiny(&data, &b, &["--seed", "2"]).status.success());
    let is_png = |p: &Path| {
        std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 5_000)
    };
    let is_svg = |p: &Path| {
        std::fs::read_to_string(p).is_ok_and(|s| s.contains("<svg") && s.contains("validation"))
    };
    for stem in ["accuracy", "loss"] {
        assert!(is_png(&a.join(format!("{stem}.png"))), "{stem}.png");
        assert!(is_svg(&a.join(format!("{stem}.svg"))), "{stem}.svg");
    }
    let both = tmp.path().join("both");
    let o = wgtrain(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        both.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_png(&both.join("loss.png")));
    assert!(
        std::fs::read_to_string(both.join("loss.svg"))
            .unwrap()
            .contains("b: validation"),
        "overlay labels each run"
    );
    let o = wgtrain(&[
        "eval",
        "--model",
        RunDir::new(&a).model().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_png(&a.join("confusion.png")));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("% of "),
        "per-class accuracy is printed"
    );
}

#[test]
fn plot_and_table_take_a_run_that_has_not_finished() {
    // See: an interrupted run (or one still training) has metrics.csv but no summary.json,
    // and `plot` refused it ("summary.json: No such file") while `table runs/*` failed whole.
    let tmp = tempfile::tempdir().unwrap();
    let unfinished = tmp.path().join("unfinished");
    std::fs::create_dir(&unfinished).unwrap();
    // Validation losses 0.9, 0.5, 0.7, 0.5, 0.8: early stopping's best is the first 0.5.
    let mut metrics = format!("{}\n", metrics_header());
    for (epoch, val_loss) in [0.9, 0.5, 0.7, 0.5, 0.8].iter().enumerate() {
        metrics.push_str(&format!("{},0.4,0.8,{val_loss},0.8,0.1\n", epoch + 1));
    }
    std::fs::write(RunDir::new(&unfinished).metrics(), metrics).unwrap();
    let o = wgtrain(&["plot", unfinished.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(unfinished.join("loss.svg")).unwrap();
    assert!(
        svg.contains("best epoch 2\n"),
        "marks the first lowest loss"
    );

    let o = wgtrain(&["table", unfinished.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no finished run among the 1 given"),
        "{}",
        stderr(&o)
    );
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    let finished = tmp.path().join("finished");
    assert!(train_tiny(&data, &finished, &[]).status.success());
    let o = wgtrain(&[
        "table",
        unfinished.to_str().unwrap(),
        finished.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unfinished left out: the run has not finished"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with("| 1 |"))
            .count(),
        1,
        "one row, of the finished run"
    );
    let o = wgtrain(&["plot", tmp.path().join("data").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a run directory (no metrics.csv)"));
}

#[test]
fn the_largest_seed_a_config_can_hold_round_trips_and_a_larger_one_is_refused() {
    // See: `--seed 18446744073709551615` passed clap and then failed as
    // "invalid type: string, expected u64": config.toml (TOML) holds 64-bit signed integers.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    let run = tmp.path().join("run");
    let o = train_tiny(&data, &run, &["--seed", "9223372036854775807"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = std::fs::read_to_string(RunDir::new(&run).config()).unwrap();
    assert!(config.contains("seed = 9223372036854775807"), "{config}");
    let o = train_tiny(
        &data,
        &tmp.path().join("b"),
        &["--seed", "9223372036854775808"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not in 0..=9223372036854775807"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("b").exists(), "nothing written");
}

#[test]
fn every_subcommand_has_working_help() {
    // The binary is built with debug assertions here, so clap checks each command's
    // definition (conflicts, flattened groups) when it is built for --help.
    for sub in [
        "train",
        "eval",
        "predict",
        "gradcheck",
        "sweep",
        "bench",
        "tune",
        "devices",
        "check",
        "table",
        "plot",
    ] {
        let o = wgtrain(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage: wgtrain"),
            "{sub}"
        );
    }
    let o = wgtrain(&["sweep", "report", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_finished_run_keeps_no_lock_and_its_plot_reads_like_the_run() {
    // Finished runs kept an empty `.lock`; a 2-epoch run's epoch axis read
    // "1 1 1 1 1 2 2 2 2 2 2"; `plot` titled a run by its directory's name ("pl: accuracy").
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("pl"));
    write_dataset(&data, 200, 50, 6, 3, true);
    let o = train_tiny(&data, &out, &["--set", "epochs=2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        left.is_empty(),
        "hidden files left in a finished run: {left:?}"
    );
    // A second run over it takes and releases the lock again.
    let again = train_tiny(&data, &out, &["--set", "epochs=2", "--force"]);
    assert!(again.status.success(), "{}", stderr(&again));

    let redrawn = wgtrain(&["plot", out.to_str().unwrap()]);
    assert!(redrawn.status.success(), "{}", stderr(&redrawn));
    let texts = crate::common::svg_texts(&out.join("accuracy.svg"));
    let name = RunDir::new(&out).read_config().unwrap().name;
    assert_ne!(name, "pl");
    assert_eq!(texts[0], format!("{name}: accuracy"), "{texts:?}");
    for epoch in ["1", "2"] {
        assert_eq!(
            texts.iter().filter(|t| **t == epoch).count(),
            1,
            "epoch {epoch} labelled once: {texts:?}"
        );
    }
}
