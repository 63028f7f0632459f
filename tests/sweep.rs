//! Sweeps: expansion order and naming, resume, and sharding into one directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use wgtrain::rundir::RunDir;
use wgtrain::sweep::{Shard, expand};

use crate::common::{
    interrupt, interrupt_after_epochs, stderr, sweep_in_library, wgtrain, write_dataset,
};

fn write_sweep(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("grid.toml");
    std::fs::write(
        &path,
        "seeds = [1, 2]\n[grid]\nlearning_rate = [0.05, 0.2]\nactivation = [\"tanh\", \"relu\"]\n",
    )
    .unwrap();
    path
}

const TINY: [&str; 8] = [
    "--set",
    "layers=[36, 8, 3]",
    "--set",
    "epochs=2",
    "--set",
    "batch_size=16",
    "--device",
    "cpu",
];

/// Runs `wgtrain sweep SWEEP --out OUT --data DATA ARGS...`, checks it succeeded, and returns
/// what it printed (stdout, then stderr).
pub fn run_sweep(sweep: &Path, data: &Path, out: &Path, args: &[&str]) -> String {
    let o = spawn_sweep(sweep, data, out, args)
        .wait_with_output()
        .expect("run wgtrain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

/// Starts `wgtrain sweep SWEEP --out OUT --data DATA ARGS...` with its output captured.
fn spawn_sweep(sweep: &Path, data: &Path, out: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .arg("sweep")
        .arg(sweep)
        .arg("--out")
        .arg(out)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Merges the shards' runs in `sharded` (`wgtrain sweep report`) and checks the results equal
/// the sweep's run on one machine in `whole`, seconds aside.
pub fn assert_merged_results_equal(sharded: &Path, whole: &Path) {
    let report = crate::common::wgtrain(&["sweep", "report", sharded.to_str().unwrap()]);
    assert!(
        report.status.success(),
        "{}",
        crate::common::stderr(&report)
    );
    assert_eq!(rows_without_seconds(whole), rows_without_seconds(sharded));
}

/// results.csv without the seconds column (the only thing that differs between two runs).
pub fn rows_without_seconds(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("results.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

#[test]
fn a_grid_expands_in_a_fixed_order_with_readable_names() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = expand(&write_sweep(tmp.path()), &["epochs=3".into()], 100).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "activation=tanh_learning_rate=0.05-seed1",
            "activation=tanh_learning_rate=0.05-seed2",
            "activation=tanh_learning_rate=0.2-seed1",
            "activation=tanh_learning_rate=0.2-seed2",
            "activation=relu_learning_rate=0.05-seed1",
            "activation=relu_learning_rate=0.05-seed2",
            "activation=relu_learning_rate=0.2-seed1",
            "activation=relu_learning_rate=0.2-seed2",
        ]
    );
    assert!(
        runs.iter().all(|r| r.config.epochs == 3),
        "--set applies to every run"
    );
    assert_eq!(runs[5].config.seed, 2);
    assert_eq!(runs[5].config.learning_rate, 0.05);
}

#[test]
fn the_paper_sweep_holds_every_experiment_with_three_seeds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps/paper.toml");
    let runs = expand(&path, &[], 100).unwrap();
    assert_eq!(runs.len(), 24);
    assert!(
        runs.iter().all(|r| r.config.paper.is_some()),
        "each run carries the paper's figures"
    );
    assert_eq!(runs[0].id, "softmax-seed1");
}

#[test]
fn the_example_search_draws_27_trials_of_the_paper_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps/search.toml");
    let runs = expand(&path, &[], 100).unwrap();
    assert_eq!(runs.len(), 27);
    assert_eq!(
        (runs[0].id.as_str(), runs[26].id.as_str()),
        ("trial00-seed1", "trial26-seed1")
    );
    for run in &runs {
        let c = &run.config;
        assert!(
            (0.001..=0.3).contains(&c.learning_rate),
            "{:?}",
            run.overrides
        );
        assert!(
            (0.5..=0.99).contains(&c.momentum_gamma),
            "{:?}",
            run.overrides
        );
        assert!(
            [32, 64, 128, 256].contains(&c.layers[1]),
            "{:?}",
            run.overrides
        );
    }
    let activations: std::collections::BTreeSet<_> = runs
        .iter()
        .map(|r| format!("{:?}", r.config.activation))
        .collect();
    assert_eq!(
        activations.len(),
        3,
        "every activation is drawn: {activations:?}"
    );
}

#[test]
fn shards_split_the_runs_disjointly_and_read_slurm_variables() {
    let shards: Vec<Shard> = (0..3)
        .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
        .collect();
    for run in 0..10 {
        assert_eq!(shards.iter().filter(|s| s.takes(run)).count(), 1);
    }
    assert!(
        Shard::parse("3/3").is_none()
            && Shard::parse("1/0").is_none()
            && Shard::parse("x").is_none()
    );
}

