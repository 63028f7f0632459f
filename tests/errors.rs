//! Every bad input we know of, run through the real binary: exit code 1, a one-line message
//! naming the problem, no panic — and docs/errors.md is this test's output, so the table in the
//! docs cannot drift from the behaviour. Run with WGTRAIN_BLESS=1 to rewrite it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{gz, write_dataset, write_idx};
use wgtrain::rundir::RunDir;

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

/// `wgtrain train --device cpu [--data DATA] --resume RUN EXTRA...`.
fn resume(data: Option<&Path>, run: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["train", "--device", "cpu"]);
    if let Some(data) = data {
        a.extend(["--data".to_string(), data.display().to_string()]);
    }
    a.extend(["--resume".to_string(), run.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

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

/// `bytes` gzipped, followed in the same gzip stream by `zeros` zero bytes (streamed: the test
/// never holds them).
fn gz_with_zeros(bytes: &[u8], zeros: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A `side × side` grey gradient as a JPEG.
pub fn jpeg_bytes(side: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(side, side, |x, y| image::Luma([((x + y) * 2) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A JPEG whose frame header (SOF0) declares `width × height` instead of its real size.
fn with_declared_size(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // FF C0, length (2), precision (1), height (2), width (2).
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// What every group of cases shares: the temporary root, a good dataset, the run directory
/// the cases train into, and a finished two-epoch run (made by `run_dir_cases`, read by the
/// groups after it).
struct Ground<'a> {
    root: &'a Path,
    good: PathBuf,
    out: PathBuf,
    done: PathBuf,
}

/// Every case, grouped by what the user gave; the order is docs/errors.md's.
fn cases(root: &Path) -> Vec<Case> {
    let g = Ground {
        root,
        good: dataset(root, "good"),
        out: root.join("run"),
        done: root.join("done"),
    };
    let groups: [fn(&Ground<'_>) -> Vec<Case>; 13] = [
        data_cases,
        config_cases,
        network_cases,
        run_dir_cases,
        device_cases,
        model_file_cases,
        sweep_cases,
        file_kind_cases,
        predict_cases,
        web_cases,
        config_file_cases,
        bench_cases,
        gradcheck_cases,
    ];
    let mut cases: Vec<Case> = groups.iter().flat_map(|group| group(&g)).collect();
    let (root, good, done) = (g.root, &g.good, &g.done);
    cases.extend(nothing_lost_cases(root, good, done));
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

/// A dataset that is missing, malformed or lying, given to `train`.
fn data_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, out) = (g.root, g.out.as_path());
    let mut cases = Vec::new();
    let mut data_case =
        |what: &'static str, name: &str, expect: &'static str, spoil: &dyn Fn(&Path)| {
            let dir = dataset(root, name);
            spoil(&dir);
            cases.push(Case {
                what,
                args: train(&dir, out, &[]),
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
    // One corrupt label (255) among labels 0–2 asked for a 256-wide output layer.
    data_case(
        "a corrupt label far above the others (a gap in the class numbers)",
        "labelgap",
        "label 255 at item 5, but no label 3 to 254 occurs",
        &|d| {
            let p = d.join("train-labels-idx1-ubyte");
            let mut b = std::fs::read(&p).unwrap();
            b[8 + 5] = 255;
            std::fs::write(p, b).unwrap();
        },
    );
    // A 1 MB file whose header declares 2,160 bytes and then inflates to 1 GiB of
    // zeros was decompressed whole (1.1 GB of memory) before its length was checked.
    data_case(
        "a gzip bomb (a header that declares little, then endless zeros)",
        "bomb",
        "decompresses to more than the 2160 bytes of payload its header declares",
        &|d| {
            let p = d.join("train-images-idx3-ubyte");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            std::fs::write(
                d.join("train-images-idx3-ubyte.gz"),
                gz_with_zeros(&bytes, 1 << 28),
            )
            .unwrap();
        },
    );
    // A SHA256SUMS that could not be read switched verification off without a word.
    data_case(
        "a checksum list that cannot be read (a directory)",
        "sumsdir",
        "SHA256SUMS: cannot be read",
        &|d| std::fs::create_dir(d.join("SHA256SUMS")).unwrap(),
    );
    cases
}

/// Settings `train --set` gives that no run can take.
fn config_cases(g: &Ground<'_>) -> Vec<Case> {
    let (good, out) = (g.good.as_path(), g.out.as_path());
    let mut cases = Vec::new();
    let config_case = |what, set: &'static str, expect| Case {
        what,
        args: train(good, out, &["--set", set]),
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
                good,
                out,
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
    cases
}

/// Networks of layers that do not fit, and thread counts no machine has.
fn network_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good, out) = (g.root, g.good.as_path(), g.out.as_path());
    let mut cases = Vec::new();
    // Networks of layers: every mistake is named by its layer before any work.
    let network_out = root.join("network-run");
    let network_case = |what, network: &str, extra: &[&str], expect| {
        let mut args = train(good, &network_out, &[]);
        let layers = args.iter().position(|a| a == TINY[1]).unwrap();
        args.drain(layers - 1..=layers); // a network replaces TINY's layers
        args.extend(["--set".into(), format!("network={network}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Case { what, args, expect }
    };
    cases.extend([
        network_case(
            "a config with both `network` and `layers`",
            "[{ dense = 3 }]",
            &["--set", "layers=[36, 3]"],
            "a config with `network` describes its whole model there",
        ),
        network_case(
            "a network layer that says two kinds",
            "[{ conv = 2, dense = 3 }]",
            &[],
            "layer 1: says both conv and dense",
        ),
        network_case(
            "a network layer that does not fit the images",
            "[{ conv = 2, kernel = 7 }, { dense = 3 }]",
            &[],
            "layer 1 (conv 2, 7×7, stride 1, pad 0, none): a 7×7 kernel does not fit a 6×6 input",
        ),
        network_case(
            "a network whose last layer is not the logits",
            "[{ dense = 3, activation = \"relu\" }]",
            &[],
            "its activation must be none",
        ),
    ]);
    cases.push(Case {
        what: "a number too large for a config file (a seed past 2^63 − 1)",
        args: train(good, out, &["--set", "seed=9223372036854775808"]),
        expect: "--set seed=9223372036854775808: out of range (TOML integers are 64-bit signed",
    });
    cases.push(Case {
        what: "a thread count no machine has (a typo)",
        args: train(good, out, &["--threads", "100000"]),
        expect: "--threads 100000: at most 1024",
    });
    cases
}

/// Run directories: taken, resumed wrongly, edited, cut, or not directories at all.
fn run_dir_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good, done) = (g.root, g.good.as_path(), g.done.as_path());
    let mut cases = Vec::new();
    let existing = root.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(RunDir::new(&existing).summary(), "{}").unwrap();
    cases.push(Case {
        what: "a run directory that already holds a run",
        args: train(good, &existing, &[]),
        expect: "--force",
    });
    // A finished two-epoch run, resumed with fewer epochs than it has done.
    let finished = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(train(good, done, &[]))
        .output()
        .unwrap();
    assert!(finished.status.success(), "{finished:?}");
    cases.push(Case {
        what: "a resumed run asked for fewer epochs than it has done",
        args: resume(Some(good), done, &["--set", "epochs=1"]),
        expect: "the run has 2 epochs done, more than epochs = 1",
    });
    // A directory with no run in it, resumed or tabled: said as such, not as a missing file.
    let empty = root.join("no-run-here");
    std::fs::create_dir_all(&empty).unwrap();
    cases.push(Case {
        what: "--resume of a directory that holds no run",
        args: resume(None, &empty, &[]),
        expect: "not a run directory (no config.toml)",
    });
    cases.push(Case {
        what: "a table of a directory that holds no run",
        args: vec!["table".into(), empty.display().to_string()],
        expect: "not a run directory (no config.toml)",
    });
    // A run whose config.toml was edited to another model than its checkpoint holds.
    let edited_model = root.join("edited-model");
    copy_dir(done, &edited_model);
    let config = RunDir::new(&edited_model).config();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("layers = [36, 8, 3]"), "{text}");
    std::fs::write(&config, text.replace("[36, 8, 3]", "[36, 9, 3]")).unwrap();
    cases.push(Case {
        what: "a resumed run whose config.toml says another model than its checkpoint",
        args: resume(Some(good), &edited_model, &[]),
        expect: "checkpoint is layers [36, 8, 3], tanh but the config says layers [36, 9, 3], tanh",
    });
    // See: a table row counted a run given twice as two seeds of its experiment.
    cases.push(Case {
        what: "a table given one run twice (or two runs of one name and seed)",
        args: vec![
            "table".into(),
            done.display().to_string(),
            done.display().to_string(),
        ],
        expect: "are both experiment \"momentum\" with seed 1: a row counts each seed once",
    });
    // A resumed run went on with whatever --data said (or the default), silently.
    let other = dataset(root, "other");
    let p = other.join("train-labels-idx1-ubyte");
    let mut labels = std::fs::read(&p).unwrap();
    labels[8] = (labels[8] + 1) % 3;
    std::fs::write(p, labels).unwrap();
    let mut resume_with = |what, data: &Path, run: &Path, expect| {
        cases.push(Case {
            what,
            args: resume(Some(data), run, &["--set", "epochs=3"]),
            expect,
        })
    };
    resume_with(
        "a resumed run given other data than it trained on",
        &other,
        done,
        "is not the same: train-labels-idx1-ubyte has SHA-256",
    );
    // Rows removed from metrics.csv were written back around the new epochs.
    let edited = root.join("edited");
    copy_dir(done, &edited);
    let metrics = std::fs::read_to_string(RunDir::new(&edited).metrics()).unwrap();
    let kept: Vec<&str> = metrics
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(RunDir::new(&edited).metrics(), kept.join("\n") + "\n").unwrap();
    resume_with(
        "a resumed run whose metrics.csv lost rows",
        good,
        &edited,
        "holds epochs 2 where the checkpoint has epochs 1 to 2 done",
    );
    // safetensors' own words ("incomplete metadata, file not fully covered").
    let cut = root.join("cut");
    copy_dir(done, &cut);
    let checkpoint = std::fs::read(RunDir::new(&cut).checkpoint()).unwrap();
    std::fs::write(
        RunDir::new(&cut).checkpoint(),
        &checkpoint[..checkpoint.len() / 2],
    )
    .unwrap();
    resume_with(
        "a resumed run whose checkpoint is truncated",
        good,
        &cut,
        "cut/last.safetensors is truncated or is not a safetensors file",
    );
    let blocker = root.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    cases.push(Case {
        what: "an output directory that cannot be created",
        args: train(good, &blocker.join("run"), &[]),
        expect: "a-file/run",
    });
    // Both said "File exists (os error 17)".
    cases.push(Case {
        what: "an output directory that is a file",
        args: train(good, &blocker, &[]),
        expect: "a-file is not a directory",
    });
    cases.push(Case {
        what: "an output directory that is a device",
        args: train(good, Path::new("/dev/full"), &[]),
        expect: "run directory /dev/full is not a directory",
    });
    cases
}

/// Devices, adapters and the environment variables that pick them.
fn device_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good, out) = (g.root, g.good.as_path(), g.out.as_path());
    let mut cases = Vec::new();
    let mut gpu = train(good, out, &[]);
    gpu[2] = "gpu".into();
    gpu.extend(["--backend".into(), "metal".into()]);
    if cfg!(target_os = "linux") {
        cases.push(Case {
            what: "--device gpu with no adapter for the backend",
            args: gpu.clone(),
            expect: "no GPU adapter found for backend metal",
        });
    }
    if cfg!(target_os = "linux") {
        // A common name that is not here says what it stands for.
        let mut warp = gpu.clone();
        warp.truncate(warp.len() - 2);
        warp.extend(["--adapter".into(), "warp".into()]);
        cases.push(Case {
            what: "--adapter naming a well-known adapter that is not here",
            args: warp,
            expect: "no adapter matches --adapter \"warp\" (warp is Windows' DX12 CPU adapter, listed as \"Microsoft Basic Render Driver\" on dx12); found: ",
        });
    }
    gpu.truncate(gpu.len() - 1);
    gpu.push("cuda".into());
    cases.push(Case {
        what: "an unknown GPU backend",
        args: gpu,
        expect: "unknown backend \"cuda\"",
    });
    // A kernel set no CPU has; one this CPU lacks (`avx512` on an AVX2 machine) is refused
    // with a message that names the machine's own, in tests/cpu_kernels.rs.
    let mut kernels = train(good, out, &[]);
    kernels.insert(0, "WGTRAIN_CPU_KERNELS=avx3".into());
    cases.push(Case {
        what: "a CPU kernel set that is not one",
        args: kernels,
        expect: "WGTRAIN_CPU_KERNELS=\"avx3\": expected auto, avx2 or avx512",
    });
    // Checked before any adapter is looked for, so the message is the same on every machine.
    let mut tuned = train(good, out, &[]);
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
    let mut tuned = train(good, out, &[]);
    tuned[2] = "gpu".into();
    tuned.insert(0, format!("WGTRAIN_TUNING_FILE={}", tuning.display()));
    cases.push(Case {
        what: "a tuning file that is not one",
        args: tuned,
        expect: "tuning.toml: line 2: invalid type: integer `1`, expected a string",
    });
    // Every environment variable wgtrain reads is checked; these two were ignored.
    for (what, variable, expect) in [
        (
            "a storage-binding cap that is not a number",
            "WGTRAIN_GPU_MAX_STORAGE_BINDING=abc",
            "WGTRAIN_GPU_MAX_STORAGE_BINDING must be a whole number of bytes, got \"abc\"",
        ),
        (
            "a WGPU_BACKEND wgpu does not know (it finds no adapter, silently)",
            "WGPU_BACKEND=vulkna",
            "WGPU_BACKEND must be vulkan, metal, dx12 or gl (comma-separated), got \"vulkna\"",
        ),
    ] {
        let mut args = train(good, out, &[]);
        args[2] = "auto".into();
        args.insert(0, variable.into());
        cases.push(Case { what, args, expect });
    }
    cases
}

/// A model file that is not one.
fn model_file_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good) = (g.root, g.good.as_path());
    let mut cases = Vec::new();
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
    cases
}

/// Sweep files, searches, pruning, shards and reports.
fn sweep_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good, out) = (g.root, g.good.as_path(), g.out.as_path());
    let mut cases = Vec::new();
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
    // Bad search and pruning specs are refused before any run starts.
    for (what, file, spec, expect) in [
        (
            "a search range that is empty",
            "search-empty.toml",
            "trials = 3\n[search]\nmomentum_gamma = { uniform = [0.9, 0.9] }\n",
            "`search.momentum_gamma`: the range [0.9, 0.9] is empty",
        ),
        (
            "a log-uniform search range that reaches 0",
            "search-log.toml",
            "trials = 3\n[search]\nlearning_rate = { log_uniform = [0, 0.1] }\n",
            "log_uniform's range [0, 0.1] reaches 0: a log scale needs both ends above 0",
        ),
        (
            "a whole-number search range whose low end is above its high end",
            "search-int.toml",
            "trials = 3\n[search]\nbatch_size = { int = [256, 32] }\n",
            "`search.batch_size`: the range [256, 32] is empty",
        ),
        (
            "a number drawn for a key that takes no number",
            "search-type.toml",
            "trials = 3\n[search]\nactivation = { uniform = [0.1, 0.5] }\n",
            "`search.activation` draws decimal numbers, but activation takes a string such as \"tanh\"",
        ),
        (
            "a search without a number of trials",
            "search-trials.toml",
            "[search]\nlearning_rate = { uniform = [0.01, 0.1] }\n",
            "`[search]` needs `trials = N`",
        ),
        (
            "a pruning factor below 2",
            "prune-eta.toml",
            "[grid]\nlearning_rate = [0.01, 0.1]\n[prune]\nmin_epochs = 1\nmax_epochs = 9\neta = 1\n",
            "`prune.eta = 1` keeps every setting",
        ),
        (
            "a pruning minimum above its maximum",
            "prune-range.toml",
            "[grid]\nlearning_rate = [0.01, 0.1]\n[prune]\nmin_epochs = 10\nmax_epochs = 9\n",
            "`prune.min_epochs = 10` is above `prune.max_epochs = 9`",
        ),
        (
            "a pruning minimum of no epochs",
            "prune-zero.toml",
            "[grid]\nlearning_rate = [0.01, 0.1]\n[prune]\nmin_epochs = 0\nmax_epochs = 9\n",
            "`prune.min_epochs = 0`: the first rung needs at least one epoch",
        ),
        // Each trained seed 1 under a heading that named another, silently.
        (
            "a sweep setting that sets the seed",
            "seed-grid.toml",
            "[grid]\nseed = [3, 4]\n",
            "`grid.seed`: a sweep trains each setting with every seed of its `seeds`",
        ),
        (
            "a seed listed twice",
            "seeds-twice.toml",
            "seeds = [1, 2, 1]\n[grid]\nlearning_rate = [0.1]\n",
            "`seeds` lists 1 twice",
        ),
        (
            "a search distribution that is not one of the four forms",
            "search-form.toml",
            "trials = 3\n[search]\nlearning_rate = { uniform = [0.001, 0.1], log = true }\n",
            "line 3: a distribution is one of `{ uniform = [low, high] }`",
        ),
        (
            "more Hyperband brackets than rungs to start them at",
            "prune-brackets.toml",
            "[grid]\nlearning_rate = [0.01, 0.1]\n[prune]\nmin_epochs = 1\nmax_epochs = 9\nbrackets = 4\n",
            "`prune.brackets = 4`: between min_epochs = 1 and max_epochs = 9 with eta = 3 there are 1 to 3 brackets",
        ),
        (
            "a search beside a grid",
            "search-grid.toml",
            "trials = 3\n[grid]\nepochs = [1, 2]\n[search]\nlearning_rate = { uniform = [0.01, 0.1] }\n",
            "a sweep is a `[grid]`, a list of `[[runs]]` or a `[search]`",
        ),
    ] {
        let path = root.join(file);
        std::fs::write(&path, spec).unwrap();
        cases.push(Case {
            what,
            args: vec![
                "sweep".into(),
                path.display().to_string(),
                "--out".into(),
                root.join("sweep-out").display().to_string(),
            ],
            expect,
        });
    }
    let one_run = root.join("one-run.toml");
    std::fs::write(&one_run, "[grid]\nlearning_rate = [0.1]\n").unwrap();
    // See: the sweep trained the settings before the bad one, then ended midway.
    let unfit = root.join("unfit.toml");
    std::fs::write(
        &unfit,
        "[grid]\nlayers = [[36, 8, 3], [784, 8, 3]]\nepochs = [1]\nbatch_size = [8]\n",
    )
    .unwrap();
    cases.push(Case {
        what: "a sweep setting the data cannot train",
        args: vec![
            "sweep".into(),
            unfit.display().to_string(),
            "--out".into(),
            root.join("unfit-out").display().to_string(),
            "--device".into(),
            "cpu".into(),
            "--data".into(),
            good.display().to_string(),
        ],
        expect: "layers = [784, 8, 3]: the input width must equal the data's 36 pixels per image",
    });
    // See: a rerun with another [prune] kept the old rungs' verdicts under the new file's name.
    let pruned_out = root.join("pruned-sweep");
    let prune_spec = |eta: usize| {
        format!(
            "[grid]\nlearning_rate = [0.01, 0.1, 0.3]\n[prune]\nmin_epochs = 1\nmax_epochs = 2\neta = {eta}\n"
        )
    };
    let (pruned_file, changed_file) = (root.join("pruned.toml"), root.join("pruned-eta2.toml"));
    std::fs::write(&pruned_file, prune_spec(3)).unwrap();
    std::fs::write(&changed_file, prune_spec(2)).unwrap();
    let sweep_args = |file: &Path| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "sweep".into(),
            file.display().to_string(),
            "--out".into(),
            pruned_out.display().to_string(),
            "--device".into(),
            "cpu".into(),
            "--data".into(),
            good.display().to_string(),
        ];
        // TINY's model and batch; the sweep's [prune] sets the epochs.
        for pair in TINY.chunks(2).filter(|p| !p[1].starts_with("epochs=")) {
            a.extend(pair.iter().map(|s| s.to_string()));
        }
        a
    };
    let pruned = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(sweep_args(&pruned_file))
        .output()
        .unwrap();
    assert!(pruned.status.success(), "{pruned:?}");
    cases.push(Case {
        what: "a pruned sweep rerun into its directory with another `[prune]`",
        args: sweep_args(&changed_file),
        expect: "was judged by [prune] min_epochs = 1, max_epochs = 2, eta = 3, and the sweep file now says [prune] min_epochs = 1, max_epochs = 2, eta = 2",
    });
    cases.push(Case {
        what: "a seed given to every run of a sweep with --set",
        args: vec![
            "sweep".into(),
            one_run.display().to_string(),
            "--out".into(),
            root.join("sweep-out").display().to_string(),
            "--set".into(),
            "seed=4".into(),
        ],
        expect: "--set seed=4: a sweep trains each setting with every seed of its `seeds`",
    });
    // Each said "shard 0/1" and trained the whole sweep.
    for (what, env, expect) in [
        (
            "a Slurm task id beyond the array's count",
            vec!["SLURM_ARRAY_TASK_ID=5", "SLURM_ARRAY_TASK_COUNT=2"],
            "SLURM_ARRAY_TASK_ID=5 in an array 0-1:1 of SLURM_ARRAY_TASK_COUNT=2: the task id is not one of the array's",
        ),
        (
            "a Slurm task id that is not a number",
            vec!["SLURM_ARRAY_TASK_ID=x", "SLURM_ARRAY_TASK_COUNT=2"],
            "SLURM_ARRAY_TASK_ID=\"x\" is not a whole number",
        ),
        (
            "a Kubernetes completion index beyond the shard count",
            vec!["JOB_COMPLETION_INDEX=7"],
            "JOB_COMPLETION_INDEX=7 is not below --shard-count 2",
        ),
    ] {
        let mut args: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        args.extend([
            "sweep".into(),
            one_run.display().to_string(),
            "--out".into(),
            root.join("shard-out").display().to_string(),
        ]);
        if what.contains("Kubernetes") {
            args.extend(["--shard-count".into(), "2".into()]);
        }
        cases.push(Case { what, args, expect });
    }
    // wgpu reads none of the variables Slurm's --gres sets: every task of an array
    // trained on the node's first GPU.
    for (what, assigned, expect) in [
        (
            "a GPU a scheduler assigned that wgpu does not find (`--device auto`)",
            "CUDA_VISIBLE_DEVICES=7",
            "CUDA_VISIBLE_DEVICES=7 gives this process GPU 7, but wgpu finds",
        ),
        (
            "a GPU assigned by UUID",
            "CUDA_VISIBLE_DEVICES=GPU-8f6c1b2e",
            "CUDA_VISIBLE_DEVICES must be GPU indices such as 0 or 0,1",
        ),
    ] {
        let mut args = train(good, out, &[]);
        args[2] = "auto".into();
        args.insert(0, assigned.into());
        cases.push(Case { what, args, expect });
    }
    // A grid of 10⁶ printed a 108 MB line and made 23,551 run directories.
    let huge = root.join("huge.toml");
    let axis: Vec<String> = (1..=10).map(|i| format!("0.{i:02}")).collect();
    let grid: String = [
        "learning_rate",
        "momentum_gamma",
        "l1",
        "l2",
        "val_fraction",
        "patience",
    ]
    .iter()
    .map(|k| format!("{k} = [{}]\n", axis.join(", ")))
    .collect();
    std::fs::write(&huge, format!("[grid]\n{grid}")).unwrap();
    cases.push(Case {
        what: "a sweep grid of a million runs",
        args: vec![
            "sweep".into(),
            huge.display().to_string(),
            "--out".into(),
            root.join("huge-out").display().to_string(),
        ],
        expect: "the sweep makes 1000000 runs (grid of 10 l1 × 10 l2 × 10 learning_rate × 10 momentum_gamma × 10 patience × 10 val_fraction = 1000000 settings × 1 seeds), more than the 1000 allowed",
    });
    // `sweep report` wrote an empty report into any folder.
    cases.push(Case {
        what: "a sweep report of a folder that holds no sweep",
        args: vec!["sweep".into(), "report".into(), good.display().to_string()],
        expect: "good holds no sweep",
    });
    cases
}

