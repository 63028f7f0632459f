//! The sweep scheduler: which of a sweep's runs still need training, how they form packs (on a
//! GPU, a pack's seats train in the same dispatches; on the CPU, a pack's runs train at once on
//! a share of the cores each), halving a GPU pack that does not fit, and the memory check of a
//! CPU pack. It reports through a
//! [`SweepObserver`] and prints nothing; the CLI draws the progress.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::pack::{gpu_seats, max_pack, pack_groups, train_pack};
use super::run::{SweepRun, is_finished_as, resumable_epochs, runs_text};
use crate::device::EngineKind;
use crate::error::{Error, Result};
use crate::metrics::Summary;
use crate::run::{DatasetCache, RunOptions, run_training};
use crate::train::{EpochRecord, TrainError, Verdict};

/// Most runs a GPU pack takes when `pack` is not given (and the adapter allows more).
pub const MAX_AUTO_PACK: usize = 32;

/// Where and how a sweep's runs train.
#[derive(Clone)]
pub struct SweepOptions {
    /// The sweep's output directory (one run directory per run inside).
    pub out: PathBuf,
    /// The dataset directory ([`super::prepare_out`]'s answer).
    pub data_dir: PathBuf,
    pub engine: EngineKind,
    /// At most this many runs in a pack (GPU pack size, or CPU runs at once); `Some(1)`:
    /// one at a time. `None`: as many as fit (GPU) or one per core (CPU).
    pub pack: Option<usize>,
    /// CPU threads in all (0: one per core).
    pub threads: usize,
    /// Set (by Ctrl-C, say) to stop after the epochs in progress, starting no new run.
    pub interrupt: Arc<AtomicBool>,
    /// Stop every run after this epoch, saved to go on (a pruning rung); `None`: to the end.
    pub stop_after: Option<usize>,
}

/// What a sweep reports as it goes; every method has a do-nothing default.
pub trait SweepObserver: Sync {
    /// A run that finished earlier (with this config) is skipped.
    fn skipped(&self, _n: usize, _of: usize, _run: &SweepRun) {}
    /// A run stopped mid-way goes on from the epochs it holds.
    fn going_on(&self, _n: usize, _of: usize, _run: &SweepRun, _epochs: usize) {}
    /// A pack that did not fit is split in two.
    fn halved(&self, _runs: usize, _first: usize, _second: usize, _why: &str) {}
    /// A pack of runs starts (`label` says how), `runs` their order.
    fn pack_started(&self, _label: &str, _runs: &[&SweepRun]) {}
    /// A run starts on its own (the `n`th of `of` to train).
    fn alone(&self, _n: usize, _of: usize, _run: &SweepRun) {}
    /// A run finished an epoch.
    fn epoch(&self, _run: &SweepRun, _record: &EpochRecord, _verdict: Verdict) {}
    /// A run ended (the `n`th of `of` to train), as it ended.
    fn ended(&self, _n: usize, _of: usize, _run: &SweepRun, _outcome: &Result<Summary>) {}
    /// A pack started with [`SweepObserver::pack_started`] has ended.
    fn pack_ended(&self) {}
    /// A pruning sweep waits for `short` runs (other shards') to reach the rung of `epoch`.
    fn waiting(&self, _short: usize, _epoch: usize) {}
    /// A pruning sweep trains `runs` runs of other shards to the rung of `epoch`: no process
    /// was training them.
    fn taking_over(&self, _runs: usize, _epoch: usize) {}
    /// The rung of `epoch` has pruned these settings.
    fn rung(&self, _epoch: usize, _pruned: &[String]) {}
}

/// Counts of a sweep's runs by how they ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepTally {
    pub trained: usize,
    pub skipped: usize,
    pub diverged: usize,
    /// Runs an interruption stopped after an epoch, saved to go on from.
    pub interrupted: usize,
    /// Runs another process was training (the same sweep started twice): left to it.
    pub in_use: usize,
    /// Runs stopped at a pruning rung, saved to go on (see `sweep::prune`).
    pub paused: usize,
    /// Runs a pruning rung stopped for good.
    pub pruned: usize,
}