/// Runs `sweep` as three processes at once, shards 0/3, 1/3 and 2/3 into `out`, checks each
/// succeeded, then rebuilds the report from the shared directory.
fn sweep_in_three_shards(sweep: &Path, data: &Path, out: &Path, args: &[&str]) {
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            spawn_sweep(sweep, data, out, &[&["--shard", &shard], args].concat())
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let report = wgtrain(&["sweep", "report", out.to_str().unwrap()]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
}

#[test]
fn three_shards_into_one_directory_give_the_same_results_as_one_run_and_reruns_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_sweep(tmp.path());
    let (whole, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));
    run_sweep(&sweep, &data, &whole, &TINY);
    // Three processes at once, one directory.
    sweep_in_three_shards(&sweep, &data, &sharded, &TINY);
    let rows = rows_without_seconds(&whole);
    assert_eq!(rows.len(), 9, "header + 8 runs");
    assert_eq!(rows, rows_without_seconds(&sharded));
    assert!(
        std::fs::read_to_string(whole.join("results.md"))
            .unwrap()
            .contains("| relu | 0.2 |")
    );
    for (plot, what) in [
        ("comparison.png", "its comparison"),
        ("validation.png", "every run's validation curve"),
    ] {
        assert!(
            std::fs::read(whole.join(plot))
                .unwrap()
                .starts_with(b"\x89PNG"),
            "the sweep draws {what}"
        );
    }
    // validation.svg reads: each of the two epochs labelled once (they read "1 1 1 1 1 2 2 2
    // 2 2 2"), and the log loss axis labelled at least four times (it had one label or none).
    let texts = crate::common::svg_texts(&whole.join("validation.svg"));
    for epoch in ["1", "2"] {
        let n = texts.iter().filter(|t| *t == epoch).count();
        assert_eq!(n, 1, "epoch {epoch} labelled once: {texts:?}");
    }
    let losses: Vec<f64> = (texts.iter())
        .filter(|t| t.contains('.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(losses.len() >= 4, "loss ticks: {texts:?}");

    // A rerun skips what finished and redoes a run that was interrupted.
    std::fs::remove_file(whole.join("activation=tanh_learning_rate=0.2-seed2/summary.json"))
        .unwrap();
    let again = run_sweep(&sweep, &data, &whole, &TINY);
    assert!(again.contains("trained 1, skipped 7 finished"), "{again}");
    assert_eq!(rows, rows_without_seconds(&whole));
}

#[test]
fn runs_side_by_side_on_the_cpu_give_what_one_at_a_time_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_sweep(tmp.path());
    let run = |out: &Path, threads: usize, pack: usize| {
        let engine = wgtrain::device::EngineKind::Cpu { threads };
        let sets = ["layers=[36, 8, 3]", "epochs=2", "batch_size=16"];
        sweep_in_library(&sweep, &data, out, engine, Some(pack), &sets)
    };
    let (together, alone) = (tmp.path().join("together"), tmp.path().join("alone"));
    // Two runs at a time on two threads: one thread each, as one thread one at a time.
    let log = run(&together, 2, 2);
    assert!(
        log.contains("2 at a time side by side on the CPU, 1 thread each"),
        "{log}"
    );
    let log = run(&alone, 1, 1);
    assert!(!log.contains("side by side"), "{log}");
    let rows = rows_without_seconds(&together);
    assert_eq!(rows.len(), 9, "header + 8 runs");
    assert_eq!(rows, rows_without_seconds(&alone));
}

#[test]
fn a_cpu_pack_of_fewer_runs_than_cores_shares_every_core_among_them_to_the_same_bits() {
    // A pruning rung's last survivor trained on one thread while the other cores idled. Now
    // the runs left share all the cores, and their results are the bits one thread gives.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 30, 6, 3, true);
    let sweep = tmp.path().join("one.toml");
    std::fs::write(&sweep, "seeds = [1]\n[grid]\nlearning_rate = [0.05]\n").unwrap();
    // Batches of 128 rows are 2 chunks: 2 threads take one each, 1 thread both in turn.
    let sets = ["layers=[36, 8, 3]", "epochs=3", "batch_size=128"];
    let run = |out: &Path, threads: usize, pack: Option<usize>| {
        let engine = wgtrain::device::EngineKind::Cpu { threads };
        sweep_in_library(&sweep, &data, out, engine, pack, &sets)
    };
    let (shared, alone) = (tmp.path().join("shared"), tmp.path().join("alone"));
    let log = run(&shared, 2, None);
    assert!(log.contains("one at a time on the CPU, 2 threads"), "{log}");
    run(&alone, 1, Some(1));
    assert_eq!(rows_without_seconds(&shared), rows_without_seconds(&alone));
    let model = |dir: &Path| std::fs::read(dir.join("learning_rate=0.05-seed1/model.safetensors"));
    assert!(model(&shared).unwrap() == model(&alone).unwrap());
}

#[test]
fn a_sweep_stopped_with_ctrl_c_goes_on_from_each_runs_last_epoch_to_the_same_results() {
    // See: Ctrl-C killed a sweep at once, and the rerun trained its unfinished runs again from
    // the first epoch. One run at a time, and two side by side (one thread each).
    stop_and_go_on(&["--threads", "1", "--pack", "1"], 1);
    stop_and_go_on(&["--threads", "2", "--pack", "2"], 2);
}