/// A sweep file where a config goes, and a config where a sweep file goes.
fn file_kind_cases(g: &Ground<'_>) -> Vec<Case> {
    let root = g.root;
    let one_run = root.join("one-run.toml"); // written by `sweep_cases`
    let mut cases = Vec::new();
    // The two kinds of TOML file, each given where the other goes.
    cases.push(Case {
        what: "a sweep file given as a training config",
        args: vec![
            "train".into(),
            "--config".into(),
            one_run.display().to_string(),
        ],
        expect: "one-run.toml is a sweep file, not a training config: run it with `wgtrain sweep",
    });
    let config_file = root.join("config.toml");
    std::fs::write(&config_file, "learning_rate = 0.1\n").unwrap();
    cases.push(Case {
        what: "a training config given as a sweep file",
        args: vec![
            "sweep".into(),
            config_file.display().to_string(),
            "--out".into(),
            root.join("config-out").display().to_string(),
        ],
        expect: "`learning_rate` is a config key: this is a training config, not a sweep file",
    });
    cases
}

/// Pictures and IDX files `predict` cannot classify, and class names it cannot print.
fn predict_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, done) = (g.root, g.done.as_path());
    let mut cases = Vec::new();
    // Half a JPEG answered "Sneaker 96.3%"; a 1.5 KB JPEG that declares
    // 16000 × 10000 pixels was decoded into 630 MB.
    let model = RunDir::new(done).model();
    let jpeg = jpeg_bytes(64);
    let half = root.join("half.jpg");
    std::fs::write(&half, &jpeg[..jpeg.len() / 2]).unwrap();
    let huge_jpeg = root.join("huge.jpg");
    std::fs::write(&huge_jpeg, with_declared_size(&jpeg, 16000, 10000)).unwrap();
    // See: a progressive JPEG cut short, with an end-of-image marker appended by hand, was
    // predicted from the blur its first scans give.
    let progressive = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pictures/progressive-32.jpg"),
    )
    .unwrap();
    let cut = root.join("cut-progressive.jpg");
    let mut cut_bytes = progressive[..progressive.len() / 2].to_vec();
    cut_bytes.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(&cut, cut_bytes).unwrap();
    // A baseline one cut right after its scan header, likewise closed by hand.
    let headers_only = root.join("headers-only.jpg");
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let sos_end = sos + 2 + u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]) as usize;
    let mut headers = jpeg[..sos_end].to_vec();
    headers.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(&headers_only, headers).unwrap();
    for (what, file, expect) in [
        ("half a JPEG", &half, "the JPEG is truncated or corrupt"),
        (
            "a progressive JPEG cut short, with an end-of-image marker added",
            &cut,
            "its scans leave part of the picture undecoded",
        ),
        (
            "a JPEG of headers alone, with an end-of-image marker added",
            &headers_only,
            "its scans leave part of the picture undecoded",
        ),
        (
            "a small JPEG that declares 16000 × 10000 pixels",
            &huge_jpeg,
            "declares 16000×10000 pixels, more than the 10000 a side wgtrain decodes",
        ),
    ] {
        cases.push(Case {
            what,
            args: vec![
                "predict".into(),
                "--model".into(),
                model.display().to_string(),
                file.display().to_string(),
            ],
            expect,
        });
    }
    // See: `--class-names a,,c` printed a prediction with a blank class name.
    cases.push(Case {
        what: "a class name left empty",
        args: vec![
            "predict".into(),
            "--model".into(),
            model.display().to_string(),
            half.display().to_string(),
            "--class-names".into(),
            "shirt,,boot".into(),
        ],
        expect: "--class-names: the name of class 1 is empty",
    });
    cases
}

