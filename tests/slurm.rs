//! Sweeps as job arrays on a real single-node Slurm, submitting `docs/slurm-paper-sweep.sh`
//! itself: each task takes exactly the slice the shard arithmetic gives it (a task that took
//! every run would still merge into the right results, since tasks share the run locks, so
//! this reads what each task trained from its log), the merged results equal the sweep run on
//! one machine, a requeued task goes on from its checkpoint, and a task's log holds only
//! wgtrain's output. `tests/slurm/cluster.sh start` brings the Slurm up (`.ci/run` does, and
//! sets WGTRAIN_REQUIRE_SLURM=1); without one these tests are skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{skip, write_dataset};
use crate::sweep::{assert_merged_results_equal, rows_without_seconds, run_sweep};

/// Whether a Slurm answers (`sinfo`, with the environment's SLURM_CONF); skips the test, or
/// fails it under WGTRAIN_REQUIRE_SLURM=1, if not.
fn slurm() -> bool {
    let answered = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !answered {
        skip(
            "no Slurm answers `sinfo` (tests/slurm/cluster.sh start brings one up)",
            "WGTRAIN_REQUIRE_SLURM",
        );
    }
    answered
}

fn slurm_command(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A sweep of `settings × 2 seeds` runs of a small MLP trained for `epochs` epochs on a
/// synthetic set of `images` `side`×`side` images, in `dir`: (sweep file, data directory).
pub fn small_sweep(dir: &Path, images: usize, side: usize, epochs: usize) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    write_dataset(&data, images, images / 4, side, 4, true);
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/momentum.toml"),
    )
    .unwrap();
    let base = base.split("[paper]").next().unwrap();
    let base = base
        .replace(
            "layers = [784, 128, 10]",
            &format!("layers = [{}, 32, 4]", side * side),
        )
        .replace("batch_size = 128", "batch_size = 16")
        .replace("epochs = 100", &format!("epochs = {epochs}"))
        .replace("early_stopping = true", "early_stopping = false");
    std::fs::write(dir.join("base.toml"), base).unwrap();
    let sweep = dir.join("sweep.toml");
    std::fs::write(
        &sweep,
        "base = \"base.toml\"\nseeds = [1, 2]\n[grid]\nlearning_rate = [0.02, 0.05]\nactivation = [\"tanh\", \"relu\"]\n",
    )
    .unwrap();
    (sweep, data)
}

/// A job array of `docs/slurm-paper-sweep.sh` training `sweep` into `out`.
struct Array {
    job: String,
    /// One log per task: `task-<id>.out`.
    logs: PathBuf,
}

impl Array {
    /// `sbatch --array=SPEC` of the documented script, pointed at `sweep`, `data` and `out`
    /// through its environment variables, a CPU per task, `device` for every task.
    fn submit(sweep: &Path, data: &Path, out: &Path, spec: &str, device: &str) -> Array {
        let logs = out.with_extension("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let o = Command::new("sbatch")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--parsable", "--cpus-per-task=1", "--time=10"])
            .arg(format!("--array={spec}"))
            .arg(format!("--output={}/task-%a.out", logs.display()))
            .arg("docs/slurm-paper-sweep.sh")
            // A task's environment as a user's job has it, not with the NODEVICE_SELECT that
            // .cargo/config.toml gives the tests.
            .env_remove("NODEVICE_SELECT")
            .env("WGTRAIN", env!("CARGO_BIN_EXE_wgtrain"))
            .env("SWEEP", sweep)
            .env("OUT", out)
            .env(
                "WGTRAIN_ARGS",
                format!("--data {} --device {device}", data.display()),
            )
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
        Array { job, logs }
    }

    /// The log of the task with id `task`.
    fn log(&self, task: usize) -> String {
        std::fs::read_to_string(self.logs.join(format!("task-{task}.out"))).unwrap_or_default()
    }

    /// Slurm's state of task `task` (`RUNNING`, `PENDING`, `COMPLETED` …).
    fn state(&self, task: usize) -> String {
        let job = format!("{}_{task}", self.job);
        let shown = slurm_command("scontrol", &["show", "job", &job]);
        shown
            .split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (up to five minutes) until no task of the array is pending or running, then
    /// checks that every task in `tasks` completed.
    fn wait(&self, tasks: &[usize]) {
        wait_for("the array to finish", Duration::from_secs(300), || {
            slurm_command("squeue", &["-h", "-j", &self.job]).is_empty()
        });
        for &task in tasks {
            assert_eq!(
                self.state(task),
                "COMPLETED",
                "task {task}'s log:\n{}",
                self.log(task)
            );
        }
    }
}

