//! The training loop: early-stopping bookkeeping, best-weight restore, determinism, divergence.

use std::path::Path;
use std::sync::Arc;

use wgtrain::config::{EarlyStoppingRule, TrainConfig};
use wgtrain::cpu::CpuEngine;
use wgtrain::data::{Dataset, SplitName};
use wgtrain::engine::{Engine, wait};
use wgtrain::model::Params;
use wgtrain::train::{EarlyStopping, TrainError, TrainOutcome};

use crate::common::write_dataset;

/// The training loop, waited for.
fn train(
    engine: &mut dyn Engine,
    train_rows: usize,
    config: &TrainConfig,
) -> Result<TrainOutcome, wgtrain::Error> {
    pollster::block_on(wgtrain::train::train(
        engine,
        train_rows,
        config,
        None,
        |_| Ok(()),
    ))
}

fn stop_epoch(rule: EarlyStoppingRule, patience: usize, losses: &[f64]) -> Option<usize> {
    let mut es = EarlyStopping::new(rule, patience, true);
    losses
        .iter()
        .enumerate()
        .find(|&(i, &l)| es.observe(i + 1, l).stop)
        .map(|(i, _)| i + 1)
}

#[test]
fn rising_rule_stops_after_patience_consecutive_rises() {
    // Rises at epochs 3, 4 (streak broken at 5), then 6, 7, 8.
    let losses = [1.0, 0.8, 0.9, 1.0, 0.95, 0.97, 0.99, 1.2, 0.5];
    assert_eq!(stop_epoch(EarlyStoppingRule::Rising, 3, &losses), Some(8));
    assert_eq!(stop_epoch(EarlyStoppingRule::Rising, 2, &losses), Some(4));
}

#[test]
fn no_improvement_rule_stops_after_patience_epochs_without_a_new_best() {
    let losses = [1.0, 0.8, 0.9, 0.85, 0.81, 0.7, 0.75, 0.71, 0.72];
    assert_eq!(
        stop_epoch(EarlyStoppingRule::NoImprovement, 3, &losses),
        Some(5)
    );
    assert_eq!(
        stop_epoch(EarlyStoppingRule::NoImprovement, 4, &losses),
        None
    );
}

#[test]
fn disabled_early_stopping_still_tracks_the_best_epoch() {
    let mut es = EarlyStopping::new(EarlyStoppingRule::Rising, 1, false);
    for (i, l) in [3.0, 1.0, 2.0, 4.0, 5.0].into_iter().enumerate() {
        assert!(!es.observe(i + 1, l).stop);
    }
    assert_eq!((es.best_epoch(), es.best_loss()), (2, 1.0));
}

fn tiny_setup(sets: &[&str]) -> (TrainConfig, Arc<Dataset>, Box<dyn Engine>) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 300, 60, 6, 3, true);
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sets.extend([
        "layers=[36, 8, 3]".into(),
        "batch_size=16".into(),
        "init=\"xavier\"".into(),
    ]);
    let config = TrainConfig::from_toml_str("", Path::new("t"), "tiny", &sets).unwrap();
    let data = Arc::new(Dataset::load(dir.path(), config.val_fraction, config.seed).unwrap());
    let params = Params::init(&config.layers, config.activation, config.init, config.seed).unwrap();
    let mut engine: Box<dyn Engine> =
        Box::new(CpuEngine::new(&params, 2, config.batch_size).unwrap());
    engine.upload(Arc::clone(&data)).unwrap();
    (config, data, engine)
}

#[test]
fn training_restores_the_best_validation_weights() {
    let (config, data, mut engine) = tiny_setup(&[
        "epochs=12",
        "learning_rate=0.5",
        "early_stopping_rule=\"no_improvement\"",
        "patience=3",
    ]);
    let outcome = train(engine.as_mut(), data.train.len, &config).unwrap();
    let best = outcome
        .records
        .iter()
        .map(|r| r.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(outcome.records[outcome.best_epoch - 1].val_loss, best);
    assert_eq!(wait(engine.params()).unwrap(), outcome.best_params);
    let val = wait(engine.evaluate(SplitName::Val)).unwrap();
    assert!(
        (val.loss - best).abs() < 1e-12,
        "restored weights give val loss {} not the best {best}",
        val.loss
    );
    assert!(
        val.accuracy > 0.9,
        "a learnable toy problem should be learnt: {}",
        val.accuracy
    );
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let run = || {
        let (config, data, mut engine) = tiny_setup(&["epochs=3"]);
        train(engine.as_mut(), data.train.len, &config)
            .unwrap()
            .best_params
    };
    assert_eq!(run(), run());
}

#[test]
fn diverging_training_is_reported_and_keeps_the_best_weights() {
    let (config, data, mut engine) = tiny_setup(&[
        "epochs=20",
        "learning_rate=1e30",
        "gradient=\"sum\"",
        "activation=\"relu\"",
    ]);
    let outcome = train(engine.as_mut(), data.train.len, &config).unwrap();
    let err = outcome
        .diverged
        .expect("a learning rate of 1e30 must diverge");
    assert!(matches!(err, TrainError::Diverged { .. }));
    assert!(err.to_string().contains("learning_rate"), "{err}");
    assert!(
        wait(engine.params())
            .unwrap()
            .values
            .iter()
            .all(|v| v.is_finite())
    );
}

#[test]
fn a_write_that_fails_midway_leaves_the_previous_file_intact() {
    // A full disk must not cost the last good checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    wgtrain::checkpoint::write_atomic(&path, b"the previous checkpoint").unwrap();
    let err = wgtrain::checkpoint::write_atomic_with(&path, |w| {
        w.write_all(b"half of a new")?;
        Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device",
        ))
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("model.safetensors") && err.to_string().contains("no space"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"the previous checkpoint");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left behind: {leftovers:?}"
    );
}

#[test]
fn utc_dates_follow_the_civil_calendar() {
    use wgtrain::metrics::UtcTime;
    let t = UtcTime::from_unix_secs(0);
    assert_eq!(
        (t.date(), t.hour, t.minute, t.second),
        ("1970-01-01".into(), 0, 0, 0)
    );
    // 2024-02-29 12:34:56 UTC (a leap day) and the day after.
    let t = UtcTime::from_unix_secs(1_709_210_096);
    assert_eq!(
        (t.date(), t.hour, t.minute, t.second),
        ("2024-02-29".into(), 12, 34, 56)
    );
    assert_eq!(
        UtcTime::from_unix_secs(1_709_210_096 + 86_400).date(),
        "2024-03-01"
    );
    // 2000-12-31 (the last day of a leap year divisible by 400).
    assert_eq!(UtcTime::from_unix_secs(978_220_800).date(), "2000-12-31");
}
