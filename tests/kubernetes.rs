//! `docs/k8s-paper-sweep.yaml`: valid against the Kubernetes Indexed Job schema, and its
//! command, run once per `JOB_COMPLETION_INDEX` as the Job's pods run it, takes each index's
//! slice and merges into the sweep's results on one machine. No cluster is needed: the
//! schema check is `kubernetes-validate --strict` (pip; `.ci/run` installs it and sets
//! WGTRAIN_REQUIRE_KUBERNETES_VALIDATE=1).

use std::process::Command;

use crate::common::skip;
use crate::slurm::{runs_taken, shard_runs, small_sweep};
use crate::sweep::{assert_merged_results_equal, run_sweep};

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/k8s-paper-sweep.yaml");

/// The value of the first `key: value` line of `yaml` (block style, as the manifest is written).
fn field<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("the manifest has no {key}"))
        .trim()
}

#[test]
fn the_kubernetes_manifest_is_a_valid_indexed_job() {
    let checked = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", MANIFEST])
        .output();
    let Ok(checked) = checked else {
        skip(
            "kubernetes-validate is not installed (pip install kubernetes-validate)",
            "WGTRAIN_REQUIRE_KUBERNETES_VALIDATE",
        );
        return;
    };
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // What the schema leaves open (strings and numbers) but wgtrain needs.
    let yaml = std::fs::read_to_string(MANIFEST).unwrap();
    assert_eq!(field(&yaml, "kind"), "Job");
    assert_eq!(field(&yaml, "completionMode"), "Indexed");
    assert!(["OnFailure", "Never"].contains(&field(&yaml, "restartPolicy")));
    let command: Vec<String> = serde_json::from_str(field(&yaml, "command")).unwrap();
    let shard_count = command
        .iter()
        .position(|a| a == "--shard-count")
        .map(|i| &command[i + 1])
        .expect("the command passes --shard-count");
    assert_eq!(shard_count, field(&yaml, "completions"));
}

#[test]
fn the_manifests_command_run_at_each_completion_index_merges_into_the_unsharded_results() {
    let yaml = std::fs::read_to_string(MANIFEST).unwrap();
    let command: Vec<String> = serde_json::from_str(field(&yaml, "command")).unwrap();
    assert_eq!(&command[..2], ["wgtrain", "sweep"]);
    let completions: usize = field(&yaml, "completions").parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, data) = small_sweep(tmp.path(), 160, 6, 2);
    let (whole, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));
    run_sweep(&sweep, &data, &whole, &["--device", "cpu"]);
    // The pod's command with this test's sweep file (its first argument) and output
    // directory (after --out) in place of the manifest's.
    let mut args: Vec<&str> = command[2..].iter().map(String::as_str).collect();
    args[0] = sweep.to_str().unwrap();
    let out = 1 + args.iter().position(|&a| a == "--out").expect("--out");
    args[out] = sharded.to_str().unwrap();
    for index in 0..completions {
        let o = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .arg("sweep")
            .args(&args)
            .args(["--data", data.to_str().unwrap(), "--device", "cpu"])
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{log}");
        let (shard, runs) = runs_taken(&log);
        assert_eq!(shard, format!("{index}/{completions}"), "{log}");
        assert_eq!(runs, shard_runs(&whole, index, completions), "{log}");
    }
    assert_merged_results_equal(&sharded, &whole);
}
