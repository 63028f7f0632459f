//! Packing a sweep's runs onto one GPU: which runs may share a pack, how a sweep splits into
//! packs, and training one pack (each run on its own thread, in its own run directory, through
//! its seat in a [`GpuPack`], or on a share of the CPU's cores).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::run::SweepRun;
use crate::config::TrainConfig;
use crate::device::EngineKind;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuPack};
use crate::metrics::Summary;
use crate::model::Network;
use crate::run::{DatasetCache, RunOptions, dataset_for, run_training};
use crate::train::{EpochRecord, Verdict};

/// What runs must share to train in one GPU pack: the network's shape, the step schedule
/// (batch size, gradient reduction, the split's size), the optimiser (Adam's bias correction
/// is one per step for the whole pack) and the data. Everything else — learning rate,
/// momentum, penalties, activation, seed, epochs, early stopping — is each run's own; but the
/// runs of a network of layers share their seed (a pack draws its dropout masks from one
/// seed, and sweeps keep to one rule for every network of layers).
pub fn pack_key(config: &TrainConfig) -> String {
    let adam = match config.optimizer {
        crate::config::Optimizer::Adam => format!("{}/{}", config.adam_beta1, config.adam_beta2),
        crate::config::Optimizer::Sgd => String::new(),
    };
    let model = match &config.network {
        None => format!("{:?}", config.layers),
        Some(network) => format!("{network:?} seed {}", config.seed),
    };
    format!(
        "{model} b{} {:?} v{} {:?}{adam}",
        config.batch_size, config.gradient, config.val_fraction, config.optimizer
    )
}

/// The model `config` trains on the data in `data_dir` (a network is planned on the images'
/// header), as a GPU pack needs it before any data is loaded.
fn pack_model(
    config: &TrainConfig,
    data_dir: &Path,
) -> std::result::Result<Arc<Network>, crate::gpu::GpuError> {
    match &config.network {
        None => Network::dense(&config.layers, config.activation)
            .map(Arc::new)
            .map_err(|message| crate::gpu::GpuError::Device {
                what: format!("planning {}'s layers", config.name),
                message,
            }),
        Some(_) => crate::run::declared_model(config, data_dir).ok_or_else(|| {
            crate::gpu::GpuError::Device {
                what: format!("planning {}'s network", config.name),
                message: "the training images' header does not give their size, or the network does not fit them".into(),
            }
        }),
    }
}

/// How many runs of `config` one GPU pack on `ctx` holds (the adapter's buffer limits), at
/// most `cap`.
pub fn max_pack(ctx: &GpuContext, config: &TrainConfig, data_dir: &Path, cap: usize) -> usize {
    match pack_model(config, data_dir) {
        Ok(net) => crate::gpu::GpuModels::max_models(ctx, &net, config.batch_size, cap),
        // A run that cannot be planned trains alone, to fail with its own error.
        Err(_) => 1,
    }
}

/// Splits `runs` into packs: runs with the same [`pack_key`] in sweep order, at most
/// `limit(run)` per pack (the first run of a pack decides). Packs come in the order of their
/// first run; a run that fits no pack is a pack of one.
pub fn pack_groups<'a>(
    runs: &[&'a SweepRun],
    mut limit: impl FnMut(&SweepRun) -> usize,
) -> Vec<Vec<&'a SweepRun>> {
    let mut keyed: Vec<(String, Vec<&'a SweepRun>)> = Vec::new();
    for &run in runs {
        let key = pack_key(&run.config);
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(run),
            None => keyed.push((key, vec![run])),
        }
    }
    let mut packs: Vec<Vec<&'a SweepRun>> = Vec::new();
    for (_, group) in keyed {
        let size = limit(group[0]).max(1);
        packs.extend(group.chunks(size).map(<[_]>::to_vec));
    }
    packs.sort_by_key(|p| p[0].index);
    packs
}

/// One run of a pack, when it ended.
pub struct PackedRun<'a> {
    pub run: &'a SweepRun,
    pub outcome: Result<Summary>,
}

/// One seat of a GPU pack for each of `runs` (one pack, as [`pack_groups`] made it).
pub fn gpu_seats(
    ctx: &GpuContext,
    runs: &[&SweepRun],
    data_dir: &Path,
) -> std::result::Result<Vec<EngineKind>, crate::gpu::GpuError> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    let model = pack_model(&first.config, data_dir)?;
    let seats = GpuPack::seats(ctx.clone(), &model, first.config.batch_size, runs.len())?;
    Ok(seats
        .into_iter()
        .map(|seat| EngineKind::GpuSeat { seat })
        .collect())
}

