//! Checkpoints and resume: 2 epochs + resume to 5 equals 5 epochs straight (through the
//! library); the CLI's own part of resuming (its refusals, Ctrl-C) through the binary.

use std::path::Path;
use std::process::Command;

use wgtrain::checkpoint::{load_checkpoint, load_model};
use wgtrain::config::TrainConfig;
use wgtrain::device::EngineKind;
use wgtrain::run::{RunOptions, run_training};
use wgtrain::rundir::RunDir;

use crate::common::{interrupt_after_epochs, train_small, wait_for_epochs, wgtrain, write_dataset};

/// metrics.csv without the seconds column.
fn metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(RunDir::new(dir).metrics())
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// Five epochs straight, and two then `--resume` to five, through the library (as `train`
/// and `train --resume` call it), on `engine`.
fn straight_and_resumed(
    engine: EngineKind,
) -> (std::path::PathBuf, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let sets = [
        "layers=[36, 10, 3]",
        "batch_size=16",
        "optimizer=\"adam\"",
        "learning_rate=0.01",
        "l2=0.001",
    ];
    let (straight, resumed) = (tmp.path().join("straight"), tmp.path().join("resumed"));
    let run = |out: &Path, config: &TrainConfig, resume: bool| {
        let opts = RunOptions {
            out: out.to_path_buf(),
            force: false,
            data_dir: Some(data.clone()),
            engine: engine.clone(),
            resume,
            interrupt: None,
            datasets: None,
            stop_after: None,
        };
        run_training(config, &opts, |_, _| {}).unwrap();
    };
    let config = |epochs: &str| {
        let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        all.push(epochs.to_string());
        TrainConfig::from_toml_str("", Path::new("(built-in default)"), "momentum", &all).unwrap()
    };
    run(&straight, &config("epochs=5"), false);
    run(&resumed, &config("epochs=2"), false);
    let checkpoint = load_checkpoint(&RunDir::new(&resumed).checkpoint()).unwrap();
    assert_eq!(checkpoint.epochs_done, 2);
    assert!(
        checkpoint.state.step > 0 && checkpoint.state.second.iter().any(|&v| v > 0.0),
        "Adam's state is saved"
    );
    let going_on = RunDir::new(&resumed)
        .read_config_with(&["epochs=5".to_string()])
        .unwrap();
    run(&resumed, &going_on, true);
    (straight, resumed, tmp)
}

#[test]
fn two_epochs_then_resume_to_five_equals_five_straight_on_the_cpu() {
    let (straight, resumed, _tmp) = straight_and_resumed(EngineKind::Cpu { threads: 0 });
    assert_eq!(metrics(&straight).len(), 6);
    assert_eq!(metrics(&straight), metrics(&resumed));
    assert_eq!(
        load_model(&RunDir::new(&straight).model()).unwrap(),
        load_model(&RunDir::new(&resumed).model()).unwrap()
    );
    let (a, b) = (
        load_checkpoint(&RunDir::new(&straight).checkpoint()).unwrap(),
        load_checkpoint(&RunDir::new(&resumed).checkpoint()).unwrap(),
    );
    assert_eq!(
        a.state, b.state,
        "weights, best, optimiser state and step all equal"
    );
    assert_eq!(a.stopping, b.stopping);
    let config = std::fs::read_to_string(RunDir::new(&resumed).config()).unwrap();
    assert!(config.contains("epochs = 5"), "{config}");
}

#[test]
fn two_epochs_then_resume_to_five_equals_five_straight_on_the_gpu() {
    let Some(context) = crate::common::gpu() else {
        return;
    };
    // The GPU repeats bit for bit on one adapter, and a checkpoint holds its state exactly.
    let (straight, resumed, _tmp) = straight_and_resumed(EngineKind::Gpu {
        context: Box::new(context),
    });
    assert_eq!(metrics(&straight), metrics(&resumed));
    let (a, b) = (
        load_checkpoint(&RunDir::new(&straight).checkpoint()).unwrap(),
        load_checkpoint(&RunDir::new(&resumed).checkpoint()).unwrap(),
    );
    assert_eq!(a.state, b.state);
}

