//! Shared test helpers: seeded random data and tiny MNIST-style datasets written to disk.

use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgtrain::data::idx::encode_idx;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in [-1, 1).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
}

/// A learnable synthetic image set: class `c` brightens the `c`-th band of rows, plus noise.
pub fn synthetic_images(
    count: usize,
    side: usize,
    classes: usize,
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut rng = rng(seed);
    let mut pixels = Vec::with_capacity(count * side * side);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let label = rng.random_range(0..classes);
        labels.push(label as u8);
        for row in 0..side {
            let band = row * classes / side == label;
            for _ in 0..side {
                let base = if band { 170.0 } else { 60.0 };
                let noise: f64 = rng.random::<f64>() * 80.0;
                pixels.push((base + noise).min(255.0) as u8);
            }
        }
    }
    (pixels, labels)
}

/// Writes the four IDX files of a synthetic dataset (gzipped when `gzip`) into `dir`.
pub fn write_dataset(
    dir: &Path,
    train: usize,
    test: usize,
    side: usize,
    classes: usize,
    gzip: bool,
) {
    std::fs::create_dir_all(dir).unwrap();
    let (tp, tl) = synthetic_images(train, side, classes, 11);
    let (sp, sl) = synthetic_images(test, side, classes, 12);
    write_idx(
        dir,
        "train-images-idx3-ubyte",
        &[train, side, side],
        &tp,
        gzip,
    );
    write_idx(dir, "train-labels-idx1-ubyte", &[train], &tl, gzip);
    write_idx(
        dir,
        "t10k-images-idx3-ubyte",
        &[test, side, side],
        &sp,
        gzip,
    );
    write_idx(dir, "t10k-labels-idx1-ubyte", &[test], &sl, gzip);
}

pub fn write_idx(dir: &Path, name: &str, dims: &[usize], data: &[u8], gzip: bool) {
    let bytes = encode_idx(dims, data);
    if gzip {
        std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
    } else {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Runs the wgtrain binary this test build made, with `args`.
pub fn wgtrain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(args)
        .output()
        .expect("run wgtrain")
}

/// `wgtrain train` on the CPU, quietly, of a small MLP ([36, 10, 3], batches of 16) on the
/// set in `data`, with `extra` arguments after: its output.
pub fn train_small(data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--data",
        data.to_str().unwrap(),
        "--set",
        "layers=[36, 10, 3]",
        "--set",
        "batch_size=16",
    ];
    args.extend_from_slice(extra);
    wgtrain(&args)
}

/// The texts of an SVG file wgtrain drew (title, tick labels, legend), in drawing order.
pub fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>').map(|(_, rest)| rest))
        .filter_map(|t| {
            t.split_once("</text>")
                .map(|(text, _)| text.trim().to_string())
        })
        .collect()
}

/// What a run of the binary wrote to stderr.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Path of the vendored Fashion-MNIST directory.
pub fn fashion_mnist() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("fashion-mnist")
}

/// Skips the running test for want of `what`, saying so where `cargo test` shows it: straight
/// to stderr, past the harness's capture (which hides what a passing test prints), since the
/// harness itself can only report such a test `ok`. With `required_by=1` (CI sets it) a
/// missing prerequisite fails the test instead.
pub fn skip(what: &str, required_by: &str) {
    if std::env::var(required_by).is_ok_and(|v| v == "1") {
        panic!("{required_by}=1, but {what}");
    }
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped: {test}: {what} ({required_by}=1 makes this a failure)"
    );
}

/// The GPU every GPU test runs on: whatever adapter wgpu finds, software ones included.
/// Without one the test is skipped with a message — unless `WGTRAIN_REQUIRE_GPU=1` (CI, with
/// lavapipe installed), where a missing adapter fails the test.
pub fn gpu() -> Option<wgtrain::gpu::GpuContext> {
    let choice = wgtrain::gpu::AdapterChoice {
        allow_software: true,
        ..Default::default()
    };
    match pollster::block_on(wgtrain::gpu::GpuContext::open(&choice)) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            skip(
                &format!("no GPU adapter opened ({e})"),
                "WGTRAIN_REQUIRE_GPU",
            );
            None
        }
    }
}

