//! `wgtrain tune`: every kernel arrangement timed on one adapter; the fastest is kept for it in
//! the tuning file, which every later GPU run on that adapter starts from.

use anyhow::{Context, Result, bail};
use wgtrain::gpu::GpuContext;

use super::args::TuneArgs;
use wgtrain::gpu::{TuningFile, tuning::TUNING_FILE_VAR};

pub(super) fn tune(args: TuneArgs) -> Result<()> {
    let TuneArgs {
        config: config_args,
        batch_size,
        rounds,
        warmup,
        epochs,
        dry_run,
        gpu,
    } = args;
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut config = config_args.load()?;
    if let Some(b) = batch_size {
        if b == 0 {
            bail!("--batch-size must be at least 1");
        }
        config.batch_size = b;
    }
    // The file is read before the long part, so that a bad one fails first.
    let path = TuningFile::path();
    let mut file = match &path {
        Some(p) => TuningFile::load(p)?,
        None if dry_run => TuningFile::default(),
        None => bail!(
            "no tuning file to write: {TUNING_FILE_VAR} is empty and no cache directory is known \
             (hint: set {TUNING_FILE_VAR}=PATH, or pass --dry-run)"
        ),
    };
    let context = pollster::block_on(GpuContext::open(&gpu.choice(true))).context("tune")?;
    let decision = wgtrain::tune::tune_config(
        &context,
        &config,
        &config_args.data_dir(),
        rounds,
        warmup,
        epochs,
        |train_rows, arrangements| {
            let plan = (rounds, warmup, epochs);
            let workload = (train_rows, arrangements);
            println!(
                "{}",
                wgtrain::tune::workload(&config, &context, workload, plan)
            )
        },
        |round, t, secs| eprintln!("round {round}: {} {secs:.4} s/epoch", t.label()),
    )?;
    print!("{}", decision.table());
    let (chosen, verdict) = (decision.chosen, decision.verdict());
    let measured = decision.measured(&config, rounds);
    match path {
        Some(path) if !dry_run => {
            file.record(&context.info, chosen, measured);
            file.save(&path)?;
            println!(
                "keeping {verdict} — saved for {} in {} (GPU runs on this adapter now start from \
                 it; WGTRAIN_* variables still override it)",
                context.describe(),
                path.display()
            );
        }
        _ => println!("would keep {verdict} (not saved: --dry-run)"),
    }
    Ok(())
}
