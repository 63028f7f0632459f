//! Command-line interface: the commands, each parsing its arguments (`args`) into library
//! types, validating them before any data is read, calling the library and printing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use wgtrain::data;
use wgtrain::gpu::list_adapters;
use wgtrain::run::{RunOptions, run_training};
use wgtrain::train::{EpochRecord, Verdict};
use wgtrain::{checkpoint, report};

mod args;
mod bench;
mod device;
mod interrupt;
mod progress;
mod sweep;
mod tune;

pub use args::Cli;
use args::*;
use bench::bench;
use device::{engine_kind, note_software_adapter};
use interrupt::interrupt_flag;
use progress::EpochProgress;
use sweep::sweep;
use tune::tune;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(&args),
        Command::Eval {
            model,
            data,
            json,
            threads,
        } => eval(&model, data, json, threads),
        Command::Gradcheck {
            config,
            samples,
            per_layer,
            epsilon,
        } => gradcheck(&config, samples, per_layer, epsilon),
        Command::Devices { backend } => devices(backend.as_deref()),
        Command::Predict {
            model,
            files,
            top,
            class_names,
            json,
        } => predict(&model, &files, top, class_names.as_deref(), json),
        Command::Sweep(args) => sweep(args),
        Command::Bench(args) => bench(args),
        Command::Tune(args) => tune(args),
        Command::Check { all_adapters, gpu } => check(all_adapters, &gpu),
        Command::Table { runs } => table(&runs),
        Command::Plot { runs, out } => plot(&runs, out),
        Command::Web { data, host, port } => web(data, host, port),
    }
}

/// `wgtrain web`: checks the page and data, prints where the page is, and serves it.
fn web(data: Option<PathBuf>, host: std::net::IpAddr, port: u16) -> Result<()> {
    use wgtrain::serve::{PageServer, Site};
    let data_dir = data.unwrap_or_else(data::default_dir);
    let server = PageServer::bind((host, port).into(), Site::in_source_tree(data_dir.clone()))?;
    let url = server.url();
    println!(
        "serving the page on {url} (data: {}; Ctrl-C stops)",
        data_dir.display()
    );
    println!("  train without a click: {url}?config=momentum&epochs=5&autorun=1");
    Ok(server.serve()?)
}

fn predict(
    model: &Path,
    files: &[PathBuf],
    top: usize,
    class_names: Option<&str>,
    json: bool,
) -> Result<()> {
    if top == 0 {
        bail!("--top must be at least 1");
    }
    let params = checkpoint::load_model(model)?;
    let classes = params.model.classes();
    let names = wgtrain::predict::class_names(classes, class_names)?;
    for p in wgtrain::predict::predict_files(&params, files, top)? {
        let name = match p.index {
            Some(i) => format!("{}[{i}]", p.file.display()),
            None => p.file.display().to_string(),
        };
        if json {
            let top: Vec<_> = p
                .top
                .iter()
                .map(|&(label, probability)| serde_json::json!({"class": names[label], "label": label, "probability": probability}))
                .collect();
            let mut line = serde_json::json!({"file": p.file, "index": p.index, "top": top});
            if let Some(warning) = &p.warning {
                line["warning"] = serde_json::json!(warning);
            }
            println!("{line}");
        } else {
            let shown: Vec<String> = p
                .top
                .iter()
                .map(|&(label, prob)| format!("{} {:.1}%", names[label], 100.0 * prob))
                .collect();
            println!("{name}: {}", shown.join(", "));
        }
        if let Some(warning) = &p.warning {
            eprintln!("warning: {name}: {warning}");
        }
    }
    Ok(())
}

fn devices(backend: Option<&str>) -> Result<()> {
    let adapters = pollster::block_on(list_adapters(backend))?;
    if adapters.is_empty() {
        println!(
            "no adapters found (hint: `apt-get install mesa-vulkan-drivers` gives lavapipe on Linux)"
        );
        return Ok(());
    }
    // What a GPU run on each adapter would start from: `wgtrain tune`'s choice, if any.
    let tuned = wgtrain::gpu::TuningFile::load_configured()?;
    println!(
        "| index | name | backend | type | driver | PCI bus | max storage binding (bytes) | max workgroup storage (bytes) | max invocations/workgroup | timestamps | tuning |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (s, _) in &adapters {
        let tuning = match tuned.find(s) {
            Some(t) => format!("tuned: {}", t.label()),
            None => "defaults".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.index,
            s.name,
            s.backend,
            s.device_type,
            s.driver,
            if s.pci_bus_id.is_empty() {
                "—"
            } else {
                &s.pci_bus_id
            },
            s.max_storage_buffer_binding_size,
            s.max_compute_workgroup_storage_size,
            s.max_compute_invocations_per_workgroup,
            if s.timestamp_queries { "yes" } else { "no" },
            tuning
        );
    }
    println!(
        "\nchoose one with --adapter INDEX, NAME (or part of it), BACKEND:NAME or BACKEND:INDEX (vulkan:llvmpipe, gl:1), or lavapipe, swiftshader, warp"
    );
    // On a scheduler's node: which of these the GPU it assigned is (docs/cluster.md).
    if let Some(assigned) = wgtrain::gpu::AssignedGpus::from_env()? {
        let summaries: Vec<_> = adapters.into_iter().map(|(s, _)| s).collect();
        let index = assigned.resolve(&summaries)?;
        println!(
            "{assigned}: this process trains on adapter {} unless --adapter names another",
            summaries[index].index
        );
    }
    Ok(())
}