/// See: a pruned sweep sharded three ways now and then finished a run its rung pruned: one
/// shard took the run to the rung (the owner was busy) while the owner, which had listed it
/// to go on, then resumed it "to the rung" from the rung, trained past it to the end. Its
/// sibling: a run listed to start afresh that another shard has begun is left where it is.
#[test]
fn a_run_resumed_to_the_rung_it_has_reached_stops_there_without_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let config = TrainConfig::from_toml_str(
        "",
        Path::new("(built-in default)"),
        "momentum",
        &[
            "layers=[36, 8, 3]".into(),
            "batch_size=16".into(),
            "epochs=4".into(),
        ],
    )
    .unwrap();
    let out = tmp.path().join("run");
    let to_rung = |resume: bool| {
        let opts = RunOptions {
            out: out.clone(),
            force: true,
            data_dir: Some(data.clone()),
            engine: EngineKind::Cpu { threads: 1 },
            resume,
            interrupt: None,
            datasets: None,
            stop_after: Some(2),
        };
        let mut trained = 0;
        let outcome = run_training(&config, &opts, |_, _| trained += 1);
        (outcome, trained)
    };
    let (outcome, trained) = to_rung(false);
    assert!(matches!(outcome, Err(wgtrain::Error::Paused { epoch: 2 })));
    assert_eq!(trained, 2);
    let before = metrics(&out);
    assert_eq!(before.len(), 3, "a header and two epochs");
    for resume in [true, false] {
        let (outcome, trained) = to_rung(resume);
        assert!(
            matches!(outcome, Err(wgtrain::Error::Paused { epoch: 2 })),
            "resume {resume}: {outcome:?}"
        );
        assert_eq!(trained, 0, "resume {resume}: trained again");
    }
    assert_eq!(metrics(&out), before, "nothing trained past the rung");
    assert!(!RunDir::new(&out).is_finished());
    assert_eq!(
        load_checkpoint(&RunDir::new(&out).checkpoint())
            .unwrap()
            .epochs_done,
        2
    );
}

