//! Choosing an adapter the way `wgtrain devices` shows them, what `--device auto` says when it
//! takes the CPU, and output that holds only wgtrain's own lines.

use std::path::Path;
use std::process::{Command, Output};

use wgtrain::gpu::{AdapterSummary, GpuError, resolve_adapter};
use wgtrain::metrics::Summary;
use wgtrain::rundir::RunDir;

use crate::common::{stderr, wgtrain, write_dataset};

/// A network for `write_dataset(…, 64, 16, 4, 3, …)`: 4×4 images, 3 classes, one epoch.
const TINY: [&str; 6] = [
    "--set",
    "layers=[16, 3]",
    "--set",
    "epochs=1",
    "--set",
    "batch_size=16",
];

/// An adapter as `wgtrain devices` lists it.
fn adapter(index: usize, name: &str, backend: &str) -> AdapterSummary {
    AdapterSummary {
        index,
        name: name.into(),
        backend: backend.into(),
        device_type: "Cpu".into(),
        driver: String::new(),
        max_storage_buffer_binding_size: 1 << 27,
        max_compute_workgroup_storage_size: 32768,
        max_compute_invocations_per_workgroup: 1024,
        timestamp_queries: false,
        software: true,
        pci_bus_id: String::new(),
        chosen_by: None,
    }
}