impl SweepTally {
    /// The sweep's closing line before the results: what it trained, skipped, lost, left to
    /// others and pruned.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "trained {}, skipped {} finished, {} diverged",
            self.trained, self.skipped, self.diverged
        );
        if self.pruned > 0 {
            text.push_str(&format!(", {} pruned", self.pruned));
        }
        if self.in_use > 0 {
            text.push_str(&format!(", {} left to another process", self.in_use));
        }
        text
    }

    /// Adds what one stage of a pruning sweep trained (runs paused at its rung are counted
    /// by the caller, which knows whether they were interrupted).
    pub(super) fn add_stage(&mut self, stage: &SweepTally) {
        self.trained += stage.trained;
        self.diverged += stage.diverged;
        self.interrupted += stage.interrupted;
        self.in_use += stage.in_use;
    }

    /// Counts a run's outcome; an error other than divergence, interruption or a run in use
    /// ends the sweep.
    fn add(&mut self, run: &SweepRun, outcome: Result<Summary>) -> Result<()> {
        match outcome {
            Ok(_) => self.trained += 1,
            Err(Error::Train(TrainError::Diverged { .. })) => self.diverged += 1,
            Err(Error::Interrupted { .. }) => self.interrupted += 1,
            Err(Error::RunInUse { .. }) => self.in_use += 1,
            Err(Error::Paused { .. }) => self.paused += 1,
            Err(e) => {
                return Err(Error::SweepRun {
                    id: run.id.clone(),
                    source: Box::new(e),
                });
            }
        }
        Ok(())
    }
}

/// How many runs train side by side on the CPU (`None`: one at a time, as `train` would,
/// with every thread).
fn pack_size_on_cpu(engine: &EngineKind, pack: Option<usize>, cores: usize) -> Option<usize> {
    match (engine, pack) {
        (EngineKind::Cpu { .. }, Some(1))
        | (EngineKind::Gpu { .. } | EngineKind::GpuSeat { .. }, _) => None,
        (EngineKind::Cpu { .. }, pack) => Some(pack.unwrap_or(cores).max(1)).filter(|&k| k > 1),
    }
}

/// Trains every run of `runs` (this shard's, in sweep order) that has not finished, as
/// `opts` says, and counts how each ended.
pub fn train_runs(
    runs: &[&SweepRun],
    opts: &SweepOptions,
    observer: &dyn SweepObserver,
) -> Result<SweepTally> {
    let mut tally = SweepTally::default();
    let datasets = Arc::new(Mutex::new(DatasetCache::new()));
    let (todo, from_epoch) = runs_to_train(runs, opts, observer, &mut tally)?;
    let resumed: Vec<&str> = from_epoch.keys().copied().collect();
    // On a GPU, runs of one shape train packed in the same dispatches; on the CPU, runs train
    // side by side on a share of the cores each (one thread each unless `pack` says fewer
    // runs), which beats one run on every core at small batches. `pack` 1: one at a time.
    let cores = crate::host::resolve_threads(opts.threads);
    let cpu_pack = pack_size_on_cpu(&opts.engine, opts.pack, cores);
    let mut packs = packs_of(&todo, &from_epoch, opts, cpu_pack);
    // A rerun with nothing left to train has no queue to announce.
    packs.retain(|p| !p.is_empty());
    let total = todo.len();
    let mut done = 0;
    let mut queue: VecDeque<Vec<&SweepRun>> = packs.into();
    while let Some(pack) = queue.pop_front() {
        if opts.interrupt.load(Ordering::SeqCst) {
            break;
        }
        if pack.len() > 1 || cpu_pack.is_some() {
            let (engines, label) = match &opts.engine {
                EngineKind::Gpu { context } => match gpu_seats(context, &pack, &opts.data_dir) {
                    Ok(seats) => (
                        seats,
                        format!("pack of {} runs on {}", pack.len(), context.describe()),
                    ),
                    // The limits bound a pack by its largest buffer, not by the device's
                    // total memory: when the pack does not fit, train it as two halves.
                    Err(e @ crate::gpu::GpuError::OutOfMemory { .. }) if pack.len() > 1 => {
                        let (first, second) = pack.split_at(pack.len() / 2);
                        observer.halved(pack.len(), first.len(), second.len(), &e.to_string());
                        queue.push_front(second.to_vec());
                        queue.push_front(first.to_vec());
                        continue;
                    }
                    Err(e) => return Err(crate::engine::EngineError::Gpu(e).into()),
                },
                _ => cpu_engines(&pack, cpu_pack.unwrap_or(1), cores, &opts.data_dir)?,
            };
            observer.pack_started(&label, &pack);
            let finished = AtomicUsize::new(done);
            let results = train_pack(
                &pack,
                engines,
                &opts.out,
                &opts.data_dir,
                &datasets,
                &resumed,
                Some(Arc::clone(&opts.interrupt)),
                opts.stop_after,
                |run, record, verdict| observer.epoch(run, record, verdict),
                |run, outcome| {
                    let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                    observer.ended(n, total, run, outcome);
                },
            )?;
            observer.pack_ended();
            for r in results {
                tally.add(r.run, r.outcome)?;
            }
        } else {
            let run = pack[0];
            let from = resumed.contains(&run.id.as_str());
            let outcome = train_alone(run, from, opts, &datasets, observer, (done + 1, total))?;
            tally.add(run, outcome)?;
        }
        done += pack.len();
    }
    Ok(tally)
}

