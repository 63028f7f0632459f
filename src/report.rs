//! Results tables from run directories: mean ± std over seeds per experiment, beside the
//! paper's reported figures. `wgtrain table` prints it; RESULTS.md holds its output.

use std::path::{Path, PathBuf};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::metrics::Summary;

/// One run directory's config and summary.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub config: TrainConfig,
    pub summary: Summary,
}

pub fn read_run(dir: &Path) -> Result<RunRecord> {
    let run = crate::rundir::RunDir::new(dir);
    let config = run.read_config()?;
    let summary = run.read_summary()?;
    Ok(RunRecord {
        dir: dir.to_path_buf(),
        config,
        summary,
    })
}

/// The runs of `dirs` that have finished (read), and those that have not: a run with epochs
/// but no summary yet (interrupted, or still training) has no test figures, and `table
/// runs/*` goes on without it mid-sweep. A directory that is neither fails as it reads.
pub fn read_finished(dirs: &[PathBuf]) -> Result<(Vec<RunRecord>, Vec<PathBuf>)> {
    let (finished, unfinished): (Vec<&PathBuf>, Vec<&PathBuf>) = dirs.iter().partition(|d| {
        let run = crate::rundir::RunDir::new(d);
        run.summary().exists() || !run.has_metrics()
    });
    let records = finished
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>>>()?;
    Ok((records, unfinished.into_iter().cloned().collect()))
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A Markdown table, one row per experiment name in first-seen order.
pub fn markdown_table(runs: &[RunRecord]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.config.name.as_str()) {
            names.push(&r.config.name);
        }
    }
    let mut out = String::from(
        "| experiment | layers | activation | paper test acc | paper test loss | wgtrain test acc | wgtrain test loss | Δ acc (pp) | Δ loss | best epochs | seeds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for name in names {
        let all: Vec<&RunRecord> = runs.iter().filter(|r| r.config.name == name).collect();
        let c = &all[0].config;
        // A diverged run's figures are its best weights before it broke, not a result: they
        // stay out of the means, and the seeds column says how many were left out. A run
        // that ended worse than untrained is a result, a bad one: counted, and flagged.
        let group: Vec<&RunRecord> = all
            .iter()
            .copied()
            .filter(|r| !r.summary.diverged)
            .collect();
        let diverged = all.len() - group.len();
        let warned = group.iter().filter(|r| r.summary.warning.is_some()).count();
        let mut seeds = group.len().to_string();
        let notes: Vec<String> = [
            (diverged, "diverged, left out"),
            (warned, "worse than untrained"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !notes.is_empty() {
            seeds = format!("{seeds} ({})", notes.join("; "));
        }
        let acc: Vec<f64> = group.iter().map(|r| r.summary.test_accuracy).collect();
        let loss: Vec<f64> = group.iter().map(|r| r.summary.test_loss).collect();
        let (acc_m, acc_s) = mean_std(&acc);
        let (loss_m, loss_s) = mean_std(&loss);
        let epochs: Vec<String> = group
            .iter()
            .map(|r| r.summary.best_epoch.to_string())
            .collect();
        // With every run left out there is nothing to average.
        let dash = || "–".to_string();
        let (paper_acc, paper_loss, d_acc, d_loss) = match c.paper {
            Some(p) if group.is_empty() => (
                format!("{:.2}%", 100.0 * p.test_accuracy),
                format!("{:.4}", p.test_loss),
                dash(),
                dash(),
            ),
            Some(p) => (
                format!("{:.2}%", 100.0 * p.test_accuracy),
                format!("{:.4}", p.test_loss),
                format!("{:+.2}", 100.0 * (acc_m - p.test_accuracy)),
                format!("{:+.4}", loss_m - p.test_loss),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let (ours_acc, ours_loss) = if group.is_empty() {
            (dash(), dash())
        } else {
            (
                format!("{:.2}% ± {:.2}", 100.0 * acc_m, 100.0 * acc_s),
                format!("{loss_m:.4} ± {loss_s:.4}"),
            )
        };
        out.push_str(&format!(
            "| {name} | {:?} | {} | {paper_acc} | {paper_loss} | {ours_acc} | {ours_loss} | {d_acc} | {d_loss} | {} | {seeds} |\n",
            c.layers,
            c.activation.name(),
            epochs.join(", "),
        ));
    }
    out
}
