//! Pruning: synchronous successive halving over a sweep's settings. A sweep file's
//! `[prune]` gives the first rung (`min_epochs`), every run's epochs (`max_epochs`) and the
//! reduction factor `eta` (3 unless given); the rungs are min_epochs · eta^k below
//! max_epochs. Every run trains to a rung and stops there, saved; then each setting still in
//! the contest is scored by the mean, over its seeds, of the best validation loss up to the
//! rung, and only the best 1/eta (at least one) go on to the next rung, the rest marked
//! `pruned` with the epoch they reached. The survivors of the last rung train to the end.
//!
//! Hyperband (`brackets = K`): the settings are dealt among K brackets, each successive
//! halving of its own over its share, bracket b starting at min_epochs · eta^b (so the last
//! may train every setting of its share to the end). Bracket b's rungs are rungs of bracket 0,
//! so the stages stay bracket 0's: at each rung every run reaches it, and each bracket that
//! judges there judges its own settings only. Shares follow Hyperband's eta^s / (s + 1) for
//! a bracket of s rungs, dealt in turn (a smooth weighted round robin), so a grid's neighbours
//! land in different brackets.
//!
//! Decisions are made from what the run directories hold (metrics.csv cut at the rung,
//! summary.json), never from timing or order, so a rerun, a sweep resumed after Ctrl-C and a
//! sweep split into shards reach the same ones: a shard trains its own runs to a rung, then
//! waits until every run of the sweep has reached it (or ended), and every shard decides
//! alike and marks its own runs.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::run::{SweepRun, resumable_epochs};
use super::rungs::Prune;
use super::schedule::{SweepObserver, SweepOptions, SweepTally, train_runs};
use crate::error::Result;
use crate::metrics::Summary;
use crate::rundir::RunDir;

pub use crate::metrics::PRUNED;

/// Trains `mine` (this shard's runs of `all`, in sweep order) through `prune`'s rungs and then
/// to the end, as [`train_runs`] trains, and counts how each ended.
pub fn train_pruned(
    all: &[SweepRun],
    mine: &[&SweepRun],
    prune: &Prune,
    opts: &SweepOptions,
    observer: &dyn SweepObserver,
) -> Result<SweepTally> {
    let mut tally = SweepTally::default();
    let dir = |run: &SweepRun| opts.out.join(&run.id);
    let interrupted = || opts.interrupt.load(Ordering::SeqCst);
    // Runs that ended before this call (a rerun's) are skipped, not counted pruned again.
    let mut ended_before: Vec<&str> = Vec::new();
    for (n, run) in mine.iter().enumerate() {
        if RunDir::new(dir(run)).is_finished() {
            tally.skipped += 1;
            ended_before.push(&run.id);
            observer.skipped(n + 1, mine.len(), run);
        }
    }
    let stages = prune.rungs().into_iter().map(Some).chain([None]);
    for rung in stages {
        // This shard's runs still going and short of the rung train up to it.
        let live: Vec<&SweepRun> = mine
            .iter()
            .copied()
            .filter(|r| short_of(r, &opts.out, rung))
            .collect();
        let stage = SweepOptions {
            stop_after: rung,
            ..opts.clone()
        };
        let t = train_runs(&live, &stage, observer)?;
        tally.add_stage(&t);
        let Some(rung) = rung else { break };
        if interrupted() {
            tally.interrupted += t.paused;
            break;
        }
        if !wait_for_rung(all, rung, &stage, observer, &mut tally)? {
            break;
        }
        let pruned = decide(all, rung, prune, &opts.out)?;
        // Every run of a pruned setting is marked, other shards' too: a shard that trains
        // others' runs to a later rung must find these ended, whether or not their own
        // shard has started (it decides alike and finds them marked).
        for run in all.iter().filter(|r| pruned.contains(&r.setting)) {
            mark_pruned(run, &dir(run), rung, &opts.engine)?;
        }
        tally.pruned += mine
            .iter()
            .filter(|r| pruned.contains(&r.setting) && !ended_before.contains(&r.id.as_str()))
            .filter(|r| {
                RunDir::new(dir(r))
                    .read_summary()
                    .is_ok_and(|s| s.status == PRUNED && s.epochs_run == rung)
            })
            .count();
        observer.rung(rung, &pruned);
    }
    Ok(tally)
}

/// Whether `run` (its directory under `out`) is still going and short of the rung of epoch
/// `rung` (`None`: the end).
fn short_of(run: &SweepRun, out: &Path, rung: Option<usize>) -> bool {
    let dir = out.join(&run.id);
    !RunDir::new(&dir).is_finished()
        && rung.is_none_or(|e| resumable_epochs(&dir, &run.config).unwrap_or(0) < e)
}