fn check(all_adapters: bool, gpu: &GpuArgs) -> Result<()> {
    use wgtrain::check::{CheckTally, RowOutcome, adapters_to_check, run_all};
    let contexts = adapters_to_check(all_adapters, &gpu.choice(true))?;
    let mut tally = CheckTally::default();
    println!("| adapter | check | cases | max rel. error | max error / tolerance | result |");
    println!("|---|---|---|---|---|---|");
    for ctx in contexts {
        let ctx = match ctx {
            Ok(c) => c,
            Err((name, why)) => {
                println!("| {name} | (open device) | – | – | – | cannot run: {why} |");
                tally.unopened(&name);
                continue;
            }
        };
        tally.opened();
        for row in pollster::block_on(run_all(&ctx)) {
            tally.count(&ctx.describe(), &row);
            let result = match row.outcome() {
                RowOutcome::Pass => "pass".to_string(),
                RowOutcome::Fail(detail) => format!("FAIL: {detail}"),
                RowOutcome::CannotRun(why) => format!("cannot run: {why}"),
            };
            println!(
                "| {} | {} | {} | {:.1e} | {:.3} | {result} |",
                ctx.describe(),
                row.check,
                row.cases,
                row.max_rel_error,
                row.worst
            );
        }
    }
    if !tally.unrunnable.is_empty() {
        eprintln!("note: could not run on: {}", tally.unrunnable.join("; "));
    }
    println!("\n{}", tally.summary());
    Ok(tally.verdict()?)
}

