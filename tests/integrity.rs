//! No silent wrong result: a run that went wrong says so, a model file never holds a
//! broken network, a resumed run or a rerun sweep goes on with the data it started on, and a
//! shard takes its slice or fails. Each test here failed before its fix; the one-line errors
//! of the same fixes are rows of tests/errors.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use wgtrain::config::TrainConfig;
use wgtrain::data::Dataset;
use wgtrain::device::EngineKind;
use wgtrain::metrics::Summary;
use wgtrain::model::Params;
use wgtrain::rundir::RunDir;
use wgtrain::sweep::{Shard, SweepTally};

use crate::common::{stderr, wgtrain, write_dataset};

const TINY: [&str; 6] = [
    "--set",
    "layers=[36, 8, 3]",
    "--set",
    "batch_size=8",
    "--set",
    "init=\"xavier\"",
];

fn train(device: &str, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let (data, out) = (data.display().to_string(), out.display().to_string());
    let mut args = vec![
        "train", "--device", device, "--quiet", "--data", &data, "--out", &out,
    ];
    args.extend(TINY);
    args.extend(extra);
    wgtrain(&args)
}

/// Every safetensors file in `dir`, loaded as wgtrain loads it (which refuses non-finite
/// values), with every value checked again here.
fn assert_every_model_file_is_finite(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let values = match path.file_name().unwrap().to_str().unwrap() {
                "last.safetensors" => {
                    let c = wgtrain::checkpoint::load_checkpoint(&path).unwrap();
                    [c.state.params, c.state.best, c.state.first, c.state.second].concat()
                }
                _ => wgtrain::checkpoint::load_model(&path).unwrap().values,
            };
            assert!(values.iter().all(|v| v.is_finite()), "{}", path.display());
        }
    }
}

/// Runs that diverged while their loss stayed finite (NaN weights behind a ReLU or clamped
/// tanh; huge weights behind a saturated sigmoid), on the CPU and on the GPU.
#[test]
fn a_run_whose_weights_break_while_its_loss_stays_finite_ends_diverged_on_both_paths() {
    // `--set learning_rate=1e30` exited 0, "finished", with fc1.weight all NaN on
    // the CPU and finite 1e28 weights on the GPU.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let mut devices = vec!["cpu"];
    if crate::common::gpu().is_some() {
        devices.push("gpu");
    }
    for device in devices {
        for activation in ["tanh", "sigmoid"] {
            let out = tmp.path().join(format!("{device}-{activation}"));
            let o = train(
                device,
                &data,
                &out,
                &[
                    "--set",
                    "epochs=2",
                    "--set",
                    "learning_rate=1e30",
                    "--set",
                    &format!("activation=\"{activation}\""),
                ],
            );
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{device} {activation}: {err}");
            assert!(
                err.contains("training diverged: fc"),
                "{device} {activation}: {err}"
            );
            let summary = Summary::read(&RunDir::new(&out).summary()).unwrap();
            assert_eq!(summary.status, "diverged", "{device} {activation}");
            assert_every_model_file_is_finite(&out);
        }
    }
}

#[test]
fn cpu_and_gpu_agree_on_which_runs_diverge() {
    // Both paths must give one verdict for one run, whichever of them turns a
    // broken weight into NaN and whichever keeps it finite.
    let Some(context) = crate::common::gpu() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 120, 30, 6, 3, false);
    let gpu = EngineKind::Gpu {
        context: Box::new(context),
    };
    let cpu = EngineKind::Cpu { threads: 2 };
    let mut verdicts = Vec::new();
    for activation in ["tanh", "sigmoid", "relu"] {
        for (optimizer, lr) in [
            ("sgd", "1e30"),
            ("adam", "1e30"),
            ("sgd", "0.1"),
            ("sgd", "1e9"),
        ] {
            for penalty in ["l2=0.0", "l2=1e30", "l1=1e30"] {
                let sets: Vec<String> = [
                    "layers=[36, 8, 3]",
                    "batch_size=8",
                    "epochs=2",
                    &format!("activation=\"{activation}\""),
                    &format!("optimizer=\"{optimizer}\""),
                    &format!("learning_rate={lr}"),
                    penalty,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let config = TrainConfig::from_toml_str("", Path::new("t"), "t", &sets).unwrap();
                let data =
                    Arc::new(Dataset::load(tmp.path(), config.val_fraction, config.seed).unwrap());
                let diverged = |kind: &EngineKind| {
                    let params =
                        Params::init(&config.layers, config.activation, config.init, config.seed)
                            .unwrap();
                    let mut engine = kind.build(&params, config.batch_size).unwrap();
                    engine.upload(Arc::clone(&data)).unwrap();
                    let outcome = pollster::block_on(wgtrain::train::train(
                        engine.as_mut(),
                        data.train.len,
                        &config,
                        None,
                        |_| Ok(()),
                    ))
                    .unwrap();
                    outcome.diverged.is_some()
                };
                let (on_cpu, on_gpu) = (diverged(&cpu), diverged(&gpu));
                assert_eq!(
                    on_cpu, on_gpu,
                    "{activation} {optimizer} lr {lr} {penalty}: cpu diverged {on_cpu}, gpu {on_gpu}"
                );
                verdicts.push(on_cpu);
            }
        }
    }
    // The grid holds both verdicts, so agreement is not agreement on one answer.
    assert!(verdicts.contains(&true) && verdicts.contains(&false));
}