/// Data `wgtrain web` would serve to a page that fails on it.
fn web_cases(g: &Ground<'_>) -> Vec<Case> {
    let root = g.root;
    let mut cases = Vec::new();
    // `wgtrain web` checks the data before serving a page that would fail on it.
    let no_labels = dataset(root, "web-no-labels");
    std::fs::remove_file(no_labels.join("t10k-labels-idx1-ubyte")).unwrap();
    cases.push(Case {
        what: "a data directory missing a file, served to the page",
        args: vec![
            "web".into(),
            "--port".into(),
            "0".into(),
            "--data".into(),
            no_labels.display().to_string(),
        ],
        expect: "t10k-labels-idx1-ubyte not found",
    });
    cases
}

/// Config files TOML cannot read.
fn config_file_cases(g: &Ground<'_>) -> Vec<Case> {
    let root = g.root;
    let mut cases = Vec::new();
    let broken = root.join("broken.toml");
    std::fs::write(&broken, "layers = [784, 10\nepochs = 3\n").unwrap();
    cases.push(Case {
        what: "a config file with a TOML syntax error",
        args: vec![
            "train".into(),
            "--config".into(),
            broken.display().to_string(),
        ],
        // toml's own display puts its caret on line 2, where `epochs` came instead of a comma.
        expect: "line 2: missing comma",
    });
    // See: an error at the start of a line was said to be on the line before.
    let twice = root.join("twice.toml");
    std::fs::write(&twice, "epochs = 2\nepochs = 3\n").unwrap();
    cases.push(Case {
        what: "a config file that gives a key twice",
        args: vec![
            "train".into(),
            "--config".into(),
            twice.display().to_string(),
        ],
        expect: "line 2: duplicate key",
    });
    cases
}

