//! Every bad input we know of, run through the real binary: exit code 1, a one-line message
//! naming the problem, no panic — and docs/errors.md is this test's output, so the table in the
//! docs cannot drift from the behaviour. Run with WGTRAIN_BLESS=1 to rewrite it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{gz, write_dataset, write_idx};

struct Case {
    what: &'static str,
    args: Vec<String>,
    /// Text the message must contain.
    expect: &'static str,
}

fn dataset(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    write_dataset(&dir, 60, 20, 6, 3, false);
    dir
}

const TINY: [&str; 6] = [
    "--set",
    "layers=[36, 8, 3]",
    "--set",
    "epochs=2",
    "--set",
    "batch_size=8",
];

fn train(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--device", "cpu", "--quiet", "--data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(data.display().to_string());
    a.push("--out".into());
    a.push(out.display().to_string());
    a.extend(TINY.iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn cases(root: &Path) -> Vec<Case> {
    let out = root.join("run");
    let good = dataset(root, "good");
    let mut cases = Vec::new();
    let mut data_case =
        |what: &'static str, name: &str, expect: &'static str, spoil: &dyn Fn(&Path)| {
            let dir = dataset(root, name);
            spoil(&dir);
            cases.push(Case {
                what,
                args: train(&dir, &out, &[]),
                expect,
            });
        };
    data_case(
        "a data file that is not there",
        "missing",
        "not found",
        &|d| std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap(),
    );
    data_case("an empty data file", "empty", "is empty", &|d| {
        std::fs::write(d.join("train-labels-idx1-ubyte"), b"").unwrap()
    });
    data_case("a wrong magic number", "magic", "bad magic", &|d| {
        let p = d.join("train-images-idx3-ubyte");
        let mut b = std::fs::read(&p).unwrap();
        b[1] = 0x42;
        std::fs::write(p, b).unwrap();
    });
    data_case(
        "a wrong item type (floats)",
        "itemtype",
        "item type 0x0d",
        &|d| {
            let p = d.join("train-images-idx3-ubyte");
            let mut b = std::fs::read(&p).unwrap();
            b[2] = 0x0d;
            std::fs::write(p, b).unwrap();
        },
    );
    data_case(
        "images of the wrong rank",
        "rank",
        "rank 2, expected 3",
        &|d| {
            write_idx(
                d,
                "train-images-idx3-ubyte",
                &[60, 36],
                &[0; 60 * 36],
                false,
            )
        },
    );
    data_case(
        "a header that disagrees with the file length",
        "truncated",
        "the header says",
        &|d| {
            let p = d.join("train-images-idx3-ubyte");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(p, &b[..b.len() - 100]).unwrap();
        },
    );
    data_case(
        "a truncated gzip file",
        "gzip",
        "corrupt or truncated gzip",
        &|d| {
            let p = d.join("train-images-idx3-ubyte");
            let z = gz(&std::fs::read(&p).unwrap());
            std::fs::remove_file(&p).unwrap();
            std::fs::write(d.join("train-images-idx3-ubyte.gz"), &z[..z.len() / 2]).unwrap();
        },
    );
    data_case(
        "image and label counts that differ",
        "counts",
        "but",
        &|d| write_idx(d, "train-labels-idx1-ubyte", &[59], &[0; 59], false),
    );
    data_case(
        "a label outside the network's classes",
        "label",
        "outside the 3 classes",
        &|d| write_idx(d, "t10k-labels-idx1-ubyte", &[20], &[7; 20], false),
    );
    data_case(
        "a file whose SHA-256 does not match SHA256SUMS",
        "checksum",
        "does not match",
        &|d| {
            std::fs::write(
                d.join("SHA256SUMS"),
                format!("{}  t10k-images-idx3-ubyte\n", "0".repeat(64)),
            )
            .unwrap()
        },
    );
    let config_case = |what, set: &'static str, expect| Case {
        what,
        args: train(&good, &out, &["--set", set]),
        expect,
    };
    cases.extend([
        config_case(
            "an unknown config key",
            "lr=0.1",
            "did you mean \"learning_rate\"",
        ),
        config_case(
            "a value of the wrong type",
            "epochs=\"many\"",
            "invalid type",
        ),
        config_case("a zero batch size", "batch_size=0", "batch_size = 0"),
        config_case(
            "a negative learning rate",
            "learning_rate=-1",
            "learning_rate = -1",
        ),
        config_case(
            "a validation fraction outside (0, 1)",
            "val_fraction=1.5",
            "val_fraction = 1.5",
        ),
        config_case(
            "a first layer that disagrees with the images",
            "layers=[784, 8, 3]",
            "input width must equal",
        ),
        config_case(
            "a last layer that disagrees with the labels",
            "layers=[36, 8, 10]",
            "output width must equal",
        ),
        config_case(
            "a network with more parameters than wgtrain addresses",
            "layers=[36, 9000000000000000000, 3]",
            "more than the 4294967295 the GPU kernels' 32-bit offsets can address",
        ),
        config_case(
            "a batch larger than the training set",
            "batch_size=1000",
            "larger than the 48 training rows",
        ),
        Case {
            what: "training that diverges (NaN or infinite loss)",
            args: train(
                &good,
                &out,
                &[
                    "--set",
                    "learning_rate=1e30",
                    "--set",
                    "gradient=\"sum\"",
                    "--set",
                    "activation=\"relu\"",
                ],
            ),
            expect: "training diverged",
        },
    ]);
    cases.push(Case {
        what: "a number too large for a config file (a seed past 2^63 − 1)",
        args: train(&good, &out, &["--set", "seed=9223372036854775808"]),
        expect: "seed = 9223372036854775808: out of range (TOML integers are 64-bit signed",
    });
    cases.push(Case {
        what: "a thread count no machine has (a typo)",
        args: train(&good, &out, &["--threads", "100000"]),
        expect: "--threads 100000: at most 1024",
    });
    let existing = root.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("summary.json"), "{}").unwrap();
    cases.push(Case {
        what: "a run directory that already holds a run",
        args: train(&good, &existing, &[]),
        expect: "--force",
    });
    // A finished two-epoch run, resumed with fewer epochs than it has done.
    let done = root.join("done");
    let finished = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(train(&good, &done, &[]))
        .output()
        .unwrap();
    assert!(finished.status.success(), "{finished:?}");
    cases.push(Case {
        what: "a resumed run asked for fewer epochs than it has done",
        args: vec![
            "train".into(),
            "--device".into(),
            "cpu".into(),
            "--data".into(),
            good.display().to_string(),
            "--resume".into(),
            done.display().to_string(),
            "--set".into(),
            "epochs=1".into(),
        ],
        expect: "the run has 2 epochs done, more than epochs = 1",
    });
    let blocker = root.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    cases.push(Case {
        what: "an output directory that cannot be created",
        args: train(&good, &blocker.join("run"), &[]),
        expect: "a-file/run",
    });
    let mut gpu = train(&good, &out, &[]);
    gpu[2] = "gpu".into();
    gpu.extend(["--backend".into(), "metal".into()]);
    if cfg!(target_os = "linux") {
        cases.push(Case {
            what: "--device gpu with no adapter for the backend",
            args: gpu.clone(),
            expect: "no GPU adapter found for backend metal",
        });
    }
    gpu.truncate(gpu.len() - 1);
    gpu.push("cuda".into());
    cases.push(Case {
        what: "an unknown GPU backend",
        args: gpu,
        expect: "unknown backend \"cuda\"",
    });
    // Checked before any adapter is looked for, so the message is the same on every machine.
    let mut tuned = train(&good, &out, &[]);
    tuned[2] = "gpu".into();
    tuned.insert(0, "WGTRAIN_TILE_K=48".into());
    cases.push(Case {
        what: "a GPU tuning variable with a value it does not take",
        args: tuned,
        expect: "WGTRAIN_TILE_K must be 16, 32 or 64, got \"48\"",
    });
    // Read before any adapter is looked for too.
    let tuning = root.join("tuning.toml");
    std::fs::write(&tuning, "[[adapter]]\nname = 1\n").unwrap();
    let mut tuned = train(&good, &out, &[]);
    tuned[2] = "gpu".into();
    tuned.insert(0, format!("WGTRAIN_TUNING_FILE={}", tuning.display()));
    cases.push(Case {
        what: "a tuning file that is not one",
        args: tuned,
        expect: "tuning.toml: line 2: invalid type: integer `1`, expected a string",
    });
    let garbage = root.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    cases.push(Case {
        what: "a model file that is not safetensors",
        args: vec![
            "eval".into(),
            "--model".into(),
            garbage.display().to_string(),
            "--data".into(),
            good.display().to_string(),
        ],
        expect: "model file",
    });
    let sweep = root.join("sweep.toml");
    std::fs::write(
        &sweep,
        "[grid]\nlearning_rate = []\nmomentum = [0.5, 0.9]\n",
    )
    .unwrap();
    cases.push(Case {
        what: "a sweep grid axis with no values",
        args: vec![
            "sweep".into(),
            sweep.display().to_string(),
            "--out".into(),
            root.join("sweep-out").display().to_string(),
        ],
        expect: "sweep.toml: `grid.learning_rate` lists no values",
    });
    let broken = root.join("broken.toml");
    std::fs::write(&broken, "layers = [784, 10\nepochs = 3\n").unwrap();
    cases.push(Case {
        what: "a config file with a TOML syntax error",
        args: vec![
            "train".into(),
            "--config".into(),
            broken.display().to_string(),
        ],
        expect: "line 1",
    });
    cases.push(Case {
        what: "a config file that is not there",
        args: vec![
            "train".into(),
            "--config".into(),
            root.join("nope.toml").display().to_string(),
        ],
        expect: "nope.toml",
    });
    cases
}