/// The runs of `runs` left to train, and the epochs each run a stopped sweep left mid-way
/// has done (it goes on from there, as `train --resume` would, to the same bits, rather than
/// from the start; GPU packs group runs by it). Finished runs are tallied as skipped.
fn runs_to_train<'a>(
    runs: &[&'a SweepRun],
    opts: &SweepOptions,
    observer: &dyn SweepObserver,
    tally: &mut SweepTally,
) -> Result<(Vec<&'a SweepRun>, HashMap<&'a str, usize>)> {
    let (mut todo, mut from_epoch) = (Vec::new(), HashMap::new());
    for (n, run) in runs.iter().enumerate() {
        let dir = opts.out.join(&run.id);
        if is_finished_as(&dir, &run.config)? {
            tally.skipped += 1;
            observer.skipped(n + 1, runs.len(), run);
        } else {
            if let Some(epochs) = resumable_epochs(&dir, &run.config) {
                observer.going_on(n + 1, runs.len(), run, epochs);
                from_epoch.insert(run.id.as_str(), epochs);
            }
            todo.push(*run);
        }
    }
    Ok((todo, from_epoch))
}

/// `todo` in the packs they train in: on a GPU, runs of one shape at the same epoch, as many
/// as fit; on the CPU one queue that `cpu_pack` workers drain; else one at a time.
fn packs_of<'a>(
    todo: &[&'a SweepRun],
    from_epoch: &HashMap<&str, usize>,
    opts: &SweepOptions,
    cpu_pack: Option<usize>,
) -> Vec<Vec<&'a SweepRun>> {
    match (&opts.engine, opts.pack) {
        (_, Some(1)) => todo.iter().map(|&r| vec![r]).collect(),
        // Packed models share their step count, so runs pack with runs at the same epoch:
        // fresh ones together, and runs going on from a checkpoint with those going on from
        // the same epoch (a pruning rung's survivors; the same bits as alone: packing
        // changes no arithmetic).
        (EngineKind::Gpu { context }, pack) => {
            let mut by_epoch: std::collections::BTreeMap<usize, Vec<&SweepRun>> =
                Default::default();
            for &r in todo {
                let epochs = from_epoch.get(r.id.as_str()).copied().unwrap_or(0);
                by_epoch.entry(epochs).or_default().push(r);
            }
            by_epoch
                .values()
                .flat_map(|group| {
                    pack_groups(group, |r| {
                        let fits = max_pack(context, &r.config, &opts.data_dir, MAX_AUTO_PACK);
                        pack.map_or(fits, |k| k.min(fits))
                    })
                })
                .collect()
        }
        // On the CPU all runs form one queue that `cpu_pack` workers drain.
        (_, _) if cpu_pack.is_some() => vec![todo.to_vec()],
        (_, _) => todo.iter().map(|&r| vec![r]).collect(),
    }
}

