//! Packing: K models trained in the same dispatches give each model what it would get alone,
//! a model left out of an epoch is untouched, and a packed sweep writes the same results as
//! one run at a time.

use std::path::Path;
use std::sync::Arc;

use wgtrain::config::{Optimizer, TrainConfig};
use wgtrain::data::{Dataset, SplitName, epoch_order};
use wgtrain::engine::{Engine, EpochStats, wait};
use wgtrain::gpu::{EpochJob, GpuEngine, GpuModels};
use wgtrain::model::{Activation, Init, Params};

use crate::common::{gpu, sweep_in_library, write_dataset};
use crate::sweep::rows_without_seconds;

/// The sweep file `sweep` (with `sets`) on the GPU into `out`, packs of at most `pack`.
fn sweep_on_gpu(sweep: &Path, data: &Path, out: &Path, pack: usize, sets: &[&str]) -> String {
    let engine = wgtrain::device::EngineKind::Gpu {
        context: Box::new(gpu().expect("the caller checked")),
    };
    sweep_in_library(sweep, data, out, engine, Some(pack), sets)
}

/// Three models that share nothing but their shape: own activation, init, split seed,
/// learning rate, momentum and penalty.
fn three_models() -> Vec<(TrainConfig, Params)> {
    [
        (Activation::Tanh, 1, 0.05, true, 0.0),
        (Activation::Relu, 2, 0.1, false, 1e-3),
        (Activation::Sigmoid, 3, 0.3, true, 1e-2),
    ]
    .into_iter()
    .map(|(activation, seed, learning_rate, momentum, l2)| {
        let config = TrainConfig {
            layers: vec![36, 12, 3],
            activation,
            batch_size: 32,
            learning_rate,
            momentum,
            l2,
            seed,
            init: Init::Xavier,
            ..TrainConfig::default()
        };
        let params = Params::init(&config.layers, activation, config.init, seed).unwrap();
        (config, params)
    })
    .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn packed_models_train_as_if_alone_and_a_model_left_out_is_untouched() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 300, 60, 6, 3, true);
    let models = three_models();
    let data: Vec<Arc<Dataset>> = models
        .iter()
        .map(|(c, _)| Arc::new(Dataset::load(dir.path(), 0.2, c.seed).unwrap()))
        .collect();
    let mut pack = GpuModels::new(ctx.clone(), &models[0].1.model, 32, 3).unwrap();
    for (m, (_, params)) in models.iter().enumerate() {
        pack.init_model(m, params).unwrap();
        pack.upload(m, &data[m]).unwrap();
    }
    let hypers: Vec<_> = models.iter().map(|(c, _)| c.hyper()).collect();
    let orders = |epoch: usize| -> Vec<Vec<u32>> {
        models
            .iter()
            .zip(&data)
            .map(|((c, _), d)| epoch_order(c.seed, epoch, d.train.len))
            .collect()
    };
    // Epoch 1: all three. Epoch 2: model 1 sits out (as a run that stopped early would).
    let mut packed: Vec<Vec<EpochStats>> = vec![Vec::new(); 3];
    for (epoch, who) in [(1, [true, true, true]), (2, [true, false, true])] {
        let order = orders(epoch);
        let jobs: Vec<Option<EpochJob<'_>>> = (0..3)
            .map(|m| {
                who[m].then(|| EpochJob {
                    order: &order[m],
                    hyper: &hypers[m],
                })
            })
            .collect();
        let before = pollster::block_on(pack.params(1)).unwrap();
        for (m, r) in pollster::block_on(pack.train_epoch(&jobs))
            .unwrap()
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.is_some(), who[m]);
            if let Some(r) = r {
                packed[m].push(r.unwrap());
            }
        }
        if !who[1] {
            assert_eq!(
                pollster::block_on(pack.params(1)).unwrap().values,
                before.values,
                "a model without a job is left alone"
            );
        }
    }
    for (m, (config, params)) in models.iter().enumerate() {
        let mut alone = GpuEngine::new(ctx.clone(), params, 32).unwrap();
        alone.upload(Arc::clone(&data[m])).unwrap();
        for (e, want) in packed[m].iter().enumerate() {
            let got = wait(alone.train_epoch(&orders(e + 1)[m], &config.hyper())).unwrap();
            // Same kernels on the same numbers: packing moves data, it changes no arithmetic.
            assert_eq!(&got, want, "model {m} epoch {}", e + 1);
        }
        let (a, p) = (
            wait(alone.params()).unwrap(),
            pollster::block_on(pack.params(m)).unwrap(),
        );
        assert_eq!(a.model, p.model);
        let diff = max_abs_diff(&a.values, &p.values);
        assert!(diff <= 1e-6, "model {m}: params differ by {diff}");
        assert_eq!(
            wait(alone.evaluate(SplitName::Test)).unwrap(),
            pollster::block_on(pack.evaluate(m, SplitName::Test)).unwrap(),
            "model {m} test"
        );
    }
}