/// Bench outputs that cannot be written.
fn bench_cases(g: &Ground<'_>) -> Vec<Case> {
    let (root, good) = (g.root, g.good.as_path());
    // See: the bench ran to the end, then could not write its JSON.
    vec![
        Case {
            what: "a bench JSON file in a directory that does not exist",
            args: vec![
                "bench".into(),
                "--devices".into(),
                "cpu".into(),
                "--data".into(),
                good.display().to_string(),
                "--json".into(),
                root.join("no-such-dir/bench.json").display().to_string(),
            ],
            expect: "no-such-dir/bench.json: its directory",
        },
        Case {
            what: "bench's auto devices named beside another",
            args: vec![
                "bench".into(),
                "--devices".into(),
                "auto,gpu".into(),
                "--data".into(),
                good.display().to_string(),
            ],
            expect: "--devices: auto stands alone (the CPU, and a hardware GPU where there is one)",
        },
    ]
}

/// Gradient checks that could not fail.
fn gradcheck_cases(g: &Ground<'_>) -> Vec<Case> {
    let good = g.good.as_path();
    // See: `--epsilon 1e10` "passed: all 6 differences ≤ 1e20".
    vec![Case {
        what: "a gradient-check step so wide its ε² mark passes anything",
        args: vec![
            "gradcheck".into(),
            "--data".into(),
            good.display().to_string(),
            "--set".into(),
            "layers=[36, 8, 3]".into(),
            "--epsilon".into(),
            "1e10".into(),
        ],
        expect: "--epsilon 1e10: the step must be above 0 and at most 0.1",
    }]
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

/// Arguments as owned strings.
fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A safetensors file holding no tensor and `metadata` (JSON object text) as its metadata.
fn bare_safetensors(path: &Path, metadata: &str) {
    let header = format!("{{\"__metadata__\":{metadata}}}");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// What a user names that wgtrain must not write over, read wrongly or count wrongly: outputs,
/// directories of the user's files, files that are not regular files, sizes that overflow,
/// resumes that would change what a run is.
fn nothing_lost_cases(root: &Path, good: &Path, done: &Path) -> Vec<Case> {
    let path = |p: &Path| p.display().to_string();
    let mut cases = Vec::new();
    // See: `train --out DIR` wrote over the user's own accuracy.png and notes.
    let mine = root.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    cases.push(Case {
        what: "a run directory holding the user's own files",
        args: train(good, &mine, &[]),
        expect: "mine holds files wgtrain did not write (notes.txt) (hint: choose a new or empty directory, or --force",
    });
    let sweep_file = root.join("lost-sweep.toml");
    std::fs::write(&sweep_file, "[grid]\nlearning_rate = [0.1]\n").unwrap();
    cases.push(Case {
        what: "a sweep directory holding the user's own files",
        args: args(&[
            "sweep",
            &path(&sweep_file),
            "--data",
            &path(good),
            "--out",
            &path(&mine),
        ]),
        expect: "sweep directory",
    });
    // See: `bench --json /dev/full` (as root) turned the device into a regular file and
    // exited 0. Written through now, as a shell's `>` writes: the device says it is full.
    if Path::new("/dev/full").exists() {
        cases.push(Case {
            what: "a bench JSON file on a device that takes nothing",
            args: args(&[
                "bench",
                "--devices",
                "cpu",
                "--data",
                &path(good),
                "--set",
                "layers=[36, 8, 3]",
                "--set",
                "batch_size=8",
                "--warmup",
                "0",
                "--epochs",
                "1",
                "--json",
                "/dev/full",
            ]),
            expect: "--json /dev/full: No space left on device",
        });
    }
    // See: a FIFO as a data file blocked forever; /dev/zero was read until memory ran out.
    let fifo_data = dataset(root, "fifo");
    let fifo = fifo_data.join("train-labels-idx1-ubyte");
    std::fs::remove_file(&fifo).unwrap();
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    cases.push(Case {
        what: "a data file that is a named pipe",
        args: train(&fifo_data, &root.join("fifo-run"), &[]),
        expect: "train-labels-idx1-ubyte: is a named pipe (FIFO), not a regular file",
    });
    // See: an array holding a number past 64 bits was taken for a string ("invalid type:
    // string, expected a sequence").
    cases.push(Case {
        what: "a list in --set holding a number TOML cannot hold",
        args: args(&[
            "train",
            "--device",
            "cpu",
            "--data",
            &path(good),
            "--set",
            "layers=[36, 18446744073709551615, 3]",
        ]),
        expect: "--set layers=[36, 18446744073709551615, 3]: a number in it is out of range",
    });
    cases.push(Case {
        what: "a config file that is a device",
        args: args(&["train", "--config", "/dev/zero"]),
        expect: "/dev/zero: is a device, not a regular file",
    });
    // See: a dense layer of 3526583425856237809 units panicked (slice index) in gradcheck,
    // and train said "(7 parameters)": the count had wrapped.
    cases.push(Case {
        what: "a network whose parameters overflow a count",
        args: args(&[
            "gradcheck",
            "--data",
            &path(good),
            "--set",
            "network=[{dense=3526583425856237809},{dense=3}]",
        ]),
        expect: "the network's parameters reach 130483586756680798933, more than the 4294967295",
    });
    // See: eval and predict on a model whose metadata declares such a network panicked with
    // "capacity overflow".
    let huge = root.join("huge.safetensors");
    bare_safetensors(
        &huge,
        r#"{"layers":"[36, 9000000000000000000, 3]","activation":"tanh"}"#,
    );
    cases.push(Case {
        what: "a model file whose metadata declares more parameters than any model has",
        args: args(&["eval", "--model", &path(&huge), "--data", &path(good)]),
        expect: "declares 360000000000000000003 parameters, more than any model can have",
    });
    // C·H·W past even 128 bits.
    let wide = root.join("wide.safetensors");
    bare_safetensors(
        &wide,
        r#"{"input":"[8796093022208, 8796093022208, 8796093022208]","network":"[{\"dense\": 3}]"}"#,
    );
    cases.push(Case {
        what: "a model file whose metadata declares images too large to count",
        args: args(&["eval", "--model", &path(&wide), "--data", &path(good)]),
        expect: "values per image, more than the 4294967295 any layer may give",
    });
    let large = root.join("large.safetensors");
    bare_safetensors(
        &large,
        r#"{"layers":"[36, 100000000, 3]","activation":"tanh"}"#,
    );
    cases.push(Case {
        what: "a model file whose metadata declares more parameters than it holds",
        args: args(&["predict", "--model", &path(&large), &path(&large)]),
        expect: "more than the file's",
    });
    // See: `train --resume RUN --set seed=7` re-split train/validation mid-run.
    cases.push(Case {
        what: "a resume that changes the seed (the split and the first weights)",
        args: resume(Some(good), done, &["--set", "seed=7", "--set", "epochs=3"]),
        expect: "a resume cannot change seed from 1 to 7",
    });
    // See: predict on an IDX file of 0 images printed nothing and exited 0.
    let empty = root.join("empty-idx");
    std::fs::create_dir(&empty).unwrap();
    write_idx(&empty, "none-idx3-ubyte", &[0, 6, 6], &[], false);
    cases.push(Case {
        what: "an IDX images file of no images to predict",
        args: args(&[
            "predict",
            "--model",
            &path(&RunDir::new(done).model()),
            &path(&empty.join("none-idx3-ubyte")),
        ]),
        expect: "the IDX file holds no images",
    });
    // See: 1×1 images z-scored to all zeros, and the warning blamed the learning rate.
    let dots = root.join("dots");
    write_dataset(&dots, 60, 20, 1, 3, false);
    cases.push(Case {
        what: "images of one pixel (nothing left after the per-image z-score)",
        args: args(&[
            "train",
            "--device",
            "cpu",
            "--data",
            &path(&dots),
            "--out",
            &path(&root.join("dots-run")),
            "--set",
            "layers=[1, 3]",
        ]),
        expect: "every image of 1×1 pixels is one value throughout",
    });
    // See: `table SWEEP_DIR` said "config.toml: No such file" with no hint.
    let sweep_dir = root.join("a-sweep");
    std::fs::create_dir(&sweep_dir).unwrap();
    std::fs::write(sweep_dir.join("sweep.json"), "{}").unwrap();
    cases.push(Case {
        what: "a results table of a sweep directory",
        args: args(&["table", &path(&sweep_dir)]),
        expect: "a-sweep is a sweep directory, not a run (hint: `wgtrain sweep report",
    });
    // See: eval on labels beyond the model's classes blamed "the training labels".
    let four = root.join("four-classes");
    write_dataset(&four, 60, 20, 6, 4, false);
    cases.push(Case {
        what: "evaluation data with more classes than the model",
        args: args(&[
            "eval",
            "--model",
            &path(&RunDir::new(done).model()),
            "--data",
            &path(&four),
        ]),
        expect: "classes of the model",
    });
    // See: `trials = 1000000000` with a large --max-runs aborted allocating 24 GB.
    let billion = root.join("billion.toml");
    std::fs::write(
        &billion,
        "trials = 1000000000\n[search]\nlearning_rate = { log_uniform = [0.001, 0.1] }\n",
    )
    .unwrap();
    cases.push(Case {
        what: "a search of more trials than memory can plan",
        args: args(&[
            "sweep",
            &path(&billion),
            "--max-runs",
            "2000000000",
            "--out",
            &path(&root.join("billion-out")),
        ]),
        expect: "1000000000 runs would take about 3815 GiB of memory to plan",
    });
    cases
}
