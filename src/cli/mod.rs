//! Command-line interface: the commands, each parsing its arguments (`args`) into library
//! types, validating them before any data is read, calling the library and printing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use wgtrain::data;
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
    // A WGTRAIN_CPU_KERNELS this CPU cannot honour is refused before any work, whatever the
    // command: the CPU path would otherwise fall back to its widest kernels without a word.
    wgtrain::cpu::CpuKernels::from_env()?;
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
        match json {
            true => println!("{}", p.json(&names)),
            false => println!("{}", p.text(&names)),
        }
        if let Some(warning) = &p.warning {
            eprintln!("warning: {}: {warning}", p.name());
        }
    }
    Ok(())
}

fn devices(backend: Option<&str>) -> Result<()> {
    print!(
        "{}",
        pollster::block_on(wgtrain::gpu::adapters_report(backend))?
    );
    Ok(())
}

fn check(all_adapters: bool, gpu: &GpuArgs) -> Result<()> {
    use wgtrain::check::{CheckTally, TABLE_HEAD, adapters_to_check, run_all};
    let contexts = adapters_to_check(all_adapters, &gpu.choice(true))?;
    let mut tally = CheckTally::default();
    println!("{TABLE_HEAD}");
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
            println!("{}", row.table_line(&ctx.describe()));
        }
    }
    if !tally.unrunnable.is_empty() {
        eprintln!("note: could not run on: {}", tally.unrunnable.join("; "));
    }
    println!("\n{}", tally.summary());
    Ok(tally.verdict()?)
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
    let (args, resume, on, quiet) = (&t.config, &t.resume, &t.on, t.quiet);
    // The config is validated before any device is opened or data read.
    let config = train_config(args, resume.as_deref())?;
    let engine = engine_kind(on)?;
    let out = (resume.clone().or(t.out.clone()))
        .unwrap_or_else(|| wgtrain::rundir::default_run_dir(&config.name));
    let opts = RunOptions {
        out: out.clone(),
        force: t.force,
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
    match json {
        true => println!("{}", report.json(model)),
        false => print!("{}", report.text(model)),
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
    println!(
        "gradient check: {} {}, {} training images, ε = {epsilon:e}, pass when |difference| ≤ ε² = {:e}",
        config.name,
        config.model_words(),
        report.samples,
        report.tolerance()
    );
    print!("{}", report.table());
    match report.verdict() {
        Ok(passed) => println!("{passed}"),
        Err(why) => bail!("{why}"),
    }
    Ok(())
}

fn plot(runs: &[PathBuf], out: Option<PathBuf>) -> Result<()> {
    let out = wgtrain::plot::plot_runs(runs, out)?;
    println!(
        "wrote accuracy.png, accuracy.svg, loss.png, loss.svg in {}",
        out.display()
    );
    Ok(())
}

fn table(runs: &[PathBuf]) -> Result<()> {
    let (records, unfinished) = report::read_finished(runs)?;
    for dir in &unfinished {
        eprintln!("note: {}", report::left_out_note(dir));
    }
    if records.is_empty() {
        bail!("no finished run among the {} given", runs.len());
    }
    report::check_experiments(&records)?;
    print!("{}", report::markdown_table(&records));
    Ok(())
}