/// `runs/<name>-<UTC timestamp>`.
fn default_run_dir(name: &str) -> PathBuf {
    let t = wgtrain::metrics::UtcTime::now();
    PathBuf::from("runs").join(format!(
        "{name}-{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    ))
}

/// The config a train command trains: the run's own (with `--set`) on `--resume`, else the
/// one the arguments give.
fn train_config(args: &ConfigArgs, resume: Option<&Path>) -> Result<wgtrain::config::TrainConfig> {
    let Some(dir) = resume else {
        return args.load();
    };
    if args.config.is_some() {
        bail!("--resume takes the run's own config.toml; drop --config (use --set to change keys)");
    }
    wgtrain::rundir::RunDir::new(dir)
        .read_config_with(&args.overrides())
        .with_context(|| format!("--resume {}", dir.display()))
}

fn train(t: &TrainArgs) -> Result<()> {
    let TrainArgs {
        config: args,
        out,
        resume,
        on,
        force,
        quiet,
    } = t;
    let (out, force, quiet) = (out.clone(), *force, *quiet);
    // The config is validated before any device is opened or data read.
    let config = train_config(args, resume.as_deref())?;
    let engine = engine_kind(on)?;
    let out = resume
        .clone()
        .or(out)
        .unwrap_or_else(|| default_run_dir(&config.name));
    let opts = RunOptions {
        out: out.clone(),
        force,
        data_dir: args.data.clone(),
        engine,
        resume: resume.is_some(),
        interrupt: Some(interrupt_flag()),
        datasets: None,
        stop_after: None,
    };
    let data_dir = opts.data_dir.clone().unwrap_or_else(data::default_dir);
    let flops =
        wgtrain::bench::config_epoch_flops(&config, &data_dir).map(|f| f * config.epochs as f64);
    note_software_adapter(&opts.engine, 1, flops);
    if !quiet
        && resume.is_none()
        && let Some(net) = wgtrain::run::declared_model(&config, &data_dir)
        && net.declared_widths().is_none()
    {
        println!("{}:\n{}", config.name, net.summary());
    }
    let epochs = config.epochs;
    let progress_display = EpochProgress::new(&config.name, epochs, quiet);
    let trained = std::cell::Cell::new(0usize);
    let progress = |r: &EpochRecord, v: Verdict| {
        trained.set(trained.get() + 1);
        progress_display.epoch(r, v)
    };
    let result = match on.device {
        Device::Auto => {
            wgtrain::run::run_training_or_cpu(&config, &opts, on.threads, progress, |e| {
                eprintln!("warning: the GPU cannot run this ({e}); training on the CPU instead")
            })
        }
        _ => run_training(&config, &opts, progress),
    };
    progress_display.finish();
    let summary = result
        .with_context(|| format!("training {} (run directory {})", config.name, out.display()))?;
    if let Some(warning) = &summary.warning {
        eprintln!("warning: {warning}");
    }
    if let Some(note) = summary.legs_note() {
        eprintln!("note: {} {note}", out.display());
    }
    if resume.is_some() && trained.get() == 0 {
        eprintln!("note: {} {}", out.display(), summary.nothing_left_note());
    }
    println!("{}", summary.result_line(&out));
    Ok(())
}

fn eval(model: &Path, data_dir: Option<PathBuf>, json: bool, threads: usize) -> Result<()> {
    let threads = threads_flag(threads)?;
    let data_dir = data_dir.unwrap_or_else(data::default_dir);
    let report = wgtrain::eval::evaluate_model(model, &data_dir, threads)?;
    let stats = &report.stats;
    if json {
        println!(
            "{}",
            serde_json::json!({"model": model, "test_accuracy": stats.accuracy, "test_loss": stats.loss, "samples": stats.samples})
        );
    } else {
        println!(
            "{}: test accuracy {:.2}%, test loss {:.4} over {} images",
            model.display(),
            100.0 * stats.accuracy,
            stats.loss,
            stats.samples
        );
        for (c, name) in report.names.iter().enumerate() {
            let (accuracy, total) = report.class_accuracy(c);
            println!("  {name:<12} {:6.2}% of {}", 100.0 * accuracy, total.max(1));
        }
        match &report.confusion_png {
            Ok(path) => println!("confusion matrix: {}", path.display()),
            Err(why) => println!("confusion matrix: {why}"),
        }
    }
    Ok(())
}

fn gradcheck(
    args: &ConfigArgs,
    samples: usize,
    per_layer: usize,
    epsilon: Option<f64>,
) -> Result<()> {
    let config = args.load()?;
    let epsilon = epsilon.unwrap_or(wgtrain::gradcheck::default_epsilon(&config));
    let report =
        wgtrain::gradcheck::check_config(&config, &args.data_dir(), samples, per_layer, epsilon)?;
    let tolerance = report.tolerance();
    println!(
        "gradient check: {} {}, {} training images, ε = {epsilon:e}, pass when |difference| ≤ ε² = {tolerance:e}",
        config.name,
        config.model_words(),
        report.samples
    );
    println!("| parameter | numerical | backprop | abs difference |");
    println!("|---|---|---|---|");
    for row in &report.rows {
        let kink = if row.kink { " (kink within ±ε)" } else { "" };
        println!(
            "| {}{kink} | {:.8e} | {:.8e} | {:.3e} |",
            row.parameter, row.numerical, row.backprop, row.difference
        );
    }
    let (failed, kinks) = (report.failures(), report.kinks());
    let judged = report.rows.len() - kinks;
    let unjudged = match kinks {
        0 => String::new(),
        k => format!(" ({k} beside a ReLU or pooling kink, not judged)"),
    };
    if judged == 0 {
        bail!(
            "gradient check inconclusive: every entry drawn lies within ±ε of a ReLU or pooling kink (hint: fewer --samples, or a smaller --epsilon)"
        );
    }
    if failed > 0 {
        bail!(
            "gradient check failed: {failed} of {judged} differences exceed ε² = {tolerance:e}{unjudged}"
        );
    }
    println!("passed: all {judged} differences ≤ {tolerance:e}{unjudged}");
    Ok(())
}

fn plot(runs: &[PathBuf], out: Option<PathBuf>) -> Result<()> {
    // As `table`: files are passed over (`runs/sweep-x/*` also matches results and plots).
    let runs: Vec<PathBuf> = runs.iter().filter(|p| !p.is_file()).cloned().collect();
    if runs.is_empty() {
        bail!("no run directory among the paths given");
    }
    let curves = runs
        .iter()
        .map(|dir| wgtrain::plot::RunCurves::read(dir))
        .collect::<wgtrain::Result<Vec<_>>>()?;
    let out = out.unwrap_or_else(|| {
        if runs.len() == 1 {
            runs[0].clone()
        } else {
            PathBuf::from("plots")
        }
    });
    wgtrain::error::ensure_dir(&out, "--out")?;
    // One run is titled by its experiment's name, as training titles it (its directory's
    // name, the label that tells overlaid runs apart, may be anything: "pl").
    let title = if curves.len() == 1 {
        wgtrain::rundir::RunDir::new(&runs[0])
            .read_config()
            .map_or_else(|_| curves[0].label.clone(), |c| c.name)
    } else {
        format!("{} runs", curves.len())
    };
    wgtrain::plot::plot_run_curves(&out, &curves, &title)?;
    println!(
        "wrote accuracy.png, accuracy.svg, loss.png, loss.svg in {}",
        out.display()
    );
    Ok(())
}

fn table(runs: &[PathBuf]) -> Result<()> {
    let (records, unfinished) = report::read_finished(runs)?;
    for dir in &unfinished {
        eprintln!(
            "note: {} left out: the run has not finished (no summary.json; `wgtrain train --resume {}` finishes it)",
            dir.display(),
            dir.display()
        );
    }
    if records.is_empty() {
        bail!("no finished run among the {} given", runs.len());
    }
    report::check_experiments(&records)?;
    print!("{}", report::markdown_table(&records));
    Ok(())
}
