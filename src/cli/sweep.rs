//! `wgtrain sweep`: expands the sweep file, picks the shard, then prints what the library's
//! scheduler ([`wgtrain::sweep::train_runs`]) reports: a line per run, a live bar on a terminal.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use wgtrain::device::EngineKind;
use wgtrain::train::{EpochRecord, Verdict};

use super::args::{SweepAction, SweepArgs};
use super::device::{engine_kind, note_software_adapter};
use super::interrupt::interrupt_flag;
use super::progress::{EpochProgress, epoch_bar};

pub(super) fn sweep(args: SweepArgs) -> Result<()> {
    use wgtrain::sweep::{self, Shard};
    if let Some(SweepAction::Report { dir }) = &args.action {
        let (csv, md) = (dir.join("results.csv"), dir.join("results.md"));
        let reported = sweep::report(dir)?;
        println!("{reported} → {} and {}", csv.display(), md.display());
        return Ok(());
    }
    let file = args
        .file
        .as_deref()
        .context("wgtrain sweep needs a sweep FILE (or `sweep report DIR`)")?;
    if args.pack == Some(0) {
        bail!("--pack must be at least 1");
    }
    let runs = sweep::expand(file, &args.sets, args.max_runs)
        .with_context(|| format!("sweep {}", file.display()))?;
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)
            .with_context(|| format!("--shard {s:?}: expected I/N with 0 ≤ I < N"))?,
        None => Shard::from_env(args.shard_count)
            .context("sweep shard from the environment")?
            .unwrap_or(Shard::ALL),
    };
    let out = (args.out.clone()).unwrap_or_else(|| sweep::default_out(file));
    let plan = sweep::ShardPlan::new(&runs, shard);
    println!(
        "sweep {}: {} → {}",
        file.display(),
        plan.describe(),
        out.display()
    );
    let engine = engine_kind(&args.on)?;
    let data_dir = sweep::prepare_out(&out, args.data.clone(), &plan.may_train, plan.prune)?;
    if !plan.mine.is_empty() {
        let flops = sweep::most_flops(&plan.mine, &data_dir);
        note_software_adapter(&engine, plan.mine.len(), flops);
    }
    let interrupt = interrupt_flag();
    let options = sweep::SweepOptions {
        out: out.clone(),
        data_dir,
        engine,
        pack: args.pack,
        threads: args.on.threads,
        interrupt: Arc::clone(&interrupt),
        stop_after: None,
    };
    let printer = SweepPrinter {
        gpu: matches!(options.engine, EngineKind::Gpu { .. }),
        ..Default::default()
    };
    let tally = plan.train(&options, &printer)?;
    let reported = sweep::report(&out)?;
    println!(
        "{}; {reported} in {} → results.csv, results.md",
        tally.summary(),
        out.display()
    );
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(wgtrain::Error::SweepInterrupted {
            saved: tally.interrupted,
        }
        .into());
    }
    Ok(())
}

/// The first few of `ids`, and how many more: a queue of a thousand runs is one line a
/// person can read.
fn listed<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 8;
    let more = ids.len().saturating_sub(SHOWN);
    let mut text = ids.take(SHOWN).collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Prints a sweep's progress: a line per skipped, resumed and finished run; on a terminal a
/// live bar for the run in progress (or one for a GPU pack: the furthest epoch of its runs),
/// elsewhere a line per epoch of the run or of the pack.
#[derive(Default)]
struct SweepPrinter {
    gpu: bool,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
    /// A GPU pack's progress in a log: (epochs, the furthest epoch printed).
    pack_lines: std::sync::Mutex<Option<(usize, usize)>>,
    run: std::sync::Mutex<Option<EpochProgress>>,
}

impl wgtrain::sweep::SweepObserver for SweepPrinter {
    fn waiting(&self, short: usize, epoch: usize) {
        println!("rung at epoch {epoch}: waiting for {short} runs of other shards to reach it");
    }

    fn taking_over(&self, runs: usize, epoch: usize) {
        println!(
            "rung at epoch {epoch}: training {runs} runs of other shards to it (no process is training them)"
        );
    }

    fn rung(&self, epoch: usize, pruned: &[String]) {
        match pruned.len() {
            0 => println!("rung at epoch {epoch}: every setting goes on"),
            n => println!(
                "rung at epoch {epoch}: {n} setting{} pruned ({})",
                if n == 1 { "" } else { "s" },
                listed(pruned.iter().map(String::as_str))
            ),
        }
    }