/// Trains `run` alone into its directory (going on from its checkpoint when `resume`), as
/// run `n` of `total`.
fn train_alone(
    run: &SweepRun,
    resume: bool,
    opts: &SweepOptions,
    datasets: &Arc<Mutex<DatasetCache>>,
    observer: &dyn SweepObserver,
    (n, total): (usize, usize),
) -> Result<Result<crate::metrics::Summary>> {
    let dir = opts.out.join(&run.id);
    // An unfinished directory is this sweep's own interrupted run: go on from its checkpoint
    // where it is one of this config, else train it over.
    let run_opts = RunOptions {
        out: dir.clone(),
        force: true,
        data_dir: Some(opts.data_dir.clone()),
        engine: opts.engine.clone(),
        resume,
        interrupt: Some(Arc::clone(&opts.interrupt)),
        datasets: Some(Arc::clone(datasets)),
        stop_after: opts.stop_after,
    };
    crate::error::ensure_dir(&dir, "run directory")?;
    run.write_tag(&dir)?;
    observer.alone(n, total, run);
    let outcome = run_training(&run.config, &run_opts, |r, v| observer.epoch(run, r, v));
    observer.ended(n, total, run, &outcome);
    Ok(outcome)
}

/// The engines of up to `workers` CPU workers sharing `cores` for `pack`, and the pack's
/// label. A pack of fewer runs than workers (a pruning rung's last survivors) shares the
/// cores among the runs it has, so no core idles; the CPU path's sums do not depend on its
/// threads, so a run's bits do not depend on its share.
fn cpu_engines(
    pack: &[&SweepRun],
    workers: usize,
    cores: usize,
    data_dir: &std::path::Path,
) -> Result<(Vec<EngineKind>, String)> {
    let side_by_side = workers.min(pack.len()).max(1);
    let threads = (cores / side_by_side).max(1);
    check_cpu_pack_memory(pack, side_by_side, threads, data_dir)?;
    let threads_text = format!("{threads} thread{}", if threads == 1 { "" } else { "s" });
    let label = match side_by_side {
        1 => format!(
            "{}, one at a time on the CPU, {threads_text}",
            runs_text(pack.len())
        ),
        n => format!(
            "{}, {n} at a time side by side on the CPU, {threads_text} each",
            runs_text(pack.len())
        ),
    };
    Ok((vec![EngineKind::Cpu { threads }; side_by_side], label))
}

/// Fails when `workers` runs of `pack` side by side (`threads` each) would need more memory
/// than is available: each run checks alone as it starts, but side by side they start at once.
fn check_cpu_pack_memory(
    pack: &[&SweepRun],
    workers: usize,
    threads: usize,
    data_dir: &std::path::Path,
) -> Result<()> {
    let side_by_side = workers.min(pack.len()) as u128;
    let cpu = EngineKind::Cpu { threads };
    let needed = pack
        .iter()
        .filter_map(|r| {
            let model = crate::run::declared_model(&r.config, data_dir)?;
            Some(cpu.memory_needed(&model, r.config.batch_size))
        })
        .max()
        .unwrap_or(0)
        .saturating_mul(side_by_side);
    match crate::host::available_memory_bytes() {
        Some(free) if side_by_side > 1 && needed > u128::from(free) => Err(Error::Usage(format!(
            "{side_by_side} runs side by side need at least {:.1} GB of memory, and {:.1} GB is available (hint: --pack 1 trains one at a time)",
            needed as f64 / 1e9,
            free as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}