#[test]
fn models_that_cannot_share_steps_are_refused_with_a_reason() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 100, 20, 6, 3, true);
    let data = Dataset::load(dir.path(), 0.2, 1).unwrap();
    let params = Params::init(&[36, 12, 3], Activation::Tanh, Init::Xavier, 1).unwrap();
    let mut pack = GpuModels::new(ctx, &params.model, 32, 2).unwrap();
    for m in 0..2 {
        pack.init_model(m, &params).unwrap();
        pack.upload(m, &data).unwrap();
    }
    let sgd = TrainConfig {
        layers: vec![36, 12, 3],
        batch_size: 32,
        ..TrainConfig::default()
    };
    let adam = TrainConfig {
        optimizer: Optimizer::Adam,
        ..sgd.clone()
    };
    let order = epoch_order(1, 1, data.train.len);
    let (h1, h2) = (sgd.hyper(), adam.hyper());
    let jobs = [
        Some(EpochJob {
            order: &order,
            hyper: &h1,
        }),
        Some(EpochJob {
            order: &order,
            hyper: &h2,
        }),
    ];
    let err = pollster::block_on(pack.train_epoch(&jobs))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot share steps"), "{err}");

    // A smaller batch than the pack was built for takes more steps than it has slots for.
    let small = TrainConfig {
        batch_size: 16,
        ..sgd.clone()
    }
    .hyper();
    let job = EpochJob {
        order: &order,
        hyper: &small,
    };
    let err = pollster::block_on(pack.train_epoch(&[Some(job), None]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("built for batch 32"), "{err}");

    let other = tempfile::tempdir().unwrap();
    write_dataset(other.path(), 100, 20, 6, 4, true);
    let err = pack
        .upload(1, &Dataset::load(other.path(), 0.2, 1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers"), "{err}");
}

#[test]
fn a_packed_sweep_writes_the_same_results_as_one_run_at_a_time() {
    if gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 160, 30, 6, 3, true);
    let sweep = tmp.path().join("grid.toml");
    std::fs::write(
        &sweep,
        "seeds = [1, 2]\n[grid]\nlearning_rate = [0.05, 2.5]\nactivation = [\"tanh\", \"relu\"]\n",
    )
    .unwrap();
    let run = |out: &Path, pack: usize| {
        let sets = [
            "layers=[36, 8, 3]",
            "batch_size=16",
            "epochs=8",
            "patience=1",
            "early_stopping_rule=\"no_improvement\"",
        ];
        sweep_on_gpu(&sweep, &data, out, pack, &sets)
    };
    let (packed, alone) = (tmp.path().join("packed"), tmp.path().join("alone"));
    let log = run(&packed, 8);
    assert!(log.contains("pack of 8 runs"), "{log}");
    assert!(!run(&alone, 1).contains("pack of"));
    let rows = rows_without_seconds(&packed);
    assert_eq!(rows.len(), 9, "header + 8 runs");
    assert_eq!(rows, rows_without_seconds(&alone));
    // The scenario packing must survive: runs that stop early beside runs that go on.
    let epochs_run: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(6).unwrap())
        .collect();
    assert!(epochs_run.contains(&"8"), "{epochs_run:?}");
    assert!(epochs_run.iter().any(|&e| e != "8"), "{epochs_run:?}");
}