/// Trains `runs` side by side, each into `out/<run id>`: one worker thread per engine of
/// `engines` (seats of one GPU pack, one per run; or CPU engines sharing the cores, fewer than
/// the runs), each taking the next run as soon as its last one ends. The runs whose ids are in
/// `going_on` continue from their checkpoints (the caller decides, with
/// [`super::resumable_epochs`]); on a GPU a pack's models share their step count, so callers
/// pack only runs that start from the same epoch. Each run calls `on_epoch` after each of its epochs and
/// `on_finish` when it ends, from its worker's thread. Once `interrupt` is set, each run stops
/// after its epoch in progress (saved, `Error::Interrupted`) and no further run starts; with
/// `stop_after`, each run stops after that epoch (saved, `Error::Paused`). Outcomes of the runs that started come back in the order of `runs`.
#[allow(clippy::too_many_arguments)]
pub fn train_pack<'a>(
    runs: &[&'a SweepRun],
    engines: Vec<EngineKind>,
    out: &Path,
    data_dir: &Path,
    datasets: &Arc<Mutex<DatasetCache>>,
    going_on: &[&str],
    interrupt: Option<Arc<AtomicBool>>,
    stop_after: Option<usize>,
    on_epoch: impl Fn(&SweepRun, &EpochRecord, Verdict) + Sync,
    on_finish: impl Fn(&SweepRun, &Result<Summary>) + Sync,
) -> Result<Vec<PackedRun<'a>>> {
    let options = |run: &SweepRun, engine: EngineKind| RunOptions {
        out: out.join(&run.id),
        force: true,
        data_dir: Some(data_dir.to_path_buf()),
        engine,
        resume: going_on.contains(&run.id.as_str()),
        interrupt: interrupt.clone(),
        datasets: Some(Arc::clone(datasets)),
        stop_after,
    };
    let interrupted = || (interrupt.as_ref()).is_some_and(|f| f.load(Ordering::SeqCst));
    // Load each seed's dataset once, before the runs start side by side.
    for run in runs {
        dataset_for(&run.config, &options(run, EngineKind::Cpu { threads: 1 }))?;
    }
    let (on_epoch, on_finish, options) = (&on_epoch, &on_finish, &options);
    // With an engine per run (a GPU pack's seats) each worker trains its own run; with fewer
    // (CPU shares), workers take the next run from a queue as they free up.
    let dedicated = engines.len() >= runs.len();
    let workers = engines.len();
    let next = std::sync::atomic::AtomicUsize::new(workers);
    let ended: Mutex<Vec<(usize, Result<Summary>)>> = Mutex::new(Vec::new());
    let panicked = std::thread::scope(|scope| {
        let handles: Vec<_> = engines
            .into_iter()
            .enumerate()
            .map(|(worker, engine)| {
                let (next, ended) = (&next, &ended);
                scope.spawn(move || {
                    let mut engine = Some(engine);
                    let mut i = worker;
                    while let Some(&run) = runs.get(i).filter(|_| !interrupted()) {
                        // A dedicated worker hands its engine (a pack seat) to its one run, so
                        // dropping the run's options leaves the pack before any reporting.
                        let kind = if dedicated {
                            engine.take()
                        } else {
                            engine.clone()
                        };
                        let opts = options(run, kind.expect("a dedicated worker has one run"));
                        let outcome = train_tagged(run, &opts, on_epoch);
                        drop(opts);
                        on_finish(run, &outcome);
                        if let Ok(mut e) = ended.lock() {
                            e.push((i, outcome));
                        }
                        i = if dedicated {
                            runs.len()
                        } else {
                            next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        };
                    }
                })
            })
            .collect();
        handles.into_iter().any(|h| h.join().is_err())
    });
    if panicked {
        return Err(Error::Panicked {
            what: "a run trained side by side",
        });
    }
    let ended = ended.into_inner().map_err(|_| Error::Panicked {
        what: "a run of the pack",
    })?;
    Ok(in_run_order(runs, ended))
}

/// Trains `run` as `opts` says into its directory, tagged with the run it holds.
fn train_tagged(
    run: &SweepRun,
    opts: &RunOptions,
    on_epoch: &(impl Fn(&SweepRun, &EpochRecord, Verdict) + Sync),
) -> Result<Summary> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    run.write_tag(&opts.out)?;
    run_training(&run.config, opts, |r, v| on_epoch(run, r, v))
}

/// The outcomes `ended` (by index into `runs`, in the order they ended) in the runs' order.
fn in_run_order<'a>(
    runs: &[&'a SweepRun],
    mut ended: Vec<(usize, Result<Summary>)>,
) -> Vec<PackedRun<'a>> {
    ended.sort_by_key(|e| e.0);
    (ended.into_iter())
        .map(|(i, outcome)| PackedRun {
            run: runs[i],
            outcome,
        })
        .collect()
}