/// Interrupts a two-run sweep (with `extra` arguments) once its first run has two epochs,
/// expecting `saved_runs` runs saved mid-way, reruns it, and compares with the sweep uninterrupted.
fn stop_and_go_on(extra: &[&str], saved_runs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let sweep = tmp.path().join("two.toml");
    std::fs::write(&sweep, "seeds = [1]\n[grid]\nlearning_rate = [0.05, 0.1]\n").unwrap();
    let args = [
        &[
            "--device",
            "cpu",
            "--set",
            "layers=[36, 64, 3]",
            "--set",
            "batch_size=8",
            "--set",
            "epochs=300",
            "--set",
            "early_stopping=false",
        ],
        extra,
    ]
    .concat();
    let (whole, part) = (tmp.path().join("whole"), tmp.path().join("part"));
    run_sweep(&sweep, &data, &whole, &args);

    let first = part.join("learning_rate=0.05-seed1");
    let child = spawn_sweep(&sweep, &data, &part, &args);
    let o = interrupt_after_epochs(child, &RunDir::new(&first).metrics(), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "{saved_runs} run{} saved mid-way",
            if saved_runs == 1 { "" } else { "s" }
        )),
        "{err}"
    );
    let saved = wgtrain::checkpoint::load_checkpoint(&RunDir::new(&first).checkpoint()).unwrap();
    assert!(
        (2..300).contains(&saved.epochs_done),
        "stopped after epoch {}",
        saved.epochs_done
    );
    assert!(!RunDir::new(&first).summary().exists());
    if saved_runs == 1 {
        assert!(
            !part.join("learning_rate=0.1-seed1").exists(),
            "no run starts after Ctrl-C"
        );
    }

    // Mark the first saved epoch's row: a run that goes on keeps the rows it has, one
    // trained again from the start would rewrite them.
    let metrics = std::fs::read_to_string(RunDir::new(&first).metrics()).unwrap();
    let (head, rest) = metrics.split_once('\n').unwrap();
    let (row1, rest) = rest.split_once('\n').unwrap();
    let marked = format!("{},12345.678", row1.rsplit_once(',').unwrap().0);
    std::fs::write(
        RunDir::new(&first).metrics(),
        format!("{head}\n{marked}\n{rest}"),
    )
    .unwrap();

    let log = run_sweep(&sweep, &data, &part, &args);
    let metrics = std::fs::read_to_string(RunDir::new(&first).metrics()).unwrap();
    assert_eq!(
        metrics.lines().nth(1),
        Some(marked.as_str()),
        "epoch 1 kept"
    );
    assert!(
        log.contains(&format!(
            "learning_rate=0.05-seed1: stopped after epoch {}, going on from there",
            saved.epochs_done
        )),
        "{log}"
    );
    assert_eq!(rows_without_seconds(&part), rows_without_seconds(&whole));
    let epochs = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("learning_rate=0.05-seed1/metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(
        epochs(&part),
        epochs(&whole),
        "every epoch as uninterrupted"
    );
}

#[test]
fn runs_side_by_side_that_do_not_fit_in_memory_together_are_a_clear_error() {
    // See: each run checked free memory alone as it started, and side by side they start at
    // once, so two runs of 60% of memory each passed and met the OOM killer.
    use wgtrain::device::EngineKind;
    let Some(free) = wgtrain::host::available_memory_bytes() else {
        eprintln!("skipped: this OS reports no free memory");
        return;
    };
    // The widest hidden layer whose run needs at most 60% of what is free.
    let needed = |h: usize| {
        let net = wgtrain::model::Network::dense(&[36, h, 3], wgtrain::model::Activation::Tanh);
        net.map_or(u128::MAX, |net| {
            EngineKind::Cpu { threads: 1 }.memory_needed(&net, 32)
        })
    };
    let (mut lo, mut hi) = (1usize, 1usize << 40);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if needed(mid) <= u128::from(free) * 6 / 10 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("two.toml");
    std::fs::write(&sweep, "seeds = [1, 2]\n").unwrap();
    let out = tmp.path().join("out");
    let layers = format!("layers=[36, {lo}, 3]");
    let o = wgtrain(&[
        "sweep",
        sweep.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "2",
        "--pack",
        "2",
        "--set",
        &layers,
        // A batch the 96 training rows hold (the data's fit is checked first).
        "--set",
        "batch_size=16",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 runs side by side need at least") && err.contains("--pack 1"),
        "{err}"
    );
}

#[test]
fn a_run_another_process_is_training_is_left_to_it() {
    // See: the same sweep started twice ended the second with an error at the first run the
    // other was training, after both had started on the rest.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_sweep(tmp.path());
    let out = tmp.path().join("out");
    let busy = out.join("activation=relu_learning_rate=0.2-seed1");
    std::fs::create_dir_all(&busy).unwrap();
    // This test process plays the other one: it holds the run directory's lock.
    let lock = std::fs::File::create(busy.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let log = run_sweep(&sweep, &data, &out, &TINY);
    assert!(
        log.contains("activation=relu_learning_rate=0.2-seed1: another wgtrain process is training it, skipped"),
        "{log}"
    );
    assert!(
        log.contains("trained 7, skipped 0 finished, 0 diverged, 1 left to another process"),
        "{log}"
    );
    assert!(
        !RunDir::new(&busy).metrics().exists(),
        "nothing written into it"
    );
    drop(lock);
    let log = run_sweep(&sweep, &data, &out, &TINY);
    assert!(log.contains("trained 1, skipped 7 finished"), "{log}");
}

/// The cells of results.md's table rows (header first), split at `|`.
fn results_table(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("results.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn a_sweep_report_ranks_its_settings_by_validation_loss_with_a_column_per_swept_key() {
    // results.md for a 2 × 2 grid showed four columns of the paper's "–",
    // "± 0.00" with one seed, no column per swept key, rows in no order and no best.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    let sweep = tmp.path().join("grid.toml");
    std::fs::write(
        &sweep,
        "[grid]\nlearning_rate = [0.003, 0.2]\nactivation = [\"tanh\", \"relu\"]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    run_sweep(&sweep, &data, &out, &TINY);
    let table = results_table(&out);
    assert_eq!(
        table[0],
        [
            "rank",
            "activation",
            "learning_rate",
            "best val loss",
            "test acc",
            "test loss",
            "best epochs",
            "seeds"
        ],
        "no paper columns: no config here carries the paper's figures"
    );
    let rows = &table[1..];
    assert_eq!(rows.len(), 4);
    let val_loss = |row: &Vec<String>| -> f64 {
        assert!(row[3].ends_with(" ± —"), "one seed: {row:?}");
        row[3].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        rows.windows(2).all(|w| val_loss(&w[0]) <= val_loss(&w[1])),
        "{rows:?}"
    );
    let ranks: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ranks, ["1 (best)", "2", "3", "4"]);
    // Each row's figures are its own setting's, as results.csv has them.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    for row in rows {
        let (activation, learning_rate) = (&row[1], &row[2]);
        let line = csv
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "activation={activation}_learning_rate={learning_rate}-seed1,"
                ))
            })
            .unwrap_or_else(|| panic!("{row:?} not in {csv}"));
        let cells: Vec<&str> = line.split(',').collect();
        let csv_val_loss: f64 = cells[7].parse().unwrap();
        assert!(
            (csv_val_loss - val_loss(row)).abs() < 1e-4,
            "{row:?} vs {line}"
        );
        // The CPU has no adapter; results.csv says so with an empty cell.
        assert_eq!((cells[10], cells[11]), ("cpu", ""), "{line}");
    }
    assert!(
        !std::fs::read_to_string(out.join("results.md"))
            .unwrap()
            .contains("± 0.00")
    );

    // `table` and `plot` of `DIR/*` pass over the sweep's own files (results, plots).
    let everything: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(everything.iter().any(|p| p.ends_with("comparison.png")));
    let mut table = vec!["table"];
    table.extend(everything.iter().map(String::as_str));
    let o = wgtrain(&table);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2 + 4);
    let plots = tmp.path().join("plots");
    let mut plot = vec!["plot", "--out", plots.to_str().unwrap()];
    plot.extend(everything.iter().map(String::as_str));
    let o = wgtrain(&plot);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(plots.join("accuracy.png").is_file());
}