/// Waits until `metrics` (a run's metrics.csv) holds `epochs` finished epochs, then sends
/// `child` SIGINT (what Ctrl-C sends) and returns how it ended.
pub fn interrupt_after_epochs(
    child: std::process::Child,
    metrics: &Path,
    epochs: usize,
) -> std::process::Output {
    wait_for_epochs(metrics, epochs);
    interrupt(child)
}

/// Sends `child` SIGINT (what Ctrl-C sends) and waits for it to exit.
pub fn interrupt(child: std::process::Child) -> std::process::Output {
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

/// Waits (up to a minute) until `metrics` (a run's metrics.csv) holds `epochs` epochs.
pub fn wait_for_epochs(metrics: &Path, epochs: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(metrics).map_or(0, |m| m.lines().count()) < epochs + 1 {
        assert!(std::time::Instant::now() < deadline, "no epochs finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What a sweep reported: each pack's label and each diverged run, one line each.
#[derive(Default)]
pub struct SweepLog(std::sync::Mutex<String>);

impl wgtrain::sweep::SweepObserver for SweepLog {
    fn pack_started(&self, label: &str, _runs: &[&wgtrain::sweep::SweepRun]) {
        self.0.lock().unwrap().push_str(&format!("{label}\n"));
    }

    fn ended(
        &self,
        _n: usize,
        _of: usize,
        run: &wgtrain::sweep::SweepRun,
        outcome: &wgtrain::Result<wgtrain::metrics::Summary>,
    ) {
        if let Err(wgtrain::Error::Train(wgtrain::train::TrainError::Diverged { .. })) = outcome {
            self.0
                .lock()
                .unwrap()
                .push_str(&format!("{}: diverged\n", run.id));
        }
    }
}

/// The sweep file `sweep` (with `sets` overrides) on `engine` into `out`, at most `pack`
/// runs at a time, through the library as `wgtrain sweep` calls it (expand, prepare the
/// directory, train, report); returns what it reported ([`SweepLog`]).
pub fn sweep_in_library(
    sweep: &Path,
    data: &Path,
    out: &Path,
    engine: wgtrain::device::EngineKind,
    pack: Option<usize>,
    sets: &[&str],
) -> String {
    let threads = match &engine {
        wgtrain::device::EngineKind::Cpu { threads } => *threads,
        _ => 0,
    };
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let runs = wgtrain::sweep::expand(sweep, &sets, wgtrain::sweep::DEFAULT_MAX_RUNS).unwrap();
    let plan = wgtrain::sweep::ShardPlan::new(&runs, wgtrain::sweep::Shard::ALL);
    let data = Some(data.to_path_buf());
    let data_dir = wgtrain::sweep::prepare_out(out, data, &plan.may_train, plan.prune).unwrap();
    let options = wgtrain::sweep::SweepOptions {
        out: out.to_path_buf(),
        data_dir,
        engine,
        pack,
        threads,
        interrupt: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        stop_after: None,
    };
    let log = SweepLog::default();
    plan.train(&options, &log).unwrap();
    wgtrain::sweep::report(out).unwrap();
    log.0.into_inner().unwrap()
}

/// A run's record as a results table reads it, without training: `config` (its name names the
/// run), `test_accuracy`, test and validation loss 1.0, diverged or not, with a "worse than
/// untrained" warning or not.
pub fn run_record(
    config: wgtrain::config::TrainConfig,
    test_accuracy: f64,
    diverged: bool,
    warning: bool,
) -> wgtrain::report::RunRecord {
    let name = config.name.clone();
    wgtrain::report::RunRecord {
        dir: std::path::PathBuf::from(&name),
        summary: wgtrain::metrics::Summary {
            name,
            status: if diverged { "diverged" } else { "finished" }.into(),
            test_accuracy,
            test_loss: 1.0,
            best_epoch: 1,
            best_val_loss: Some(1.0),
            epochs_run: 1,
            stopped_early: false,
            diverged,
            device: "cpu".into(),
            device_detail: "cpu".into(),
            adapter: None,
            backend: None,
            adapter_index: None,
            adapter_pci_bus_id: None,
            adapter_chosen_by: None,
            seed: config.seed,
            seconds: 0.0,
            error: None,
            warning: warning.then(|| "worse".to_string()),
            legs: Vec::new(),
        },
        config,
    }
}