#[test]
fn an_adapter_is_found_by_index_name_backend_and_common_name() {
    // Mesa's two llvmpipes share a name; the list is in `devices`' order, indices as it prints
    // them (here only the GL adapter and a SwiftShader passed a --backend filter: 3 and 5).
    let mesa = "llvmpipe (LLVM 15.0.6, 256 bits)";
    let all = [
        adapter(0, mesa, "vulkan"),
        adapter(1, "SwiftShader Device (Subzero)", "vulkan"),
        adapter(3, mesa, "gl"),
    ];
    let found = |q: &str| resolve_adapter(q, &all).map(|i| (all[i].index, all[i].backend.clone()));
    for (query, index, backend) in [
        ("0", 0, "vulkan"),
        ("3", 3, "gl"),
        (mesa, 0, "vulkan"),
        ("LLVMPIPE", 0, "vulkan"),
        ("vulkan:llvmpipe", 0, "vulkan"),
        ("gl:llvmpipe", 3, "gl"),
        (&format!("gl:{mesa}"), 3, "gl"),
        ("gl:3", 3, "gl"),
        ("opengl: 3", 3, "gl"),
        ("lavapipe", 0, "vulkan"),
        ("swiftshader", 1, "vulkan"),
        ("SwiftShader Device (Subzero)", 1, "vulkan"),
    ] {
        assert_eq!(
            found(query).unwrap(),
            (index, backend.to_string()),
            "{query}"
        );
    }
    // Named, but not there: the error says what the name stands for and what there is.
    for (query, meant) in [
        ("warp", "Microsoft Basic Render Driver"),
        ("vulkan:3", ""),
        ("2", ""),
        ("metal:llvmpipe", ""),
        ("radeon", ""),
    ] {
        let e = found(query).unwrap_err();
        assert!(
            matches!(e, GpuError::AdapterNotFound { .. }),
            "{query}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains(meant), "{query}: {text}");
        assert!(
            text.contains(&format!("0: {mesa} (vulkan)"))
                && text.contains(&format!("3: {mesa} (gl)")),
            "{query}: {text}"
        );
    }
    // A lavapipe asked for where only the GL llvmpipe is: not the GL one.
    let gl_only = [adapter(1, mesa, "gl")];
    let e = resolve_adapter("lavapipe", &gl_only)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Mesa's Vulkan CPU adapter"), "{e}");
}

/// One row `wgtrain devices` prints.
struct Listed {
    index: String,
    name: String,
    backend: String,
    /// Its type is `Cpu`: lavapipe, llvmpipe, SwiftShader, WARP.
    software: bool,
}

/// Every row `wgtrain devices` prints.
fn devices() -> Vec<Listed> {
    let o = wgtrain(&["devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| index"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Listed {
                index: cells[1].into(),
                name: cells[2].into(),
                backend: cells[3].into(),
                software: cells[4] == "Cpu",
            }
        })
        .collect()
}

#[test]
fn every_form_devices_prints_picks_that_adapter_in_train_sweep_bench_and_check() {
    // `--adapter 1` (the GL row) failed in train, sweep and bench unless
    // `--backend gl` was given too, and `--adapter lavapipe` matched nothing.
    let rows = devices();
    if rows.is_empty() {
        crate::common::skip("no GPU adapter listed", "WGTRAIN_REQUIRE_GPU");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 64, 16, 4, 3, true);
    let trained_on = |form: &str, device: &str| -> (String, String) {
        let out = tmp
            .path()
            .join(format!("run-{}", form.replace([':', ' ', '/'], "_")));
        let mut args = vec!["train", "--quiet", "--force", "--device", device];
        args.extend(["--adapter", form, "--data", data.to_str().unwrap()]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(TINY);
        let o = wgtrain(&args);
        assert!(o.status.success(), "--adapter {form:?}: {}", stderr(&o));
        let s = Summary::read(&RunDir::new(&out).summary()).unwrap();
        (s.adapter.unwrap_or_default(), s.backend.unwrap_or_default())
    };
    for Listed {
        index,
        name,
        backend,
        ..
    } in &rows
    {
        // A name two adapters share picks the first listed, as `devices` orders them.
        let first_named = rows.iter().find(|r| &r.name == name).unwrap();
        let expected = (name.clone(), backend.clone());
        for form in [
            index.clone(),
            format!("{backend}:{name}"),
            format!("{backend}:{index}"),
        ] {
            assert_eq!(trained_on(&form, "gpu"), expected, "--adapter {form:?}");
        }
        // Naming an adapter is enough for --device auto to take it, software or not.
        assert_eq!(trained_on(index, "auto"), expected, "--device auto");
        assert_eq!(
            trained_on(name, "gpu"),
            (first_named.name.clone(), first_named.backend.clone()),
            "--adapter {name:?}"
        );
    }
    // The last row (GL on Mesa) by index, in the other commands that take --adapter.
    let Listed {
        index,
        name,
        backend,
        ..
    } = rows.last().unwrap();
    let sweep = tmp.path().join("sweep.toml");
    std::fs::write(&sweep, "[grid]\nlearning_rate = [0.05, 0.1]\n").unwrap();
    let sweep_out = tmp.path().join("sweep");
    for args in [
        vec!["check", "--adapter", index.as_str()],
        vec![
            "sweep",
            sweep.to_str().unwrap(),
            "--device",
            "gpu",
            "--adapter",
            index,
            "--data",
            data.to_str().unwrap(),
            "--out",
            sweep_out.to_str().unwrap(),
        ]
        .into_iter()
        .chain(TINY)
        .collect(),
        vec![
            "bench",
            "--devices",
            "cpu,gpu",
            "--adapter",
            index,
            "--warmup",
            "0",
            "--epochs",
            "1",
            "--data",
            data.to_str().unwrap(),
        ]
        .into_iter()
        .chain(TINY)
        .collect(),
    ] {
        let o = wgtrain(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            out.contains(&format!("{name} ({backend}, ")),
            "{args:?} ran elsewhere: {out}"
        );
        // In a log, a GPU pack shows its progress as a single run does; bench says how much
        // slower or faster in words, not as a bare ratio.
        match args[0] {
            "check" => assert!(
                out.lines()
                    .last()
                    .is_some_and(|l| l.ends_with("checks passed on 1 adapter")
                        && l.split(' ').next() == l.split(' ').nth(2)),
                "a one-line verdict, every check passed: {out}"
            ),
            "sweep" => assert!(stderr(&o).contains("pack epoch   1/1"), "{}", stderr(&o)),
            "bench" => assert!(
                out.lines().any(|l| l.starts_with("| gpu |")
                    && (l.contains("× slower |") || l.contains("× faster |"))),
                "{out}"
            ),
            _ => {}
        }
    }
    let results = std::fs::read_to_string(sweep_out.join("results.csv")).unwrap();
    assert!(results.contains(name.as_str()), "{results}");
}

#[test]
fn auto_says_why_it_trains_on_the_cpu_when_every_adapter_is_a_software_one() {
    // The note told a user with lavapipe installed to install it.
    let rows = devices();
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 64, 16, 4, 3, true);
    let mut args = vec!["train", "--quiet", "--data", data.to_str().unwrap()];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(TINY);
    let o = wgtrain(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let device = Summary::read(&RunDir::new(&out).summary()).unwrap().device;
    let err = stderr(&o);
    if device != "cpu" {
        // A real GPU here: auto took it, and said nothing.
        assert!(!err.contains("note: --device auto"), "{err}");
        return;
    }
    if rows.is_empty() {
        assert!(err.contains("no GPU adapter found"), "{err}");
        return;
    }
    assert!(
        err.contains("the only adapters here are software ones")
            && err.contains(&rows[0].name)
            && err.contains("--device gpu uses one anyway")
            && !err.contains("apt-get"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The binary with `args`, in the environment a newcomer's shell has: no XDG_RUNTIME_DIR, and
/// not the NODEVICE_SELECT that `.cargo/config.toml` gives the test process.
fn bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap()
}

#[test]
fn devices_check_and_a_gpu_run_print_nothing_but_their_own_lines() {
    // Mesa's device-select layer printed "error: XDG_RUNTIME_DIR is invalid
    // or not set in the environment." twice on every command that looked for adapters.
    if devices().is_empty() {
        crate::common::skip("no GPU adapter listed", "WGTRAIN_REQUIRE_GPU");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("run"));
    write_dataset(&data, 64, 16, 4, 3, true);
    let mut train = vec!["train", "--quiet", "--device", "gpu"];
    train.extend([
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    train.extend(TINY);
    for args in [&["devices"][..], &["check", "--adapter", "0"], &train] {
        let o = bare(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?} printed lines not its own");
    }
    assert!(Path::new(&RunDir::new(&out).summary()).exists());
}

#[test]
fn a_long_run_on_a_software_adapter_says_so_before_it_starts() {
    // A sweep on lavapipe printed nothing for 3½ minutes. The paper's model on
    // Fashion-MNIST is estimated at minutes there: the note comes before the first epoch, and
    // the test stops the run once it has read it.
    let rows = devices();
    if rows.is_empty() {
        crate::common::skip("no GPU adapter listed", "WGTRAIN_REQUIRE_GPU");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/momentum.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(["train", "--device", "gpu", "--adapter", "0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(crate::common::fashion_mnist())
        .arg("--out")
        .arg(tmp.path().join("run"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    if rows[0].software {
        assert!(
            first.starts_with("note: ")
                && first.contains("is a software adapter")
                && first.contains("may take up to roughly"),
            "{first}"
        );
    } else {
        assert!(!first.contains("software adapter"), "{first}");
    }
}

/// A GPU as `wgtrain devices` lists it: a real one, with the PCI bus id Vulkan reports.
fn gpu_at(index: usize, name: &str, backend: &str, bus: &str) -> AdapterSummary {
    AdapterSummary {
        device_type: "DiscreteGpu".into(),
        software: false,
        pci_bus_id: bus.into(),
        ..adapter(index, name, backend)
    }
}

#[test]
fn a_gpu_a_scheduler_assigned_is_the_adapter_at_its_place_in_pci_bus_order() {
    use wgtrain::gpu::AssignedGpus;
    // A node of four GPUs that Vulkan lists out of bus order, their GL twin and lavapipe.
    let node = [
        gpu_at(0, "GPU at 41", "vulkan", "0000:41:00.0"),
        gpu_at(1, "GPU at 01", "vulkan", "0000:01:00.0"),
        gpu_at(2, "GPU at c1", "vulkan", "0000:c1:00.0"),
        gpu_at(3, "GPU at 81", "vulkan", "0000:81:00.0"),
        adapter(4, "llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan"),
        gpu_at(5, "GPU at 01", "gl", ""),
    ];
    let assigned = |vars: &[(&str, &str)]| {
        AssignedGpus::from_vars(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    };
    let on = |vars: &[(&str, &str)], adapters: &[AdapterSummary]| {
        let gpus = assigned(vars).unwrap().expect("a GPU is assigned");
        gpus.resolve(adapters).map(|i| adapters[i].name.clone())
    };
    for (vars, name) in [
        (&[("CUDA_VISIBLE_DEVICES", "0")][..], "GPU at 01"),
        (&[("CUDA_VISIBLE_DEVICES", "2")], "GPU at 81"),
        (&[("CUDA_VISIBLE_DEVICES", "3,1")], "GPU at c1"),
        (&[("ROCR_VISIBLE_DEVICES", "1")], "GPU at 41"),
        (&[("SLURM_JOB_GPUS", "1")], "GPU at 41"),
        // CUDA_VISIBLE_DEVICES is read before Slurm's own variable, and an empty one skipped.
        (
            &[("SLURM_JOB_GPUS", "3"), ("CUDA_VISIBLE_DEVICES", "2")],
            "GPU at 81",
        ),
        (
            &[("CUDA_VISIBLE_DEVICES", " "), ("SLURM_JOB_GPUS", "3")],
            "GPU at c1",
        ),
    ] {
        assert_eq!(on(vars, &node).unwrap(), name, "{vars:?}");
    }
    // A cgroup shows the task only its GPUs: Slurm's node-wide indices name them in order.
    let constrained = [gpu_at(0, "GPU at c1", "vulkan", "0000:c1:00.0")];
    assert_eq!(
        on(&[("SLURM_JOB_GPUS", "3")], &constrained).unwrap(),
        "GPU at c1"
    );
    let two = [node[0].clone(), node[2].clone()]; // GPUs 1 and 3 of the node
    for (ids, name) in [
        ("1,3", "GPU at 41"),
        ("3,1", "GPU at c1"),
        ("0,1", "GPU at 41"),
    ] {
        assert_eq!(on(&[("SLURM_JOB_GPUS", ids)], &two).unwrap(), name, "{ids}");
    }
    // A task given every GPU of the node, listed out of order: its first is the first listed.
    assert_eq!(
        on(&[("CUDA_VISIBLE_DEVICES", "3,2,1,0")], &node).unwrap(),
        "GPU at c1"
    );
    // Without bus ids, the backend's own order.
    let no_bus: Vec<AdapterSummary> = node
        .iter()
        .map(|s| AdapterSummary {
            pci_bus_id: String::new(),
            ..s.clone()
        })
        .collect();
    assert_eq!(
        on(&[("CUDA_VISIBLE_DEVICES", "2")], &no_bus).unwrap(),
        "GPU at c1"
    );

    // No variable: nothing assigned. A GPU beyond the node's, or none but software ones: an
    // error naming the variable and what there is. An index that is not one: an error.
    assert_eq!(assigned(&[]).unwrap(), None);
    let e = on(&[("CUDA_VISIBLE_DEVICES", "4")], &node)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CUDA_VISIBLE_DEVICES=4 gives this process GPU 4, but wgpu finds 4 GPUs on vulkan: 0: GPU at 01, 1: GPU at 41"),
        "{e}"
    );
    let e = on(&[("SLURM_JOB_GPUS", "0")], &node[4..5])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "SLURM_JOB_GPUS=0 gives this process GPU 0, but wgpu finds no GPU (found only llvmpipe"
        ),
        "{e}"
    );
    for bad in ["GPU-8f6c1b2e-3f1d", "NoDevFiles", "-1"] {
        let e = assigned(&[("CUDA_VISIBLE_DEVICES", bad)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CUDA_VISIBLE_DEVICES must be GPU indices") && e.contains(bad),
            "{e}"
        );
    }
}

#[test]
fn a_run_says_which_adapter_it_trained_on_and_what_chose_it() {
    let rows = devices();
    if rows.is_empty() {
        crate::common::skip("no GPU adapter listed", "WGTRAIN_REQUIRE_GPU");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 64, 16, 4, 3, true);
    let train = |out: &str, device: &str, extra: &[&str], cuda: &str| {
        let out = tmp.path().join(out);
        let mut args = vec!["train", "--quiet", "--device", device, "--data"];
        args.push(data.to_str().unwrap());
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(TINY);
        args.extend(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .args(&args)
            .env("CUDA_VISIBLE_DEVICES", cuda)
            .output()
            .unwrap();
        let summary = o
            .status
            .success()
            .then(|| Summary::read(&RunDir::new(&out).summary()).unwrap());
        (summary, stderr(&o))
    };
    // --adapter wins over the scheduler's variable, and the summary says which adapter.
    let (summary, err) = train("named", "gpu", &["--adapter", "0"], "5");
    let summary = summary.unwrap_or_else(|| panic!("{err}"));
    assert_eq!(summary.adapter.as_deref(), Some(rows[0].name.as_str()));
    assert_eq!(summary.adapter_index, Some(0));
    assert_eq!(summary.adapter_chosen_by.as_deref(), Some("--adapter 0"));
    // The CPU reads no GPU variable.
    let (summary, err) = train("cpu", "cpu", &[], "GPU-8f6c1b2e");
    assert_eq!(summary.unwrap_or_else(|| panic!("{err}")).device, "cpu");
    // GPU 0 assigned: trained on the node's first real GPU, or, where wgpu finds only
    // software adapters (CI), a clear error, also with --device auto: never another adapter,
    // never the CPU in its place.
    let gpus: Vec<&Listed> = rows.iter().filter(|r| !r.software).collect();
    // `devices` says which adapter that is, or why there is none.
    let listed = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .arg("devices")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&listed.stdout),
        stderr(&listed)
    );
    assert_eq!(listed.status.success(), !gpus.is_empty(), "{said}");
    assert!(
        said.contains("CUDA_VISIBLE_DEVICES=0: this process trains on adapter")
            || said
                .contains("CUDA_VISIBLE_DEVICES=0 gives this process GPU 0, but wgpu finds no GPU"),
        "{said}"
    );
    for device in ["gpu", "auto"] {
        let (summary, err) = train(&format!("assigned-{device}"), device, &[], "0");
        match (summary, gpus.is_empty()) {
            (Some(s), false) => {
                assert_eq!(
                    s.adapter_chosen_by.as_deref(),
                    Some("CUDA_VISIBLE_DEVICES=0")
                );
                assert!(gpus.iter().any(|g| Some(&g.name) == s.adapter.as_ref()));
            }
            (None, true) => assert!(
                err.contains(
                    "CUDA_VISIBLE_DEVICES=0 gives this process GPU 0, but wgpu finds no GPU"
                ) && err.lines().count() == 1,
                "{err}"
            ),
            (summary, _) => panic!("{device}: {summary:?} {err}"),
        }
    }
}