    fn skipped(&self, n: usize, of: usize, run: &wgtrain::sweep::SweepRun) {
        println!("[{n}/{of}] {}: finished earlier, skipped", run.id);
    }

    fn going_on(&self, n: usize, of: usize, run: &wgtrain::sweep::SweepRun, epochs: usize) {
        println!(
            "[{n}/{of}] {}: stopped after epoch {epochs}, going on from there",
            run.id
        );
    }

    fn halved(&self, runs: usize, first: usize, second: usize, why: &str) {
        eprintln!("note: a pack of {runs} runs does not fit ({why}); packing {first} and {second}");
    }

    fn pack_started(&self, label: &str, runs: &[&wgtrain::sweep::SweepRun]) {
        println!("{label}: {}", listed(runs.iter().map(|r| r.id.as_str())));
        let epochs = runs.iter().map(|r| r.config.epochs).max().unwrap_or(0);
        if self.gpu
            && let Ok(mut bar) = self.bar.lock()
        {
            *bar = epoch_bar("pack", epochs);
            if bar.is_none()
                && let Ok(mut lines) = self.pack_lines.lock()
            {
                *lines = Some((epochs, 0));
            }
        }
    }

    fn alone(&self, n: usize, of: usize, run: &wgtrain::sweep::SweepRun) {
        // On a terminal, a live bar for the run in progress; in logs, one line per
        // finished run.
        use std::io::IsTerminal;
        let live = std::io::stderr().is_terminal();
        let display =
            EpochProgress::new(&format!("[{n}/{of}] {}", run.id), run.config.epochs, !live);
        if let Ok(mut slot) = self.run.lock() {
            *slot = Some(display);
        }
    }

    fn epoch(&self, _run: &wgtrain::sweep::SweepRun, record: &EpochRecord, verdict: Verdict) {
        if let Ok(slot) = self.run.lock()
            && let Some(display) = slot.as_ref()
        {
            display.epoch(record, verdict);
        }
        if let Ok(bar) = self.bar.lock()
            && let Some(bar) = bar.as_ref()
            && record.epoch as u64 > bar.position()
        {
            bar.set_position(record.epoch as u64);
        }
        // A pack's runs train the same epoch in the same dispatches: the first of them to
        // report an epoch stands for the pack.
        if let Ok(mut lines) = self.pack_lines.lock()
            && let Some((epochs, printed)) = lines.as_mut()
            && record.epoch > *printed
        {
            *printed = record.epoch;
            eprintln!(
                "pack epoch {:>3}/{epochs}  {:.1}s",
                record.epoch, record.seconds
            );
        }
    }

    fn ended(
        &self,
        n: usize,
        of: usize,
        run: &wgtrain::sweep::SweepRun,
        outcome: &wgtrain::Result<wgtrain::metrics::Summary>,
    ) {
        if let Ok(mut slot) = self.run.lock()
            && let Some(display) = slot.take()
        {
            display.finish();
        }
        match self.bar.lock().ok().as_deref().and_then(Option::as_ref) {
            Some(bar) => bar.suspend(|| report_run(n, of, &run.id, outcome)),
            None => report_run(n, of, &run.id, outcome),
        }
    }

    fn pack_ended(&self) {
        if let Ok(mut lines) = self.pack_lines.lock() {
            *lines = None;
        }
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// One line per finished run (a warning for a diverged one).
fn report_run(
    n: usize,
    total: usize,
    id: &str,
    outcome: &wgtrain::Result<wgtrain::metrics::Summary>,
) {
    match outcome {
        Ok(s) => {
            println!(
                "[{n}/{total}] {id}: test accuracy {:.2}%, test loss {:.4}, best epoch {} ({:.1}s)",
                100.0 * s.test_accuracy,
                s.test_loss,
                s.best_epoch,
                s.seconds
            );
            if let Some(warning) = &s.warning {
                eprintln!("warning: {id}: {warning}");
            }
        }
        Err(e @ wgtrain::Error::Train(wgtrain::train::TrainError::Diverged { .. })) => {
            eprintln!("warning: {id}: {e}")
        }
        Err(wgtrain::Error::RunInUse { .. }) => {
            println!("[{n}/{total}] {id}: another wgtrain process is training it, skipped")
        }
        Err(_) => {}
    }
}