#[test]
fn a_packed_run_that_diverges_leaves_the_pack_and_the_others_finish_as_alone() {
    if gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 160, 30, 6, 3, true);
    let sweep = tmp.path().join("lr.toml");
    std::fs::write(
        &sweep,
        "seeds = [1]\n[grid]\nlearning_rate = [0.001, 1e30]\n",
    )
    .unwrap();
    // A diverged run is a warning, not a failed sweep: train_runs returns Ok.
    let run = |out: &Path, pack: usize| {
        let sets = [
            "layers=[36, 8, 3]",
            "batch_size=16",
            "epochs=4",
            "init=\"xavier\"",
            "gradient=\"sum\"",
            "activation=\"relu\"",
        ];
        sweep_on_gpu(&sweep, &data, out, pack, &sets)
    };
    let (packed, alone) = (tmp.path().join("packed"), tmp.path().join("alone"));
    let log = run(&packed, 2);
    assert!(
        log.contains("pack of 2 runs") && log.contains("diverged"),
        "{log}"
    );
    run(&alone, 1);
    let rows = rows_without_seconds(&packed);
    assert_eq!(rows, rows_without_seconds(&alone));
    let statuses: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(4).unwrap())
        .collect();
    assert_eq!(statuses, ["finished", "diverged"], "{rows:?}");
}

/// Networks of layers pack too: a sweep of a small CNN (with dropout) over learning
/// rate and momentum, two seeds, packs the runs of each seed (which share a split, an order
/// and dropout masks) and writes what training them one at a time writes, bit for bit, runs
/// that stop early leaving their pack included.
#[test]
fn a_packed_sweep_of_cnns_writes_the_same_results_as_one_run_at_a_time() {
    if gpu().is_none() {
        return crate::common::skip("a GPU adapter", "WGTRAIN_REQUIRE_GPU");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 160, 30, 6, 3, true);
    let base = tmp.path().join("cnn.toml");
    std::fs::write(
        &base,
        r#"network = [
  { conv = 3, kernel = 3, padding = 1, activation = "relu" },
  { max_pool = 2 },
  { dropout = 0.25 },
  { dense = 3 },
]
batch_size = 16
epochs = 6
init = "pytorch"
early_stopping_rule = "no_improvement"
patience = 1
"#,
    )
    .unwrap();
    let sweep = tmp.path().join("grid.toml");
    std::fs::write(
        &sweep,
        format!(
            "base = {:?}\nseeds = [1, 2]\n[grid]\nlearning_rate = [0.05, 2.0]\nmomentum = [true, false]\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let (packed, alone) = (tmp.path().join("packed"), tmp.path().join("alone"));
    let log = sweep_on_gpu(&sweep, &data, &packed, 8, &[]);
    assert_eq!(log.matches("pack of 4 runs").count(), 2, "{log}");
    assert!(!sweep_on_gpu(&sweep, &data, &alone, 1, &[]).contains("pack of"));
    let rows = rows_without_seconds(&packed);
    assert_eq!(rows.len(), 1 + 8, "the header and eight runs");
    assert_eq!(rows, rows_without_seconds(&alone));
}

#[test]
fn a_pruned_search_on_a_gpu_packs_each_rungs_survivors_to_the_same_bits_as_alone() {
    if gpu().is_none() {
        return crate::common::skip("a GPU adapter", "WGTRAIN_REQUIRE_GPU");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 120, 30, 6, 3, true);
    let sweep = tmp.path().join("pruned.toml");
    std::fs::write(
        &sweep,
        "trials = 9\n[search]\nlearning_rate = { log_uniform = [0.01, 1.0] }\n\
         activation = { choice = [\"tanh\", \"relu\", \"sigmoid\"] }\n\
         [prune]\nmin_epochs = 1\nmax_epochs = 4\n",
    )
    .unwrap();
    let sets = ["layers=[36, 8, 3]", "batch_size=16"];
    let (packed, alone) = (tmp.path().join("packed"), tmp.path().join("alone"));
    let log = sweep_on_gpu(&sweep, &data, &packed, 32, &sets);
    // All nine at the first rung, then the three that went on, together.
    assert!(log.contains("pack of 9 runs"), "{log}");
    assert!(log.contains("pack of 3 runs"), "{log}");
    sweep_on_gpu(&sweep, &data, &alone, 1, &sets);
    let rows = rows_without_seconds(&packed);
    assert_eq!(rows, rows_without_seconds(&alone));
    assert_eq!(rows.iter().filter(|r| r.contains(",pruned,")).count(), 8);
    for row in &rows[1..] {
        let run = row.split(',').next().unwrap();
        let file = |dir: &Path| std::fs::read(dir.join(run).join("last.safetensors")).unwrap();
        assert!(
            file(&packed) == file(&alone),
            "{run}: packed and alone differ"
        );
    }
}