#[test]
fn resume_refuses_a_directory_without_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(RunDir::new(tmp.path()).config(), "layers = [36, 8, 3]\n").unwrap();
    let o = wgtrain(&[
        "train",
        "--resume",
        tmp.path().to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("last.safetensors") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn ctrl_c_stops_after_the_epoch_saves_and_says_how_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 2000, 60, 6, 3, true);
    let out = tmp.path().join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args([
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--set",
            "layers=[36, 64, 3]",
            "--set",
            "batch_size=8",
            "--set",
            "epochs=100000",
            "--set",
            "early_stopping=false",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it trains, a second process may not train into its directory.
    wait_for_epochs(&RunDir::new(&out).metrics(), 2);
    let second = wgtrain(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
        "--data",
        data.to_str().unwrap(),
        "--set",
        "epochs=3",
    ]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is in use by another wgtrain process"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let o = interrupt_after_epochs(child, &RunDir::new(&out).metrics(), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("--resume") && !err.contains("panicked"),
        "{err}"
    );
    let saved = load_checkpoint(&RunDir::new(&out).checkpoint()).unwrap();
    assert!(saved.epochs_done >= 2);
    assert_eq!(
        metrics(&out).len(),
        saved.epochs_done + 1,
        "metrics.csv ends at the checkpoint"
    );
    assert!(
        !RunDir::new(&out).summary().exists(),
        "an interrupted run is not finished"
    );
    let to = (saved.epochs_done + 1).to_string();
    let o = wgtrain(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
        "--data",
        data.to_str().unwrap(),
        "--set",
        &format!("epochs={to}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(RunDir::new(&out).summary().exists());
}

#[test]
fn a_run_early_stopping_ended_stays_ended_on_resume_unless_its_settings_let_it_go_on() {
    // See: resuming a run that had stopped early trained one more epoch (its saved state
    // re-judged only after the next epoch), and --set patience / early_stopping were ignored.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "--threads",
            "1",
            "--set",
            "learning_rate=0.3",
            "--set",
            "early_stopping_rule=\"no_improvement\"",
            "--set",
            "patience=1",
        ];
        args.extend_from_slice(extra);
        let o = train_small(&data, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let summary = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(RunDir::new(dir).summary()).unwrap()).unwrap()
    };
    // This easy data's validation loss falls to a floor within a few epochs, so with
    // patience 1 the run stops early wherever it runs.
    train(&["--out", run.to_str().unwrap(), "--set", "epochs=40"]);
    let first = summary(&run);
    assert_eq!(
        first["stopped_early"], true,
        "the setup must stop early: {first}"
    );
    let epochs = first["epochs_run"].as_u64().unwrap() as usize;
    let rows = metrics(&run);
    assert_eq!(rows.len(), epochs + 1);

    // Resumed as it was, or with more epochs: an uninterrupted run would not have gone on.
    let r = run.to_str().unwrap();
    let said = train(&["--resume", r]);
    assert!(
        said.contains("nothing left to train") && said.contains("stopped early"),
        "{said}"
    );
    train(&["--resume", r, "--set", "epochs=80"]);
    assert_eq!(metrics(&run), rows);
    let again = summary(&run);
    assert_eq!(
        (
            &again["stopped_early"],
            &again["best_epoch"],
            &again["test_loss"]
        ),
        (
            &first["stopped_early"],
            &first["best_epoch"],
            &first["test_loss"]
        )
    );

    // Fewer epochs than are done is an error that changes nothing.
    let config = std::fs::read_to_string(RunDir::new(&run).config()).unwrap();
    let o = wgtrain(&[
        "train",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--resume",
        r,
        "--set",
        "epochs=1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("epochs done, more than epochs = 1"));
    assert_eq!(
        std::fs::read_to_string(RunDir::new(&run).config()).unwrap(),
        config
    );
    assert_eq!(metrics(&run), rows);

    // With early stopping off, the resumed run trains on to its epochs.
    let target = epochs + 3;
    train(&[
        "--resume",
        r,
        "--set",
        "early_stopping=false",
        "--set",
        &format!("epochs={target}"),
    ]);
    let resumed = metrics(&run);
    assert_eq!(resumed.len(), target + 1);
    assert_eq!(resumed[..rows.len()], rows[..]);
    assert_eq!(summary(&run)["stopped_early"], false);
}

/// Every file of `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_resume_may_not_change_the_split_or_the_first_weights_and_one_with_nothing_to_train_changes_no_file()
 {
    // See: `--resume RUN --set seed=7` re-split train/validation mid-run (validating on rows
    // already trained on) and rewrote config.toml and summary.json to claim seed 7 throughout.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let o = train_small(&data, &["--out", r, "--set", "epochs=2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&run);
    for (set, refusal) in [
        ("seed=7", "a resume cannot change seed from 1 to 7"),
        ("val_fraction=0.3", "a resume cannot change val_fraction"),
        ("init=\"he\"", "a resume cannot change init"),
        // Refused once the checkpoint is read: the lock taken for it goes with the refusal.
        ("epochs=1", "more than epochs = 1"),
    ] {
        let o = train_small(&data, &["--resume", r, "--set", "epochs=4", "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{set}: {err}");
        assert!(err.contains(refusal), "{set}: {err}");
        assert_eq!(snapshot(&run), before, "{set} changed the run's files");
    }
    // The finished run resumed to the end it has: nothing to train, no file touched.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = train_small(&data, &["--resume", r]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("nothing left to train"), "{err}");
    assert_eq!(snapshot(&run), before);
    // A key that is a hyperparameter still goes on from the resumed epoch, and the run's
    // legs say since when (config.toml holds the latest value).
    let o = train_small(
        &data,
        &[
            "--resume",
            r,
            "--set",
            "epochs=3",
            "--set",
            "learning_rate=0.05",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(metrics(&run).len(), 4);
    let legs = RunDir::new(&run).read_summary().unwrap().legs;
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert_eq!(legs[1].first_epoch, 3);
    assert_eq!(legs[1].changed, ["learning_rate from 0.01 to 0.05"]);
    assert!(
        err.contains("3 on") && err.contains("learning_rate from 0.01 to 0.05"),
        "{err}"
    );
}

#[test]
fn a_run_resumed_on_another_thread_count_records_each_leg_and_ends_as_one_never_stopped() {
    // A resume on another thread count gave other numbers: the CPU path summed each
    // gradient in one part per thread. Its sums are now split where the data says, so the
    // resumed run ends with the model and metrics of a run that never stopped, and the legs
    // record the thread counts without a word of warning.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    // Batches of 128 rows are 2 chunks, which 1 thread takes in turn and 2 side by side.
    let small = |extra: &[&str]| {
        let mut args = vec!["--set", "batch_size=128"];
        args.extend_from_slice(extra);
        train_small(&data, &args)
    };
    let (run, whole) = (tmp.path().join("run"), tmp.path().join("whole"));
    let (r, w) = (run.to_str().unwrap(), whole.to_str().unwrap());
    let o = small(&["--out", r, "--threads", "1", "--set", "epochs=2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let legs = |dir: &Path| -> Vec<wgtrain::checkpoint::Leg> {
        RunDir::new(dir).read_summary().unwrap().legs
    };
    let one = legs(&run);
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!((one[0].first_epoch, one[0].last_epoch), (1, 2));
    let o = small(&["--resume", r, "--threads", "2", "--set", "epochs=3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("note:"), "{err}");
    let two = legs(&run);
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0], one[0]);
    assert_eq!((two[1].first_epoch, two[1].last_epoch), (3, 3));
    assert_ne!(two[0].device, two[1].device);
    assert_eq!(
        RunDir::new(&run).read_summary().unwrap().device_detail,
        two[1].device,
        "on the CPU a leg is named as the engine names itself"
    );
    let o = small(&["--out", w, "--threads", "1", "--set", "epochs=3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        model(&run) == model(&whole),
        "the resumed run's model differs from the uninterrupted one's"
    );
    assert_eq!(metrics(&run), metrics(&whole));
    // Resumed on the same thread count, the last leg grows.
    let o = small(&["--resume", r, "--threads", "2", "--set", "epochs=4"]);
    assert!(o.status.success());
    let three = legs(&run);
    assert_eq!(three.len(), 2, "{three:?}");
    assert_eq!(three[1].last_epoch, 4);
}
