//! `wgtrain sweep`: which runs train together (GPU packs, CPU runs side by side), training
//! them, and one line per finished run.

use super::progress::{EpochProgress, epoch_bar};
use super::*;

pub(super) fn sweep(args: SweepArgs) -> Result<()> {
    use wgtrain::sweep::{self, Shard};
    if let Some(SweepAction::Report { dir }) = &args.action {
        let n = sweep::report(dir)?;
        println!(
            "{n} finished runs → {} and {}",
            dir.join("results.csv").display(),
            dir.join("results.md").display()
        );
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
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "sweep-{}",
            file.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep")
        ))
    });
    let mine: Vec<(usize, &sweep::SweepRun)> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.takes(*i))
        .collect();
    println!(
        "sweep {}: {} runs, this process takes {} (shard {}/{}) → {}",
        file.display(),
        runs.len(),
        mine.len(),
        shard.index,
        shard.count,
        out.display()
    );
    let engine = engine_kind(&args.on)?;
    let mine_runs: Vec<&sweep::SweepRun> = mine.iter().map(|(_, r)| *r).collect();
    let data_dir = sweep::prepare_out(&out, args.data.clone(), &mine_runs)?;
    let mut tally = SweepTally::default();
    let datasets = Arc::new(std::sync::Mutex::new(wgtrain::run::DatasetCache::new()));
    let mut todo = Vec::new();
    // Runs that a stopped sweep left mid-way go on from their last epoch (as `train
    // --resume` would, to the same bits) rather than from the start.
    let mut resumed = Vec::new();
    for (n, (_, run)) in mine.iter().enumerate() {
        let dir = out.join(&run.id);
        if sweep::is_finished_as(&dir, &run.config)? {
            tally.skipped += 1;
            println!(
                "[{}/{}] {}: finished earlier, skipped",
                n + 1,
                mine.len(),
                run.id
            );
        } else {
            if let Some(epochs) = sweep::resumable_epochs(&dir, &run.config) {
                println!(
                    "[{}/{}] {}: stopped after epoch {epochs}, going on from there",
                    n + 1,
                    mine.len(),
                    run.id
                );
                resumed.push(run.id.as_str());
            }
            todo.push(*run);
        }
    }
    let interrupt = interrupt_flag();
    // On a GPU, runs of one shape train packed in the same dispatches; on the CPU, runs train
    // side by side on a share of the cores each (one thread each unless --pack says fewer
    // runs), which beats one run on every core at small batches. --pack 1: one at a time.
    let cores = wgtrain::cpu::resolve_threads(args.on.threads);
    // Every CPU run of a sweep gets the same share of the cores, however many runs are left:
    // CPU results repeat bit for bit only for one thread count, and a shard must give what
    // the unsharded sweep gives.
    let cpu_pack = pack_size_on_cpu(&engine, args.pack, cores);
    let mut packs: Vec<Vec<&sweep::SweepRun>> = match (&engine, args.pack) {
        (_, Some(1)) => todo.iter().map(|&r| vec![r]).collect(),
        // Packed models share their step count, so a run going on from a checkpoint trains
        // alone (the same bits as packed: packing changes no arithmetic).
        (EngineKind::Gpu { context }, pack) => {
            let (going_on, fresh): (Vec<_>, Vec<_>) = todo
                .iter()
                .copied()
                .partition(|r| resumed.contains(&r.id.as_str()));
            let mut packs = sweep::pack_groups(&fresh, |r| {
                let fits = wgtrain::gpu::PackedModels::max_models(
                    context,
                    &r.config.layers,
                    r.config.batch_size,
                    MAX_AUTO_PACK,
                );
                pack.map_or(fits, |k| k.min(fits))
            });
            packs.extend(going_on.into_iter().map(|r| vec![r]));
            packs
        }
        // On the CPU all runs form one queue that `cpu_pack` workers drain.
        (_, _) if cpu_pack.is_some() => vec![todo.clone()],
        (_, _) => todo.iter().map(|&r| vec![r]).collect(),
    };
    // A rerun with nothing left to train has no queue to announce.
    packs.retain(|p| !p.is_empty());
    let total = todo.len();
    let mut done = 0;
    let mut queue: std::collections::VecDeque<Vec<&sweep::SweepRun>> = packs.into();
    while let Some(pack) = queue.pop_front() {
        if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        match &pack[..] {
            runs if runs.len() > 1 || cpu_pack.is_some() => {
                let (engines, label) = match &engine {
                    EngineKind::Gpu { context } => match sweep::gpu_seats(context, runs) {
                        Ok(seats) => (
                            seats,
                            format!("pack of {} runs on {}", runs.len(), context.info.name),
                        ),
                        // The limits bound a pack by its largest buffer, not by the device's
                        // total memory: when the pack does not fit, train it as two halves.
                        Err(e @ wgtrain::gpu::GpuError::OutOfMemory { .. }) if runs.len() > 1 => {
                            let (first, second) = runs.split_at(runs.len() / 2);
                            eprintln!(
                                "note: a pack of {} runs does not fit ({e}); packing {} and {}",
                                runs.len(),
                                first.len(),
                                second.len()
                            );
                            queue.push_front(second.to_vec());
                            queue.push_front(first.to_vec());
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    },
                    _ => {
                        let workers = cpu_pack.unwrap_or(1);
                        let threads = (cores / workers).max(1);
                        // Each run checks free memory as it starts, but side by side they
                        // start at once: check what they hold together.
                        let side_by_side = workers.min(runs.len()) as u128;
                        let needed = runs
                            .iter()
                            .map(|r| EngineKind::Cpu { threads }.memory_needed(&r.config.layers))
                            .max()
                            .unwrap_or(0)
                            .saturating_mul(side_by_side);
                        if let Some(free) = wgtrain::cpu::available_memory_bytes()
                            && side_by_side > 1
                            && needed > u128::from(free)
                        {
                            bail!(
                                "{side_by_side} runs side by side need at least {:.1} GB of memory, and {:.1} GB is available (hint: --pack 1 trains one at a time)",
                                needed as f64 / 1e9,
                                free as f64 / 1e9
                            );
                        }
                        (
                            vec![EngineKind::Cpu { threads }; workers.min(runs.len())],
                            format!(
                                "{} runs, {workers} at a time side by side on the CPU, {threads} thread{} each",
                                runs.len(),
                                if threads == 1 { "" } else { "s" }
                            ),
                        )
                    }
                };
                println!("{label}: {}", listed(runs.iter().map(|r| r.id.as_str())));
                let finished = std::sync::atomic::AtomicUsize::new(done);
                // On a terminal, one bar for the pack: the furthest epoch any run has reached.
                let epochs = runs.iter().map(|r| r.config.epochs).max().unwrap_or(0);
                let bar = match engine {
                    EngineKind::Gpu { .. } => epoch_bar("pack", epochs),
                    _ => None,
                };
                let results = sweep::train_together(
                    runs,
                    engines,
                    &out,
                    &data_dir,
                    &datasets,
                    &resumed,
                    Some(Arc::clone(&interrupt)),
                    |_, record| {
                        if let Some(bar) = &bar
                            && record.epoch as u64 > bar.position()
                        {
                            bar.set_position(record.epoch as u64);
                        }
                    },
                    |run, outcome| {
                        let n = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        match &bar {
                            Some(bar) => bar.suspend(|| report_run(n, total, &run.id, outcome)),
                            None => report_run(n, total, &run.id, outcome),
                        }
                    },
                )?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                for r in results {
                    tally.add(&r.run.id, r.outcome)?;
                }
            }
            runs => {
                let run = runs[0];
                let dir = out.join(&run.id);
                // An unfinished directory is this sweep's own interrupted run: go on from its
                // checkpoint where it is one of this config, else train it over.
                let opts = RunOptions {
                    out: dir.clone(),
                    force: true,
                    data_dir: Some(data_dir.clone()),
                    engine: engine.clone(),
                    resume: resumed.contains(&run.id.as_str()),
                    interrupt: Some(Arc::clone(&interrupt)),
                    datasets: Some(Arc::clone(&datasets)),
                };
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                run.write_tag(&dir)?;
                // On a terminal, a live bar for the run in progress; in logs, one line per
                // finished run.
                use std::io::IsTerminal;
                let live = std::io::stderr().is_terminal();
                let display = EpochProgress::new(
                    &format!("[{}/{}] {}", done + 1, total, run.id),
                    run.config.epochs,
                    !live,
                );
                let outcome = run_training(&run.config, &opts, |r, v| display.epoch(r, v));
                display.finish();
                report_run(done + 1, total, &run.id, &outcome);
                tally.add(&run.id, outcome)?;
            }
        }
        done += pack.len();
    }
    let (trained, skipped, diverged) = (tally.trained, tally.skipped, tally.diverged);
    let finished = sweep::report(&out)?;
    let in_use = match tally.in_use {
        0 => String::new(),
        n => format!(", {n} left to another process"),
    };
    println!(
        "trained {trained}, skipped {skipped} finished, {diverged} diverged{in_use}; {finished} finished runs in {} → results.csv, results.md",
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

/// How many runs a sweep trains side by side on the CPU (`None`: one at a time, as `train`
/// would, with every thread).
fn pack_size_on_cpu(engine: &EngineKind, pack: Option<usize>, cores: usize) -> Option<usize> {
    match (engine, pack) {
        (EngineKind::Cpu { .. }, Some(1))
        | (EngineKind::Gpu { .. } | EngineKind::GpuSeat { .. }, _) => None,
        (EngineKind::Cpu { .. }, pack) => Some(pack.unwrap_or(cores).max(1)).filter(|&k| k > 1),
    }
}

/// Most runs `sweep` packs together when --pack is not given (and the adapter allows more).
const MAX_AUTO_PACK: usize = 32;

/// Counts of a sweep's runs by how they ended.
#[derive(Default)]
struct SweepTally {
    trained: usize,
    skipped: usize,
    diverged: usize,
    /// Runs a Ctrl-C stopped after an epoch, saved to go on from.
    interrupted: usize,
    /// Runs another process was training (the same sweep started twice): left to it.
    in_use: usize,
}

impl SweepTally {
    /// Counts a run's outcome; an error other than divergence ends the sweep.
    fn add(&mut self, id: &str, outcome: wgtrain::Result<wgtrain::metrics::Summary>) -> Result<()> {
        match outcome {
            Ok(_) => self.trained += 1,
            Err(wgtrain::Error::Train(wgtrain::train::TrainError::Diverged { .. })) => {
                self.diverged += 1
            }
            Err(wgtrain::Error::Interrupted { .. }) => self.interrupted += 1,
            Err(wgtrain::Error::RunInUse { .. }) => self.in_use += 1,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("sweep run {id}"))),
        }
        Ok(())
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