#[test]
fn the_paper_columns_appear_only_where_a_config_carries_the_papers_figures() {
    let mut config = wgtrain::config::TrainConfig::default();
    let run = |name: &str, config: &wgtrain::config::TrainConfig| {
        let named = wgtrain::config::TrainConfig {
            name: name.into(),
            ..config.clone()
        };
        crate::common::run_record(named, 0.8, false, false)
    };
    let ours = wgtrain::report::markdown_table(&[run("mine", &config)]);
    assert!(!ours.contains("paper"), "{ours}");
    assert!(ours.contains("| 80.00% ± — | 1.0000 ± — |"), "{ours}");
    config.paper = Some(wgtrain::config::PaperResult {
        test_accuracy: 0.8426,
        test_loss: 0.45,
    });
    let papers = wgtrain::report::markdown_table(&[run("softmax", &config)]);
    assert!(papers.contains("| paper test acc |"), "{papers}");
    assert!(
        papers.contains("| 84.26% | 0.4500 | 80.00% ± — |"),
        "{papers}"
    );
}

#[test]
fn a_sweep_of_runs_names_its_settings_where_the_swept_keys_do_not_tell_them_apart() {
    // A key one setting sets and another leaves to its config shows the config's value; two
    // settings alike in every swept key (another config file) get their names beside.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 200, 50, 6, 3, true);
    std::fs::write(tmp.path().join("other.toml"), "learning_rate = 0.02\n").unwrap();
    let sweep = tmp.path().join("runs.toml");
    std::fs::write(
        &sweep,
        "[[runs]]\nset = { activation = \"relu\" }\n\n[[runs]]\nname = \"plain\"\n\n\
         [[runs]]\nconfig = \"other.toml\"\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    run_sweep(&sweep, &data, &out, &TINY);
    let table = results_table(&out);
    assert_eq!(
        table[0][..3],
        ["rank", "setting", "activation"],
        "{table:?}"
    );
    let row = |name: &str| table.iter().find(|r| r[1] == name).unwrap().clone();
    let default = wgtrain::config::TrainConfig::default()
        .activation
        .name()
        .to_string();
    assert_eq!(row("activation=relu")[2], "relu");
    assert_eq!(row("plain")[2], default);
    assert_eq!(row("other")[2], default);
}

/// A search over every kind of distribution, `trials` trials drawn by `search_seed`.
fn write_search(dir: &Path, name: &str, trials: usize, search_seed: u64, extra: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "trials = {trials}\nsearch_seed = {search_seed}\n[search]\n\
             learning_rate = {{ log_uniform = [0.0001, 0.1] }}\n\
             momentum_gamma = {{ uniform = [0.5, 0.9] }}\n\
             batch_size = {{ int = [2, 4] }}\n\
             activation = {{ choice = [\"tanh\", \"relu\", \"sigmoid\"] }}\n{extra}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_search_draws_the_same_trials_from_the_same_file_each_within_its_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let draws = |name: &str, seed: u64, extra: &str| -> Vec<Vec<(String, String)>> {
        let path = write_search(tmp.path(), name, 300, seed, extra);
        expand(&path, &[], 1000)
            .unwrap()
            .iter()
            .map(|run| {
                assert_eq!(run.id, format!("{}-seed1", run.setting));
                run.overrides
                    .iter()
                    .map(|o| {
                        let (k, v) = o.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .collect()
    };
    let trials = draws("a.toml", 3, "");
    assert_eq!(
        trials,
        draws("b.toml", 3, ""),
        "the same file, the same trials"
    );
    assert_ne!(
        trials,
        draws("c.toml", 4, ""),
        "another search seed, other trials"
    );
    // A key's draws do not depend on the other keys searched.
    let more = draws("d.toml", 3, "l2 = { log_uniform = [1e-6, 1e-3] }\n");
    let without = |t: &[Vec<(String, String)>]| -> Vec<Vec<(String, String)>> {
        t.iter()
            .map(|kv| kv.iter().filter(|(k, _)| k != "l2").cloned().collect())
            .collect()
    };
    assert_eq!(without(&more), trials);

    let column = |key: &str| -> Vec<String> {
        trials
            .iter()
            .map(|kv| kv.iter().find(|(k, _)| k == key).unwrap().1.clone())
            .collect()
    };
    let numbers =
        |key: &str| -> Vec<f64> { column(key).iter().map(|v| v.parse().unwrap()).collect() };
    let gamma = numbers("momentum_gamma");
    assert!(gamma.iter().all(|v| (0.5..=0.9).contains(v)));
    assert!(gamma.iter().any(|&v| v < 0.55) && gamma.iter().any(|&v| v > 0.85));
    // Log-uniform: about a third of the draws in each of the three decades.
    let rate = numbers("learning_rate");
    for decade in [1e-4, 1e-3, 1e-2] {
        let n = rate
            .iter()
            .filter(|&&v| (decade..10.0 * decade).contains(&v))
            .count();
        assert!(
            (70..130).contains(&n),
            "{n} of 300 draws in [{decade}, {})",
            10.0 * decade
        );
    }
    // Every whole number of the range, both ends included, and every choice.
    for (key, values) in [
        ("batch_size", vec!["2", "3", "4"]),
        ("activation", vec!["tanh", "relu", "sigmoid"]),
    ] {
        let drawn = column(key);
        assert!(
            drawn.iter().all(|v| values.contains(&v.as_str())),
            "{key}: {drawn:?}"
        );
        for v in values {
            let n = drawn.iter().filter(|d| *d == v).count();
            assert!((70..130).contains(&n), "{key} = {v} drawn {n} times of 300");
        }
    }
}

#[test]
fn a_search_trains_its_trials_and_a_rerun_finds_them_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_search(tmp.path(), "search.toml", 4, 1, "");
    let out = tmp.path().join("out");
    let first = run_sweep(&sweep, &data, &out, &TINY);
    assert!(first.contains("trained 4, skipped 0"), "{first}");
    let rows = rows_without_seconds(&out);
    let names: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "trial0-seed1",
            "trial1-seed1",
            "trial2-seed1",
            "trial3-seed1"
        ]
    );
    for row in &rows[1..] {
        for key in [
            "learning_rate=",
            "momentum_gamma=",
            "batch_size=",
            "activation=",
        ] {
            assert!(row.contains(key), "{row}");
        }
    }
    // The file draws the same trials again: every run is found finished as it was asked for.
    let again = run_sweep(&sweep, &data, &out, &TINY);
    assert!(again.contains("trained 0, skipped 4 finished"), "{again}");
    assert_eq!(rows, rows_without_seconds(&out));
}

/// A 9-trial search pruned at epochs 1 and 3 of 4 (η = 3), on tiny data.
fn write_pruned_search(dir: &Path) -> PathBuf {
    let path = dir.join("pruned.toml");
    std::fs::write(
        &path,
        "trials = 9\n[search]\nlearning_rate = { log_uniform = [0.01, 1.0] }\n\
         activation = { choice = [\"tanh\", \"relu\", \"sigmoid\"] }\n\
         [prune]\nmin_epochs = 1\nmax_epochs = 4\neta = 3\n",
    )
    .unwrap();
    path
}

/// `TINY` without its epochs: a pruning sweep's runs train to its max_epochs.
const TINY_PRUNED: [&str; 6] = [
    "--set",
    "layers=[36, 8, 3]",
    "--set",
    "batch_size=16",
    "--device",
    "cpu",
];

#[test]
fn a_pruned_search_keeps_the_best_third_at_each_rung_and_reruns_and_shards_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_pruned_search(tmp.path());
    let out = tmp.path().join("out");
    let text = run_sweep(&sweep, &data, &out, &TINY_PRUNED);
    assert!(
        text.contains("rung at epoch 1: 6 settings pruned"),
        "{text}"
    );
    assert!(
        text.contains("rung at epoch 3: 2 settings pruned"),
        "{text}"
    );
    assert!(
        text.contains("8 pruned; 1 finished and 8 pruned runs in"),
        "{text}"
    );
    // (run, status, epochs run) from results.csv.
    let rows = rows_without_seconds(&out);
    let status: Vec<(String, String, usize)> = rows[1..]
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            let n = f.len();
            // Overrides hold commas inside quotes: count fields from the end.
            (f[0].into(), f[n - 8].into(), f[n - 6].parse().unwrap())
        })
        .collect();
    let count = |s: &str, e: usize| status.iter().filter(|r| r.1 == s && r.2 == e).count();
    assert_eq!(
        (count("pruned", 1), count("pruned", 3), count("finished", 4)),
        (6, 2, 1)
    );
    // The rung at epoch 1 kept the three best by validation loss at epoch 1.
    let loss_at = |run: &str, epoch: usize| -> f64 {
        RunDir::new(out.join(run)).read_metrics(usize::MAX).unwrap()[..epoch]
            .iter()
            .map(|e| e.val_loss)
            .fold(f64::INFINITY, f64::min)
    };
    let worst_kept = status
        .iter()
        .filter(|r| r.2 > 1)
        .map(|r| loss_at(&r.0, 1))
        .fold(0.0, f64::max);
    let best_pruned = status
        .iter()
        .filter(|r| r.2 == 1)
        .map(|r| loss_at(&r.0, 1))
        .fold(f64::INFINITY, f64::min);
    assert!(
        worst_kept <= best_pruned,
        "{worst_kept} kept, {best_pruned} pruned"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| pruned at epoch 3 (val loss "), "{md}");
    assert!(md.contains("Epochs trained: 16 of the 36"), "{md}");
    assert!(md.contains("1 finished and 8 pruned runs in"), "{md}");

    // The bound a software adapter's note goes by: with one model shape and no early stop,
    // successive halving spends exactly its most, the 16 epochs results.md counts.
    let extra = ["layers=[36, 8, 3]".to_string(), "batch_size=16".to_string()];
    let runs = expand(&sweep, &extra, 1000).unwrap();
    let refs: Vec<&wgtrain::sweep::SweepRun> = runs.iter().collect();
    let epoch = wgtrain::bench::config_epoch_flops(&runs[0].config, &data).unwrap();
    let most = wgtrain::sweep::most_flops(&refs, &data).unwrap();
    assert!(
        (most / epoch - 16.0).abs() < 1e-9,
        "{} epochs",
        most / epoch
    );

    // A rerun decides alike and trains nothing (nor counts the pruned runs as pruned again).
    let again = run_sweep(&sweep, &data, &out, &TINY_PRUNED);
    assert!(
        again.contains("trained 0, skipped 9 finished, 0 diverged; 1 finished and 8 pruned runs"),
        "{again}"
    );
    assert_eq!(rows, rows_without_seconds(&out));
    // The same sweep with another [prune] (or none) is another sweep: refused, not mixed in.
    for (name, changed) in [
        ("eta2.toml", "eta = 3", "eta = 2"),
        (
            "unpruned.toml",
            "[prune]\nmin_epochs = 1\nmax_epochs = 4\neta = 3\n",
            "",
        ),
    ]
    .map(|(name, from, to)| {
        let text = std::fs::read_to_string(&sweep).unwrap();
        assert!(text.contains(from));
        (name, text.replace(from, to))
    }) {
        let path = tmp.path().join(name);
        std::fs::write(&path, changed).unwrap();
        let o = spawn_sweep(&path, &data, &out, &TINY_PRUNED)
            .wait_with_output()
            .unwrap();
        assert!(!o.status.success(), "{name}");
        assert!(
            stderr(&o).contains("was judged by [prune] min_epochs = 1, max_epochs = 4, eta = 3"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(rows, rows_without_seconds(&out), "nothing was written");
    // A sweep.json from before the record (a sweep pruning, maybe mid-way, when wgtrain was
    // upgraded) goes on as its file says, and is recorded from then on.
    let record_path = out.join("sweep.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    let fields = record.as_object_mut().unwrap();
    assert!(fields.remove("prune").is_some() && fields.remove("prune_recorded").is_some());
    std::fs::write(&record_path, record.to_string()).unwrap();
    let again = run_sweep(&sweep, &data, &out, &TINY_PRUNED);
    assert!(again.contains("trained 0, skipped 9 finished"), "{again}");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(record.contains("\"prune_recorded\": true"), "{record}");

    // Three shards at once, one directory: each waits for the others at each rung.
    let sharded = tmp.path().join("sharded");
    sweep_in_three_shards(&sweep, &data, &sharded, &TINY_PRUNED);
    assert_eq!(rows, rows_without_seconds(&sharded));

    // Three shards one after another (a Slurm array throttled to one task at a time): the
    // first trains the others' runs to each rung rather than wait for shards that cannot
    // start before it ends; the later ones find every run finished or pruned.
    let waves = tmp.path().join("waves");
    for i in 0..3 {
        let shard = format!("{i}/3");
        let mut child = spawn_sweep(
            &sweep,
            &data,
            &waves,
            &[&["--shard", &shard], &TINY_PRUNED[..]].concat(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "shard {shard} alone waited for the others: {}",
                    stderr(&child.wait_with_output().unwrap())
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{text}{}", stderr(&o));
        assert_eq!(
            text.contains("runs of other shards to it (no process is training them)"),
            i == 0,
            "{text}"
        );
    }
    assert_merged_results_equal(&waves, &out);
}

/// See: a run copied in from another sweep whose setting had the same name averaged into the
/// setting's row as another seed, though it trained at another learning rate.
#[test]
fn a_sweep_report_refuses_a_setting_whose_runs_differ_in_more_than_their_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let (first, second) = (
        tmp.path().join("first.toml"),
        tmp.path().join("second.toml"),
    );
    std::fs::write(&first, "[[runs]]\nname = \"a\"\n").unwrap();
    std::fs::write(
        &second,
        "seeds = [2]\n[[runs]]\nname = \"a\"\nset = { learning_rate = 0.3 }\n",
    )
    .unwrap();
    let (out, other) = (tmp.path().join("out"), tmp.path().join("other"));
    run_sweep(&first, &data, &out, &TINY);
    run_sweep(&second, &data, &other, &TINY);
    let copy = out.join("a-seed2");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(other.join("a-seed2")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let o = wgtrain(&["sweep", "report", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("but their configs differ (learning_rate = 0.01 / 0.3)"),
        "{}",
        stderr(&o)
    );
}

/// See: a search whose `layers` choice included another input width trained the trials before
/// the first such one, then ended midway (on a real sweep, hours in).
#[test]
fn a_sweep_with_a_setting_the_data_cannot_train_is_refused_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("unfit.toml");
    std::fs::write(
        &sweep,
        "trials = 6\n[search]\nlayers = { choice = [[36, 8, 3], [64, 8, 3]] }\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = spawn_sweep(
        &sweep,
        &data,
        &out,
        &[
            "--set",
            "epochs=1",
            "--set",
            "batch_size=16",
            "--device",
            "cpu",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("[64, 8, 3]: the input width must equal the data's 36 pixels"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing trained, nothing written");
}

#[test]
fn the_most_a_pruned_sweep_spends_keeps_the_costliest_settings_at_each_rung() {
    let prune = wgtrain::sweep::Prune {
        min_epochs: 3,
        max_epochs: 100,
        eta: 3,
        brackets: 1,
    };
    // configs/sweeps/search.toml's shape: 27 settings to 3 epochs, 9 on to 9, 3 to 27, one to
    // 81 and on to 100.
    assert_eq!(prune.most_cost(&[(1.0, 100); 27]), 262.0);
    // One costly setting among cheap ones is taken to be the one that goes on.
    assert_eq!(
        prune.most_cost(&[(1.0, 100), (10.0, 100), (1.0, 100)]),
        10.0 * 100.0 + 2.0 * 3.0
    );
    // A setting that trains fewer epochs than the first rung spends only those.
    assert_eq!(prune.most_cost(&[(1.0, 2), (1.0, 100)]), 2.0 + 100.0);
    // Without pruning every epoch of every setting would be spent: the bound is below.
    assert!(prune.most_cost(&[(1.0, 100); 27]) < 2700.0);
}

#[test]
fn hyperband_deals_settings_among_its_brackets_in_proportion_and_in_turn() {
    let prune = |brackets: usize| wgtrain::sweep::Prune {
        min_epochs: 3,
        max_epochs: 100,
        eta: 3,
        brackets,
    };
    assert_eq!(prune(1).brackets_for(27), vec![0; 27]);
    // Five brackets from epochs 3, 9, 27, 81 and none: weights 3^s / (s + 1) for s = 4..0
    // rungs, 16.2 : 6.75 : 3 : 1.5 : 1.
    let dealt = prune(5).brackets_for(27);
    let count = |b: usize| dealt.iter().filter(|&&d| d == b).count();
    assert_eq!((0..5).map(count).collect::<Vec<_>>(), [15, 6, 3, 2, 1]);
    assert_eq!(&dealt[..3], [0, 1, 0], "dealt in turn, not in blocks");
    assert_eq!(dealt, prune(5).brackets_for(27), "the same every time");
    assert_eq!(
        (0..5)
            .map(|b| prune(5).bracket(b).rungs())
            .collect::<Vec<_>>(),
        [
            vec![3, 9, 27, 81],
            vec![9, 27, 81],
            vec![27, 81],
            vec![81],
            vec![]
        ]
    );
    assert!(prune(5).check().is_ok());
    for wrong in [0, 6] {
        let e = prune(wrong).check().unwrap_err();
        assert!(
            e.contains("there are 1 to 5 brackets (from epoch 3, from epoch 9, from epoch 27, from epoch 81, none pruned)"),
            "{e}"
        );
    }
}

/// A 9-trial search in two Hyperband brackets: bracket 0 (6 settings) judged at epochs 1 and
/// 3, bracket 1 (3 settings) only at 3, each among its own.
#[test]
fn hyperband_brackets_judge_their_own_settings_at_their_own_rungs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = write_pruned_search(tmp.path());
    let text = std::fs::read_to_string(&sweep).unwrap();
    std::fs::write(&sweep, format!("{text}brackets = 2\n")).unwrap();
    let out = tmp.path().join("out");
    run_sweep(&sweep, &data, &out, &TINY_PRUNED);
    let extra = ["layers=[36, 8, 3]".to_string(), "batch_size=16".to_string()];
    let runs = expand(&sweep, &extra, 1000).unwrap();
    let bracket_of = |id: &str| runs.iter().find(|r| r.id == id).unwrap().bracket;
    assert_eq!(runs.iter().filter(|r| r.bracket == 1).count(), 3);
    // (bracket, status, epochs run) of every run, from results.csv.
    let rows = rows_without_seconds(&out);
    let ended: Vec<(usize, String, usize)> = rows[1..]
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            let n = f.len();
            (bracket_of(f[0]), f[n - 8].into(), f[n - 6].parse().unwrap())
        })
        .collect();
    let count = |b: usize, s: &str, e: usize| {
        ended
            .iter()
            .filter(|r| r.0 == b && r.1 == s && r.2 == e)
            .count()
    };
    // Bracket 0: 6 → 2 at epoch 1 → 1 at epoch 3; bracket 1: 3 → 1 at epoch 3, never judged
    // at epoch 1.
    assert_eq!(
        (
            count(0, "pruned", 1),
            count(0, "pruned", 3),
            count(0, "finished", 4)
        ),
        (4, 1, 1)
    );
    assert_eq!(
        (
            count(1, "pruned", 1),
            count(1, "pruned", 3),
            count(1, "finished", 4)
        ),
        (0, 2, 1)
    );
    // The bound the note goes by is what it spent: 6 + 2·2 + 1 and 3·3 + 1 epochs.
    let refs: Vec<&wgtrain::sweep::SweepRun> = runs.iter().collect();
    let epoch = wgtrain::bench::config_epoch_flops(&runs[0].config, &data).unwrap();
    let most = wgtrain::sweep::most_flops(&refs, &data).unwrap();
    assert!(
        (most / epoch - 21.0).abs() < 1e-9,
        "{} epochs",
        most / epoch
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("Epochs trained: 21 of the 36"), "{md}");
    // Three shards at once decide alike.
    let sharded = tmp.path().join("sharded");
    sweep_in_three_shards(&sweep, &data, &sharded, &TINY_PRUNED);
    assert_eq!(rows, rows_without_seconds(&sharded));
}

#[test]
fn a_pruning_sweep_stopped_with_ctrl_c_past_a_rung_goes_on_to_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 60, 6, 3, true);
    let sweep = tmp.path().join("pruned-grid.toml");
    std::fs::write(
        &sweep,
        "[grid]\nlearning_rate = [0.02, 0.05, 0.1]\n[prune]\nmin_epochs = 2\nmax_epochs = 3000\n",
    )
    .unwrap();
    let args = [
        "--device",
        "cpu",
        "--set",
        "layers=[36, 64, 3]",
        "--set",
        "batch_size=8",
        "--set",
        "early_stopping=false",
    ];
    let (whole, part) = (tmp.path().join("whole"), tmp.path().join("part"));
    run_sweep(&sweep, &data, &whole, &args);
    let child = spawn_sweep(&sweep, &data, &part, &args);
    // Stop it once the first rung has pruned (a pruned run's summary.json is written then):
    // the survivor is training on towards its next rung.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pruned_yet = || {
        std::fs::read_dir(&part).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| RunDir::new(e.path()).summary().exists())
        })
    };
    while !pruned_yet() {
        assert!(std::time::Instant::now() < deadline, "no rung was passed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = interrupt(child);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let again = run_sweep(&sweep, &data, &part, &args);
    assert!(again.contains("going on from there"), "{again}");
    assert_eq!(rows_without_seconds(&whole), rows_without_seconds(&part));
}

#[test]
fn a_run_whose_summary_cannot_be_read_is_named_in_the_report_and_its_setting_is_incomplete() {
    // See: a corrupt summary.json in one run of a sweep dropped it silently: the tally said
    // "1 finished", results.csv lacked the run, and its setting averaged the other seed.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "seeds = [1, 2]\n[grid]\nlearning_rate = [0.05, 0.2]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    run_sweep(&sweep, &data, &out, &TINY);
    let damaged = "learning_rate=0.05-seed2";
    std::fs::write(RunDir::new(out.join(damaged)).summary(), "{ not json").unwrap();
    let o = wgtrain(&["sweep", "report", out.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        said.contains("3 finished and 1 unreadable runs") && said.contains(damaged),
        "{said}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with(damaged))
        .unwrap_or_else(|| panic!("no row for {damaged}: {csv}"));
    assert!(row.contains(",unreadable,"), "{row}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains(damaged), "{md}");
    let rows = results_table(&out);
    let row = rows.iter().find(|r| r.iter().any(|c| c == "0.05")).unwrap();
    assert!(
        row.last().unwrap().contains("incomplete: 1 unreadable"),
        "{row:?}"
    );
    // A run begun and not ended (its summary not yet written) is named too, not left out.
    let unfinished = "learning_rate=0.05-seed1";
    std::fs::remove_file(RunDir::new(out.join(unfinished)).summary()).unwrap();
    let o = wgtrain(&["sweep", "report", out.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("2 finished, 1 unfinished and 1 unreadable runs"),
        "{said}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with(unfinished) && l.contains(",unfinished,")),
        "{csv}"
    );
    let rows = results_table(&out);
    let row = rows.iter().find(|r| r.iter().any(|c| c == "0.05")).unwrap();
    assert!(
        row.last()
            .unwrap()
            .contains("0 (incomplete: 1 unfinished, 1 unreadable)"),
        "{row:?}"
    );
    // A setting none of whose runs can be read keeps a row that says so.
    for seed in [1, 2] {
        let dir = out.join(format!("learning_rate=0.2-seed{seed}"));
        std::fs::write(RunDir::new(dir).config(), "learning_rate = [").unwrap();
    }
    let o = wgtrain(&["sweep", "report", out.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("1 unfinished and 3 unreadable runs"),
        "{said}"
    );
    let rows = results_table(&out);
    let row = rows
        .iter()
        .find(|r| r.iter().any(|c| c == "0.2"))
        .unwrap_or_else(|| panic!("no row for the unreadable setting: {rows:?}"));
    assert!(row[0].contains("unreadable"), "{row:?}");
    assert!(
        row.last().unwrap().contains("0 (incomplete: 2 unreadable)"),
        "{row:?}"
    );
}

#[test]
fn diverged_runs_are_counted_apart_from_finished_ones_with_no_test_figures() {
    // See: the tally counted a diverged run as finished, and results.csv gave it a test
    // accuracy (of weights that had broken).
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("s.toml");
    std::fs::write(&sweep, "[grid]\nlearning_rate = [0.05, 1e30]\n").unwrap();
    let out = tmp.path().join("out");
    let o = spawn_sweep(&sweep, &data, &out, &TINY)
        .wait_with_output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("1 finished and 1 diverged runs"), "{said}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let row = csv.lines().find(|l| l.contains(",diverged,")).unwrap();
    let fields: Vec<&str> = row.split(',').collect();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let at = |name: &str| fields[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!((at("test_accuracy"), at("test_loss")), ("", ""), "{row}");
}

#[test]
fn settings_too_long_for_a_directory_name_get_a_short_one_of_their_own() {
    // See: a grid over `network` made run-directory names over 255 bytes; the sweep trained
    // other runs, then failed with "File name too long".
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("s.toml");
    let net = |units: usize| {
        let hidden = vec![format!("{{ dense = {units}, activation = \"relu\" }}"); 6].join(", ");
        format!("[{hidden}, {{ dense = 3 }}]")
    };
    std::fs::write(
        &sweep,
        format!("[grid]\nnetwork = [{}, {}]\n", net(4), net(5)),
    )
    .unwrap();
    let runs = expand(&sweep, &[], 10).unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert!(run.id.len() < 128, "{}", run.id);
        assert!(run.id.starts_with("network="), "{}", run.id);
    }
    assert_ne!(runs[0].id, runs[1].id);
    let out = tmp.path().join("out");
    let log = run_sweep(
        &sweep,
        &data,
        &out,
        &[
            "--set",
            "epochs=1",
            "--set",
            "batch_size=16",
            "--device",
            "cpu",
        ],
    );
    assert!(log.contains("2 finished runs"), "{log}");
}