/// The shard a sweep's output says it took ("this process takes K (shard I/N)") and the ids of
/// the runs it trained or found finished, from its "[k/n] RUN: …" lines.
pub fn runs_taken(log: &str) -> (String, BTreeSet<String>) {
    let shard = log
        .split("(shard ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("the sweep names no shard:\n{log}"))
        .to_string();
    let runs = log
        .lines()
        .filter_map(|l| l.strip_prefix('['))
        .filter_map(|l| l.split_once("] "))
        .filter_map(|(_, rest)| rest.split_once(": "))
        .map(|(run, _)| run.to_string())
        .collect();
    (shard, runs)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run ids of `whole`'s results.csv (the sweep's fixed order) whose place `i` satisfies
/// `i % count == index`: what shard `index` of `count` should train.
pub fn shard_runs(whole: &Path, index: usize, count: usize) -> BTreeSet<String> {
    rows_without_seconds(whole)
        .iter()
        .skip(1)
        .enumerate()
        .filter(|(i, _)| i % count == index)
        .map(|(_, row)| row.split(',').next().unwrap().to_string())
        .collect()
}

/// Checks that the tasks `tasks` (in array order) each took shard i of `tasks.len()` and
/// exactly its runs, and that their logs hold only wgtrain's lines (and, where a task was
/// requeued, slurmstepd's notice of it).
fn check_tasks(array: &Array, whole: &Path, tasks: &[usize]) {
    for (index, &task) in tasks.iter().enumerate() {
        let (shard, runs) = runs_taken(&array.log(task));
        assert_eq!(shard, format!("{index}/{}", tasks.len()), "task {task}");
        assert_eq!(
            runs,
            shard_runs(whole, index, tasks.len()),
            "task {task} trained other runs than its shard's"
        );
        for line in array.log(task).lines() {
            assert!(
                line.is_empty() || WGTRAIN_LINES.iter().any(|p| line.starts_with(p)),
                "task {task}'s log holds a line wgtrain did not print: {line:?}"
            );
        }
    }
}

/// How every line wgtrain prints in a sweep's log begins; slurmstepd's requeue notice is the
/// one line of Slurm's that a task log may hold.
const WGTRAIN_LINES: &[&str] = &[
    "sweep ",
    "[",
    "trained ",
    "pack ",
    "warning: ",
    "interrupt: finishing this epoch",
    "error: interrupted; ",
    "slurmstepd-wgtrain: error: *** JOB ",
];

#[test]
fn an_array_with_a_step_trains_each_tasks_slice_on_the_gpu_and_merges_into_the_unsharded_results() {
    if !slurm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, data) = small_sweep(tmp.path(), 160, 6, 3);
    let (whole, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));
    // Tasks 0, 2 and 4: shards 0, 1 and 2 of 3, on the GPU (lavapipe in CI): opening an
    // adapter is what once put Mesa's complaints about XDG_RUNTIME_DIR in every task's log.
    let array = Array::submit(&sweep, &data, &sharded, "0-4:2", "gpu");
    run_sweep(&sweep, &data, &whole, &["--device", "gpu"]);
    array.wait(&[0, 2, 4]);
    check_tasks(&array, &whole, &[0, 2, 4]);
    assert_merged_results_equal(&sharded, &whole);
}

#[test]
fn a_throttled_array_runs_two_tasks_at_once_and_a_requeued_task_goes_on_from_its_checkpoint() {
    if !slurm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Runs long enough (a few seconds each) to be requeued in the middle of one.
    let epochs = 60;
    let (sweep, data) = small_sweep(tmp.path(), 16000, 12, epochs);
    let (whole, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));
    let array = Array::submit(&sweep, &data, &sharded, "0-3%2", "cpu");

    // Requeue task 1 (as a preemption would) once the first of its two runs has saved an
    // epoch: Slurm sends it SIGTERM, it saves and exits, and its next attempt goes on.
    // Task 1 is shard 1 of 4: runs 1 and 5 of the sweep's order.
    let first = "activation=tanh_learning_rate=0.02-seed2";
    let metrics = sharded.join(first).join("metrics.csv");
    let saved =
        |m: &Path| std::fs::read_to_string(m).map_or(0, |t| t.lines().count().saturating_sub(1));
    wait_for("task 1's first epoch", Duration::from_secs(120), || {
        saved(&metrics) >= 1
    });
    assert!(
        saved(&metrics) < epochs,
        "the run finished before it could be requeued"
    );
    slurm_command("scontrol", &["requeue", &format!("{}_1", array.job)]);
    // A requeued job waits a while before it may start again; let it start now.
    wait_for("task 1 to be requeued", Duration::from_secs(60), || {
        array.state(1) == "PENDING"
    });
    slurm_command(
        "scontrol",
        &["update", &format!("JobId={}_1", array.job), "StartTime=now"],
    );
    run_sweep(&sweep, &data, &whole, &["--threads", "1"]);
    array.wait(&[0, 1, 2, 3]);
    check_tasks(&array, &whole, &[0, 1, 2, 3]);
    // Both attempts append to one log, each starting with its "sweep …" line.
    let requeued = array.log(1);
    let attempts: Vec<&str> = requeued.split("\nsweep ").collect();
    assert!(
        attempts.len() == 2 && requeued.contains("DUE TO JOB REQUEUE"),
        "task 1 ran twice, requeued once:\n{requeued}"
    );
    assert!(
        attempts[0].contains("interrupt: finishing this epoch"),
        "SIGTERM reached wgtrain, which saved the epoch in progress:\n{requeued}"
    );
    assert!(
        attempts[1].contains(&format!("{first}: stopped after epoch"))
            && attempts[1].contains("going on from there"),
        "the second attempt went on from the checkpoint:\n{requeued}"
    );
    assert_merged_results_equal(&sharded, &whole);

    // `%2`: never more than two tasks at once (Slurm's job completion log: whole seconds, so
    // a task that starts in the second another ended does not count as overlapping it).
    let spans = completion_spans(&array.job);
    assert!(spans.len() >= 4, "{spans:?}");
    for (start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(s, e)| s <= start && start < e)
            .count();
        assert!(running <= 2, "{running} tasks at once: {spans:?}");
    }
}

/// (start, end) of every task attempt of `job`, from the job completion log that
/// tests/slurm/cluster.sh configures (`JobCompLoc`): ISO times, which sort as they read.
fn completion_spans(job: &str) -> Vec<(String, String)> {
    let conf = slurm_command("scontrol", &["show", "config"]);
    let log = conf
        .lines()
        .find_map(|l| l.strip_prefix("JobCompLoc"))
        .and_then(|l| l.split_once('='))
        .map(|(_, path)| path.trim().to_string())
        .unwrap();
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!(" ArrayJobId={job} ")))
        .map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .unwrap()
            };
            (
                field("StartTime=").to_string(),
                field("EndTime=").to_string(),
            )
        })
        .collect()
}
