//! What wgtrain reads and writes where a user points it: an output file is written through,
//! as a shell's `>` writes it, never replaced; a directory holding the user's own files is
//! refused unless `--force`, which then replaces only wgtrain's files; an input that is not
//! a regular file (a FIFO, a device) is refused at once rather than read.

use std::path::Path;

use crate::common::{stderr, train_small, wgtrain, write_dataset};

/// `wgtrain bench` of a tiny MLP on the CPU, its JSON rows written to `json`.
fn bench_into(data: &Path, json: &Path) -> std::process::Output {
    wgtrain(&[
        "bench",
        "--data",
        data.to_str().unwrap(),
        "--set",
        "layers=[36, 10, 3]",
        "--devices",
        "cpu",
        "--warmup",
        "0",
        "--epochs",
        "1",
        "--json",
        json.to_str().unwrap(),
    ])
}

#[cfg(unix)]
#[test]
fn bench_json_is_written_through_a_symlink_and_into_a_device_never_replacing_them() {
    // See: `bench --json /dev/full` turned the device into a regular file and exited 0; a
    // symlink given as --json was replaced by a regular file.
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, true);
    let target = tmp.path().join("target.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let link = tmp.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = bench_into(&data, &link);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced"
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(
        !written.contains("old") && written.lines().count() >= 1,
        "{written}"
    );
    // A path that cannot be opened for writing (a dangling symlink into a missing directory)
    // fails before anything is timed, as `>` fails before the command runs.
    let dangling = tmp.path().join("dangling.jsonl");
    std::os::unix::fs::symlink(tmp.path().join("no-such-dir/x.jsonl"), &dangling).unwrap();
    let o = bench_into(&data, &dangling);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("dangling.jsonl"), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "it timed first: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Into devices of the test's own (made where mknod may, as root: CI), so that a
    // regression replaces nothing of the machine's: a null device takes the rows and stays a
    // device; a full one (ENOSPC on every write) is an error, and stays a device.
    let device = |name: &str, minor: &str| {
        let path = tmp.path().join(name);
        let made = std::process::Command::new("mknod")
            .args([path.to_str().unwrap(), "c", "1", minor])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        made.then_some(path)
    };
    let is_device = |path: &Path| {
        std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_char_device()
    };
    let (Some(null), Some(full)) = (device("null", "3"), device("full", "7")) else {
        crate::common::skip(
            "mknod (devices to write into) needs root",
            "WGTRAIN_REQUIRE_MKNOD",
        );
        return;
    };
    let o = bench_into(&data, &null);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_device(&null), "the null device was replaced");
    let o = bench_into(&data, &full);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--json") && stderr(&o).contains("No space left"),
        "{}",
        stderr(&o)
    );
    assert!(is_device(&full), "the full device was replaced");
}

/// `wgtrain train` of a tiny MLP for one epoch on the CPU into `out`, with `extra` arguments.
fn train_into(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--out", out.to_str().unwrap(), "--set", "epochs=1"];
    args.extend_from_slice(extra);
    train_small(data, &args)
}

#[test]
fn a_run_directory_holding_the_users_files_is_refused_and_force_replaces_only_wgtrains() {
    // See: `train --out DIR` into a directory of the user's own files (an accuracy.png,
    // notes) wrote over them without --force.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, true);
    let out = tmp.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "my notes").unwrap();
    std::fs::write(out.join("accuracy.png"), "my picture").unwrap();
    let o = train_into(&data, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("holds files wgtrain did not write")
            && err.contains("accuracy.png")
            && err.contains("notes.txt"),
        "{err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["accuracy.png", "notes.txt"], "the refusal wrote");
    // --force writes the run beside the notes, which stay as they were.
    let o = train_into(&data, &out, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "my notes"
    );
    assert!(out.join("summary.json").is_file());
    // An empty directory, or one holding a run of wgtrain's alone, is as before.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(train_into(&data, &empty, &[]).status.success());
    let again = train_into(&data, &empty, &[]);
    assert!(
        stderr(&again).contains("already holds a run"),
        "{}",
        stderr(&again)
    );
    assert!(train_into(&data, &empty, &["--force"]).status.success());
}

#[test]
fn a_sweep_directory_holding_the_users_files_is_refused_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, true);
    let file = tmp.path().join("s.toml");
    std::fs::write(
        &file,
        "seeds = [1]\n[grid]\nlayers = [[36, 10, 3]]\nepochs = [1]\n",
    )
    .unwrap();
    let out = tmp.path().join("documents");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "mine").unwrap();
    // Named as a sweep names its picture, but not beside any sweep's runs: the user's.
    let pictures = tmp.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    std::fs::write(pictures.join("comparison.png"), "mine").unwrap();
    let sweep = |out: &Path| {
        wgtrain(&[
            "sweep",
            file.to_str().unwrap(),
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    for (dir, name) in [(&out, "thesis.tex"), (&pictures, "comparison.png")] {
        let o = sweep(dir);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(name), "{}", stderr(&o));
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), "mine");
    }
    // Its own directory, rerun, is still its own.
    let own = tmp.path().join("sweep");
    assert!(sweep(&own).status.success());
    let o = sweep(&own);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_given_as_an_input_is_refused_not_read() {
    // See: a FIFO as a data file blocked forever (and swallowed the first Ctrl-C);
    // /dev/zero was read until memory ran out.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, false);
    let fifo = data.join("train-labels-idx1-ubyte");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = tmp.path().join("run");
    let o = train_into(&data, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("train-labels-idx1-ubyte") && stderr(&o).contains("named pipe"),
        "{}",
        stderr(&o)
    );
    for (args, what) in [
        (vec!["train", "--config", "/dev/zero"], "/dev/zero"),
        (vec!["eval", "--model", "/dev/zero"], "/dev/zero"),
        (
            vec!["predict", "--model", "/dev/zero", "/dev/zero"],
            "/dev/zero",
        ),
    ] {
        let o = wgtrain(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains(what) && stderr(&o).contains("a device"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn eval_leaves_a_confusion_picture_outside_a_run_directory_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 40, 6, 3, true);
    let run = tmp.path().join("run");
    assert!(train_into(&data, &run, &[]).status.success());
    // In the run directory, eval draws it.
    let eval = |model: &Path| {
        wgtrain(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
    };
    let o = eval(&run.join("model.safetensors"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("confusion.png").is_file());
    // Copied, under its own name, among the user's files beside a picture of theirs, it
    // does not.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::copy(
        run.join("model.safetensors"),
        mine.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(mine.join("confusion.png"), "my picture").unwrap();
    let o = eval(&mine.join("model.safetensors"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(mine.join("confusion.png")).unwrap(),
        "my picture"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not drawn"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_tuning_cache_that_cannot_exist_is_no_tuning_not_an_error() {
    // See: XDG_CACHE_HOME=/dev/null failed every GPU run, with a hint to delete the file.
    let file = wgtrain::gpu::TuningFile::load(Path::new("/dev/null/wgtrain/tuning.toml")).unwrap();
    assert_eq!(file, wgtrain::gpu::TuningFile::default());
}