#[test]
fn a_run_that_ends_worse_than_it_started_finishes_with_a_warning() {
    // `learning_rate=1e9` with tanh finished at loss 2.5e9 without a word. (On
    // Fashion-MNIST; here labels drawn apart from the images, which no step can learn and a
    // huge one unlearns: the toy images are separable enough that huge weights fit them.)
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let (_, labels) = crate::common::synthetic_images(120, 6, 3, 77);
    crate::common::write_idx(&data, "train-labels-idx1-ubyte", &[120], &labels, false);
    let out = tmp.path().join("run");
    let o = train(
        "cpu",
        &data,
        &out,
        &["--set", "epochs=2", "--set", "learning_rate=1e9"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: training made the model worse")
            && stderr(&o).contains("learning_rate=1e8"),
        "{}",
        stderr(&o)
    );
    let summary = Summary::read(&RunDir::new(&out).summary()).unwrap();
    assert!(summary.warning.is_some(), "{summary:?}");
    // A healthy run carries no warning.
    write_dataset(&data, 120, 30, 6, 3, false);
    let healthy = tmp.path().join("healthy");
    let o = train("cpu", &data, &healthy, &["--set", "epochs=3"]);
    assert!(
        o.status.success() && !stderr(&o).contains("warning"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        Summary::read(&RunDir::new(&healthy).summary())
            .unwrap()
            .warning,
        None
    );
}

#[test]
fn a_resumed_run_goes_on_with_the_data_it_recorded() {
    // The printed `wgtrain train --resume RUN` went on with data/fashion-mnist after
    // a run started with --data DIR.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let run = tmp.path().join("run");
    let o = train("cpu", &data, &run, &["--set", "epochs=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // From another working directory, without --data: Fashion-MNIST's 784 pixels would not
    // fit these 36-input layers, so success means the recorded data was used.
    let o = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(["train", "--device", "cpu", "--quiet", "--resume"])
        .arg(&run)
        .args(["--set", "epochs=2"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(RunDir::new(&run).metrics()).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    // The same directory with other contents is refused, naming both.
    let labels = data.join("train-labels-idx1-ubyte.gz");
    let (_, mut raw) = crate::common::synthetic_images(120, 6, 3, 99);
    raw.rotate_left(1);
    std::fs::write(
        &labels,
        crate::common::gz(&wgtrain::data::idx::encode_idx(&[120], &raw)),
    )
    .unwrap();
    let o = wgtrain(&[
        "train",
        "--device",
        "cpu",
        "--resume",
        run.to_str().unwrap(),
        "--set",
        "epochs=3",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not the same: train-labels-idx1-ubyte.gz has SHA-256"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(RunDir::new(&run).metrics()).unwrap(),
        metrics,
        "nothing written"
    );
}

fn sweep_file(dir: &Path) -> PathBuf {
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        "seeds = [1, 2]\n[grid]\nlearning_rate = [0.05, 0.1]\n",
    )
    .unwrap();
    path
}

/// TINY's settings, and one epoch.
fn tiny_sets() -> Vec<String> {
    let mut sets: Vec<String> = TINY
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect();
    sets.push("epochs=1".into());
    sets
}

/// The sweep `file` into `out` on the CPU through the library, as `wgtrain sweep` runs it:
/// `data` as `--data` (`None`: the sweep's recorded directory), `sets` as `--set`.
fn sweep(
    file: &Path,
    out: &Path,
    data: Option<&Path>,
    sets: &[String],
) -> wgtrain::Result<SweepTally> {
    let runs = wgtrain::sweep::expand(file, sets, wgtrain::sweep::DEFAULT_MAX_RUNS)?;
    let mine: Vec<&wgtrain::sweep::SweepRun> = runs.iter().collect();
    let prune = runs.first().and_then(|r| r.prune);
    let data_dir = wgtrain::sweep::prepare_out(out, data.map(Path::to_path_buf), &mine, prune)?;
    let options = wgtrain::sweep::SweepOptions {
        out: out.to_path_buf(),
        data_dir,
        engine: EngineKind::Cpu { threads: 1 },
        pack: Some(1),
        threads: 1,
        interrupt: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        stop_after: None,
    };
    let tally = wgtrain::sweep::train_runs(&mine, &options, &crate::common::SweepLog::default())?;
    wgtrain::sweep::report(out)?;
    Ok(tally)
}

#[test]
fn a_rerun_sweep_uses_the_data_it_recorded_and_refuses_other_data() {
    // A rerun skipped runs finished on one dataset and trained the rest on another.
    let tmp = tempfile::tempdir().unwrap();
    let (data, other) = (tmp.path().join("data"), tmp.path().join("other"));
    write_dataset(&data, 120, 30, 6, 3, false);
    write_dataset(&other, 150, 30, 6, 3, false);
    let file = sweep_file(tmp.path());
    let out = tmp.path().join("out");
    let first = sweep(&file, &out, Some(&data), &tiny_sets()).unwrap();
    assert_eq!(first.trained, 4);
    // Without --data: the recorded directory (the vendored data would not fit the layers).
    let again = sweep(&file, &out, None, &tiny_sets()).unwrap();
    assert_eq!(again.skipped, 4, "{again:?}");
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let err = sweep(&file, &out, Some(&other), &tiny_sets()).unwrap_err();
    assert!(matches!(err, wgtrain::Error::DataChanged { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&data.display().to_string())
            && message.contains(&other.display().to_string()),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        results
    );
}

#[test]
fn sweep_report_refuses_a_folder_without_a_sweep_and_files_it_did_not_write() {
    // `sweep report DIR` overwrote results.md and results.csv in any folder.
    let tmp = tempfile::tempdir().unwrap();
    let notes = tmp.path().join("results.md");
    std::fs::write(&notes, "my notes\n").unwrap();
    let err = wgtrain::sweep::report(tmp.path()).unwrap_err();
    assert!(matches!(err, wgtrain::Error::NotASweep { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
    // A real sweep directory: its own reports are rewritten, a foreign file is not.
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let out = tmp.path().join("out");
    sweep(&sweep_file(tmp.path()), &out, Some(&data), &tiny_sets()).unwrap();
    wgtrain::sweep::report(&out).unwrap();
    std::fs::write(out.join("results.md"), "my notes\n").unwrap();
    let err = wgtrain::sweep::report(&out).unwrap_err();
    assert!(matches!(err, wgtrain::Error::NotOurs { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        "my notes\n"
    );
}

#[test]
fn a_sweep_too_large_is_refused_before_any_run_directory_and_max_runs_raises_the_limit() {
    // A grid of 10⁶ made 23,551 run directories before it was killed.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("grid.toml");
    let values: Vec<String> = (1..=40).map(|i| format!("0.{i:03}")).collect();
    std::fs::write(
        &file,
        format!(
            "seeds = [1, 2]\n[grid]\nlearning_rate = [{}]\nmomentum_gamma = [{}]\n",
            values.join(", "),
            values.join(", ")
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = wgtrain(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("makes 3200 runs"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing made");
    let runs = wgtrain::sweep::expand(&file, &[], 3200).unwrap();
    assert_eq!(runs.len(), 3200);
}

/// Environment variables, as (name, value).
type Env = &'static [(&'static str, &'static str)];

#[test]
fn shards_come_from_slurm_arrays_with_steps_and_offsets_and_bad_environments_are_errors() {
    // Bad environments printed "shard 0/1" and trained everything.
    let env = |vars: Env| {
        move |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let shard = |index, count| Some(Shard { index, count });
    // --array=0-12:4: tasks 0, 4, 8, 12 are shards 0..4.
    let stepped = env(&[
        ("SLURM_ARRAY_TASK_ID", "8"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "12"),
        ("SLURM_ARRAY_TASK_STEP", "4"),
    ]);
    assert_eq!(Shard::from_vars(stepped, None).unwrap(), shard(2, 4));
    // --array=3-5: tasks 3, 4, 5 are shards 0..3.
    let offset = env(&[
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "3"),
        ("SLURM_ARRAY_TASK_MAX", "5"),
        ("SLURM_ARRAY_TASK_STEP", "1"),
    ]);
    assert_eq!(Shard::from_vars(offset, None).unwrap(), shard(2, 3));
    let indexed = env(&[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(Shard::from_vars(indexed, Some(2)).unwrap(), shard(1, 2));
    assert_eq!(Shard::from_vars(env(&[]), None).unwrap(), None);
    let bad: [(Env, Option<usize>); 8] = [
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
            None,
        ),
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
            None,
        ),
        (&[("SLURM_ARRAY_TASK_ID", "1")], None),
        // A task id between the steps, and a count the bounds do not give.
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "6"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MAX", "12"),
                ("SLURM_ARRAY_TASK_STEP", "4"),
            ],
            None,
        ),
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "5"),
                ("SLURM_ARRAY_TASK_MAX", "12"),
                ("SLURM_ARRAY_TASK_STEP", "4"),
            ],
            None,
        ),
        (&[("JOB_COMPLETION_INDEX", "7")], Some(2)),
        (&[("JOB_COMPLETION_INDEX", "1")], None),
        (&[], Some(2)),
    ];
    for (vars, count) in bad {
        assert!(
            Shard::from_vars(env(vars), count).is_err(),
            "{vars:?} with --shard-count {count:?} must be an error"
        );
    }
}

#[test]
fn a_network_past_the_address_space_limit_is_an_error_not_an_abort() {
    // Under `ulimit -v` the memory check passed and the allocator aborted. The
    // network needs about 3 GB: within this machine's memory, beyond the 1 GB limit.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let script = format!(
        "ulimit -v 1000000 && exec {} train --device cpu --quiet --data {} --out {} --set 'layers=[36, 300000, 3]' --set epochs=1 --set batch_size=8 --threads 2",
        env!("CARGO_BIN_EXE_wgtrain"),
        data.display(),
        tmp.path().join("run").display()
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("GB of memory"), "{}", stderr(&o));
}

#[test]
fn identical_runs_write_identical_model_files() {
    // The metadata keys came out in a different order in every process.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let files: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .map(|name| {
            let out = tmp.path().join(name);
            let o = train("cpu", &data, &out, &["--set", "epochs=2", "--threads", "1"]);
            assert!(o.status.success(), "{}", stderr(&o));
            std::fs::read(RunDir::new(&out).model()).unwrap()
        })
        .collect();
    assert!(
        files[0] == files[1],
        "model.safetensors differs between identical runs"
    );
    // Still a file safetensors readers take.
    let tensors = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
    assert_eq!(tensors.len(), 4);
}

#[test]
fn predict_warns_beside_the_prediction_for_a_blank_or_transparent_image() {
    // Blank white, black, 1×1 and transparent images got "Sandal 13.3%" and no word.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let run = tmp.path().join("run");
    assert!(
        train("cpu", &data, &run, &["--set", "epochs=1"])
            .status
            .success()
    );
    let model = RunDir::new(&run).model();
    let white = tmp.path().join("white.png");
    image::GrayImage::from_pixel(40, 40, image::Luma([255]))
        .save(&white)
        .unwrap();
    let dot = tmp.path().join("dot.png");
    image::GrayImage::from_pixel(1, 1, image::Luma([90]))
        .save(&dot)
        .unwrap();
    let clear = tmp.path().join("clear.png");
    image::RgbaImage::from_pixel(30, 30, image::Rgba([200, 10, 10, 0]))
        .save(&clear)
        .unwrap();
    let drawn = tmp.path().join("drawn.png");
    image::GrayImage::from_fn(30, 30, |x, _| image::Luma([if x < 15 { 0 } else { 255 }]))
        .save(&drawn)
        .unwrap();
    for (file, blank) in [
        (&white, true),
        (&dot, true),
        (&clear, true),
        (&drawn, false),
    ] {
        let o = wgtrain(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            file.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            line["warning"].is_string(),
            blank,
            "{}: {line}",
            file.display()
        );
        assert_eq!(
            stderr(&o).contains("the image is blank"),
            blank,
            "{}",
            stderr(&o)
        );
        assert!(
            line["top"][0]["probability"].is_number(),
            "a prediction all the same"
        );
    }
}

#[test]
fn an_allocation_the_machine_cannot_give_is_an_error_naming_what_it_was_for() {
    // A 784 MB dataset under `ulimit -v` aborted in zscore_images. What allocates
    // the dataset's f32 images (and an IDX file's contents) now reports failure instead.
    let err = wgtrain::data::prep::try_zeroed::<f32>(usize::MAX / 2, "the z-scored f32 images")
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot allocate 36893488147.42 GB for the z-scored f32 images"),
        "{err}"
    );
    let fits = wgtrain::data::prep::try_zeroed::<f32>(1000, "a thousand zeros").unwrap();
    assert!(fits.len() == 1000 && fits.iter().all(|&v| v == 0.0));
}

#[test]
fn a_rerun_sweep_refuses_runs_that_finished_with_another_config() {
    // A sibling of resuming on other data: a rerun with another `--set` skipped the
    // finished runs, and results.csv mixed their figures with the new config's.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let file = sweep_file(tmp.path());
    let out = tmp.path().join("out");
    sweep(&file, &out, Some(&data), &tiny_sets()).unwrap();
    let summary =
        std::fs::read_to_string(out.join("learning_rate=0.05-seed1/summary.json")).unwrap();
    let mut sets = tiny_sets();
    sets.push("epochs=2".into());
    let err = sweep(&file, &out, None, &sets).unwrap_err();
    assert!(matches!(err, wgtrain::Error::ConfigChanged { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`epochs = 1`, the sweep now says `epochs = 2`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("learning_rate=0.05-seed1/summary.json")).unwrap(),
        summary,
        "the finished run is kept"
    );
}

#[test]
fn a_run_trained_over_another_leaves_none_of_the_old_runs_end_behind() {
    // Like a rerun that kept runs of other data: `--force` (and a sweep starting a changed run afresh) left the old
    // summary.json and last.safetensors until the new run ended; stopped before that, the
    // directory claimed the old run had finished, or offered its checkpoint to resume.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, false);
    let out = tmp.path().join("run");
    assert!(
        train("cpu", &data, &out, &["--set", "epochs=3"])
            .status
            .success()
    );
    let sets: Vec<String> = [
        "layers=[36, 8, 3]",
        "batch_size=8",
        "epochs=3",
        "learning_rate=0.01",
    ]
    .map(String::from)
    .to_vec();
    let config = TrainConfig::from_toml_str("", Path::new("t"), "t", &sets).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = wgtrain::run::RunOptions {
        out: out.clone(),
        force: true,
        data_dir: Some(data),
        engine: EngineKind::Cpu { threads: 1 },
        resume: false,
        interrupt: Some(stop),
        datasets: None,
        stop_after: None,
    };
    let stopped = wgtrain::run::run_training(&config, &opts, |_, _| {});
    assert!(matches!(
        stopped,
        Err(wgtrain::Error::Interrupted { epoch: 1, .. })
    ));
    assert!(
        !RunDir::new(&out).summary().exists(),
        "the old run's summary is gone"
    );
    let checkpoint = wgtrain::checkpoint::load_checkpoint(&RunDir::new(&out).checkpoint()).unwrap();
    assert_eq!(checkpoint.epochs_done, 1, "the checkpoint is the new run's");
}

#[test]
fn a_results_table_leaves_diverged_runs_out_of_its_means_and_flags_worse_than_untrained() {
    // Like a run that diverged and said "finished": results.md and `wgtrain table` averaged a diverged run's figures
    // (its weights from before it broke) into the setting's mean ± std without a word.
    let run = |name: &str, accuracy: f64, diverged: bool, warning: bool| {
        let config = TrainConfig {
            name: name.into(),
            ..TrainConfig::default()
        };
        crate::common::run_record(config, accuracy, diverged, warning)
    };
    let table = wgtrain::report::markdown_table(&[
        run("mixed", 0.8, false, false),
        run("mixed", 0.9, false, true),
        run("mixed", 0.1, true, false),
        run("broken", 0.1, true, false),
    ]);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap()
            .to_string()
    };
    let mixed = line("mixed");
    assert!(mixed.contains("| 85.00% ± 7.07 |"), "{mixed}");
    assert!(
        mixed.ends_with("| 2 (1 diverged, left out; 1 worse than untrained) |"),
        "{mixed}"
    );
    let broken = line("broken");
    assert!(
        broken.contains("| – | – |") && broken.ends_with("| 0 (1 diverged, left out) |"),
        "{broken}"
    );
}