/// Waits until every run of the sweep has reached `rung` or ended, while other shards train
/// theirs. Runs short of the rung that no process is training (their shard has not started,
/// as in a Slurm array throttled below its size or a cluster short of slots, or it died)
/// this process trains to the rung itself (`stage` stops there): a shard never waits for one
/// that cannot start until it does, and whoever trains a run, it trains to the same numbers.
/// `false`: interrupted.
fn wait_for_rung(
    all: &[SweepRun],
    rung: usize,
    stage: &SweepOptions,
    observer: &dyn SweepObserver,
    tally: &mut SweepTally,
) -> Result<bool> {
    let mut told = false;
    loop {
        let short: Vec<&SweepRun> = all
            .iter()
            .filter(|r| short_of(r, &stage.out, Some(rung)))
            .collect();
        if short.is_empty() {
            return Ok(true);
        }
        if stage.interrupt.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let idle: Vec<&SweepRun> = short
            .iter()
            .copied()
            .filter(|r| !RunDir::new(stage.out.join(&r.id)).in_use())
            .collect();
        if !idle.is_empty() {
            observer.taking_over(idle.len(), rung);
            tally.add_stage(&train_runs(&idle, stage, observer)?);
            continue;
        }
        if !told {
            observer.waiting(short.len(), rung);
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The settings rung `rung` prunes, from the runs' directories: of the settings still in
/// the contest (none pruned at an earlier rung, and not every run ended by the rung), all but
/// the best 1/eta (at least one) by the mean over their runs of the best validation loss up
/// to the rung; ties go to the setting earlier in the sweep. With Hyperband's brackets, each
/// bracket that judges at `rung` does so among its own settings.
pub fn decide(all: &[SweepRun], rung: usize, prune: &Prune, out: &Path) -> Result<Vec<String>> {
    let mut pruned = Vec::new();
    // Each bracket that judges at this rung judges its own settings.
    for b in (0..prune.brackets.max(1)).filter(|&b| prune.bracket(b).rungs().contains(&rung)) {
        let members: Vec<&SweepRun> = all.iter().filter(|r| r.bracket == b).collect();
        pruned.extend(decide_among(&members, rung, prune.eta, out)?);
    }
    Ok(pruned)
}

/// [`decide`] within one bracket.
fn decide_among(runs: &[&SweepRun], rung: usize, eta: usize, out: &Path) -> Result<Vec<String>> {
    // (setting, its runs' best validation loss up to the rung, whether every run had ended).
    let mut settings: Vec<(&str, Vec<f64>, bool)> = Vec::new();
    let mut out_of_contest: Vec<&str> = Vec::new();
    for run in runs {
        let dir = RunDir::new(out.join(&run.id));
        let summary = Summary::read(&dir.summary()).ok();
        if summary
            .as_ref()
            .is_some_and(|s| s.status == PRUNED && s.epochs_run < rung)
        {
            out_of_contest.push(&run.setting);
        }
        let ended = summary
            .as_ref()
            .is_some_and(|s| s.status != PRUNED && s.epochs_run <= rung);
        let records = dir.read_metrics(usize::MAX).unwrap_or_default();
        let best = records
            .iter()
            .filter(|e| e.epoch <= rung && e.val_loss.is_finite())
            .map(|e| e.val_loss)
            .fold(f64::INFINITY, f64::min);
        match settings.iter_mut().find(|s| s.0 == run.setting) {
            Some(s) => {
                s.1.push(best);
                s.2 &= ended;
            }
            None => settings.push((&run.setting, vec![best], ended)),
        }
    }
    let mut contest: Vec<(usize, &str, f64)> = settings
        .iter()
        .enumerate()
        .filter(|(_, (name, _, ended))| !ended && !out_of_contest.contains(name))
        .map(|(i, (name, losses, _))| (i, *name, losses.iter().sum::<f64>() / losses.len() as f64))
        .collect();
    contest.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    let keep = (contest.len() / eta.max(2)).max(1);
    Ok(contest
        .iter()
        .skip(keep)
        .map(|(_, name, _)| name.to_string())
        .collect())
}

/// Marks the run in `dir` pruned at `rung` (a summary.json with status `pruned`, the best
/// validation loss and epoch it reached, and no test figures: a pruned run is never
/// evaluated). A run that has ended already (finished, or marked by another shard) is left
/// as it is.
fn mark_pruned(
    run: &SweepRun,
    dir: &Path,
    rung: usize,
    engine: &crate::device::EngineKind,
) -> Result<()> {
    let run_dir = RunDir::new(dir);
    if run_dir.is_finished() {
        return Ok(());
    }
    let records = run_dir.read_metrics(rung)?;
    let best = records
        .iter()
        .filter(|e| e.val_loss.is_finite())
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
    let summary = Summary {
        name: run.config.name.clone(),
        status: PRUNED.into(),
        test_accuracy: f64::NAN,
        test_loss: f64::NAN,
        best_epoch: best.map_or(0, |e| e.epoch),
        best_val_loss: best.map(|e| e.val_loss),
        epochs_run: records.len(),
        stopped_early: true,
        diverged: false,
        device: engine.device_name().into(),
        device_detail: format!("pruned at the rung of epoch {rung}"),
        adapter: None,
        backend: None,
        adapter_index: None,
        adapter_pci_bus_id: None,
        adapter_chosen_by: None,
        seed: run.seed,
        seconds: records.iter().map(|e| e.seconds).sum(),
        error: None,
        warning: None,
        legs: Vec::new(),
    };
    summary.write(&run_dir.summary())?;
    Ok(())
}