#[test]
fn every_bad_input_exits_1_with_a_message_and_docs_errors_md_is_current() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let shown = |s: &str| s.replace(&root.display().to_string(), "DIR");
    let mut table = String::from(
        "# Errors\n\nEach bad input wgtrain has been tried on, the message a user sees, and the exit code.\n\
         Generated by `tests/errors.rs` (which fails when this file is stale; `WGTRAIN_BLESS=1 cargo test`\n\
         rewrites it). DIR stands for the test's temporary directory. Faults that need a GPU adapter\n\
         (a GPU too small for the data: an error with --device gpu, a CPU fallback with --device\n\
         auto; a device lost mid-run) are tested in tests/cli.rs and tests/gpu.rs.\n\n\
         | bad input | command | message | exit code |\n|---|---|---|---|\n",
    );
    for case in cases(root) {
        // Leading NAME=VALUE arguments are the command's environment, as a shell reads them.
        let (env, args): (Vec<&String>, Vec<&String>) = {
            let split = case
                .args
                .iter()
                .position(|a| !a.contains('=') || a.starts_with('-'));
            let (env, args) = case.args.split_at(split.unwrap_or(0));
            (env.iter().collect(), args.iter().collect())
        };
        let o = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .args(args)
            .envs(env.iter().filter_map(|kv| kv.split_once('=')))
            .env("XDG_RUNTIME_DIR", root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        let message = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: exit code; stderr: {stderr}",
            case.what
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.what);
        assert!(
            message.contains(case.expect),
            "{}: {message:?} should contain {:?}",
            case.what,
            case.expect
        );
        let command = match env.len() {
            0 => format!("wgtrain {}", shown(&case.args.join(" "))),
            n => format!(
                "{} wgtrain {}",
                shown(&case.args[..n].join(" ")),
                shown(&case.args[n..].join(" "))
            ),
        };
        table.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            case.what,
            command.replace('|', "\\|"),
            shown(&message).replace('|', "\\|"),
            o.status.code().unwrap_or(-1)
        ));
    }
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md");
    if std::env::var("WGTRAIN_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&doc, &table).unwrap();
    }
    let current = std::fs::read_to_string(&doc).unwrap_or_default();
    assert!(
        current == table,
        "docs/errors.md is stale: rerun with WGTRAIN_BLESS=1 and commit it"
    );
}
