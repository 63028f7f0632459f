//! Results tables from run directories: mean ± std over seeds per experiment, beside the
//! paper's reported figures. `wgtrain table` prints it; RESULTS.md holds its output.

use std::path::{Path, PathBuf};

use crate::config::TrainConfig;
use crate::error::{Error, Result};
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

/// Why the run in `dir` was left out of a table: it has not finished, and how to finish it.
pub fn left_out_note(dir: &std::path::Path) -> String {
    format!(
        "{} left out: the run has not finished (no summary.json; `wgtrain train --resume {}` finishes it)",
        dir.display(),
        dir.display()
    )
}

/// The runs of `dirs` that have finished (read), and those that have not: a run with epochs
/// but no summary yet (interrupted, or still training) has no test figures, and `table
/// runs/*` goes on without it mid-sweep. Files are passed over (`runs/sweep-x/*` also matches
/// the sweep's results and plots); a directory that is not a run fails as it reads.
pub fn read_finished(dirs: &[PathBuf]) -> Result<(Vec<RunRecord>, Vec<PathBuf>)> {
    let dirs: Vec<&PathBuf> = dirs.iter().filter(|d| !d.is_file()).collect();
    if let Some(sweep) = dirs
        .iter()
        .find(|d| d.join(crate::rundir::SWEEP_RECORD).is_file())
    {
        return Err(Error::Usage(format!(
            "{} is a sweep directory, not a run (hint: `wgtrain sweep report {}` tables a sweep; `wgtrain table {}/*` its runs)",
            sweep.display(),
            sweep.display(),
            sweep.display()
        )));
    }
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

/// Refuses runs a table row would mix wrongly: a row is one experiment name, its mean ± std
/// over seeds of one config, so two runs of one name whose configs differ in more than their
/// seed (they averaged as if seeds: 89% ± 19 of a learning rate of 0.001 and of 0.3), or two
/// of one name and seed (a seed counted twice), are an error naming both directories.
pub fn check_experiments(runs: &[RunRecord]) -> Result<()> {
    for (i, later) in runs.iter().enumerate() {
        for earlier in runs[..i]
            .iter()
            .filter(|r| r.config.name == later.config.name)
        {
            let both = format!(
                "{} and {} are both experiment {:?}",
                earlier.dir.display(),
                later.dir.display(),
                later.config.name
            );
            let differences = earlier
                .config
                .differences(&later.config, &["seed", "name", "paper"]);
            if !differences.is_empty() {
                return Err(Error::Usage(format!(
                    "{both} but their configs differ ({}): a row averages the seeds of one config (hint: give each config its own name)",
                    differences.join(", ")
                )));
            }
            if earlier.config.seed == later.config.seed {
                return Err(Error::Usage(format!(
                    "{both} with seed {}: a row counts each seed once (hint: leave one out)",
                    later.config.seed
                )));
            }
        }
    }
    Ok(())
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

/// `values` (times `scale`) as "mean ± std" with `digits` decimals and `unit` after the mean;
/// "± —" where one value gives no spread (a "± 0.00" would claim there is none), "–" where
/// there is no value.
pub fn mean_pm(values: &[f64], scale: f64, digits: usize, unit: &str) -> String {
    let (mean, std) = mean_std(values);
    match values.len() {
        0 => "–".into(),
        1 => format!("{:.digits$}{unit} ± —", mean * scale),
        _ => format!("{:.digits$}{unit} ± {:.digits$}", mean * scale, std * scale),
    }
}

/// One setting's runs (its seeds), and the ones its figures count: a diverged run's figures are
/// its best weights before it broke, not a result, so they stay out of the means. A run that
/// ended worse than untrained is a result, a bad one: counted, and flagged.
pub struct Setting<'a> {
    pub name: String,
    pub runs: Vec<&'a RunRecord>,
    pub counted: Vec<&'a RunRecord>,
}

impl<'a> Setting<'a> {
    /// `runs` grouped by `name_of`, in first-seen order.
    pub fn group(runs: &'a [RunRecord], name_of: impl Fn(&RunRecord) -> String) -> Vec<Self> {
        let mut settings: Vec<Setting<'a>> = Vec::new();
        for r in runs {
            let name = name_of(r);
            // Diverged and pruned runs stay out of the means (they show as such).
            let counted =
                (!r.summary.diverged && r.summary.status != crate::metrics::PRUNED).then_some(r);
            match settings.iter_mut().find(|s| s.name == name) {
                Some(s) => {
                    s.runs.push(r);
                    s.counted.extend(counted);
                }
                None => settings.push(Setting {
                    name,
                    runs: vec![r],
                    counted: counted.into_iter().collect(),
                }),
            }
        }
        settings
    }

    /// `figure` of every counted run.
    pub fn values(&self, figure: impl Fn(&Summary) -> f64) -> Vec<f64> {
        self.counted.iter().map(|r| figure(&r.summary)).collect()
    }

    /// Every counted run's best validation loss.
    pub fn val_losses(&self) -> Vec<f64> {
        self.counted
            .iter()
            .filter_map(|r| r.summary.best_val_loss)
            .collect()
    }

    /// Mean best validation loss: what a sweep ranks its settings by.
    pub fn mean_val_loss(&self) -> Option<f64> {
        let losses = self.val_losses();
        (!losses.is_empty()).then(|| mean_std(&losses).0)
    }

    /// The seeds counted, and why any were not (`2 (1 diverged, left out)`).
    pub fn seeds_cell(&self) -> String {
        let pruned = self
            .runs
            .iter()
            .filter(|r| r.summary.status == crate::metrics::PRUNED)
            .count();
        let diverged = self.runs.len() - self.counted.len() - pruned;
        let warned = self
            .counted
            .iter()
            .filter(|r| r.summary.warning.is_some())
            .count();
        let notes: Vec<String> = [
            (diverged, "diverged, left out"),
            (pruned, "pruned"),
            (warned, "worse than untrained"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if notes.is_empty() {
            self.counted.len().to_string()
        } else {
            format!("{} ({})", self.counted.len(), notes.join("; "))
        }
    }

    /// Each counted run's best epoch.
    pub fn best_epochs(&self) -> String {
        let epochs: Vec<String> = self
            .counted
            .iter()
            .map(|r| r.summary.best_epoch.to_string())
            .collect();
        epochs.join(", ")
    }

    /// The paper's figures for this setting, when its config carries them.
    pub fn paper(&self) -> Option<crate::config::PaperResult> {
        self.runs[0].config.paper
    }
}

/// A Markdown table, one row per experiment name in first-seen order; the paper's figures and
/// the differences from them only where a config carries them.
pub fn markdown_table(runs: &[RunRecord]) -> String {
    let settings = Setting::group(runs, |r| r.config.name.clone());
    let with_paper = settings.iter().any(|s| s.paper().is_some());
    let mut out = String::from("| experiment | layers | activation |");
    if with_paper {
        out.push_str(" paper test acc | paper test loss |");
    }
    out.push_str(" wgtrain test acc | wgtrain test loss |");
    if with_paper {
        out.push_str(" Δ acc (pp) | Δ loss |");
    }
    out.push_str(" best epochs | seeds |\n");
    let columns = out.matches('|').count() - 1;
    out.push_str(&format!("{}|\n", "|---".repeat(columns)));
    for s in &settings {
        let c = &s.runs[0].config;
        let acc = s.values(|x| x.test_accuracy);
        let loss = s.values(|x| x.test_loss);
        // A network's layers carry their own activations.
        let (layers, activation) = match &c.network {
            None => (format!("{:?}", c.layers), c.activation.name()),
            Some(_) => (c.model_words(), "per layer"),
        };
        out.push_str(&format!("| {} | {layers} | {activation} |", s.name));
        if with_paper {
            out.push_str(&paper_cells(s.paper()));
        }
        out.push_str(&format!(
            " {} | {} |",
            mean_pm(&acc, 100.0, 2, "%"),
            mean_pm(&loss, 1.0, 4, "")
        ));
        if with_paper {
            out.push_str(&delta_cells(s.paper(), &acc, &loss));
        }
        out.push_str(&format!(" {} | {} |\n", s.best_epochs(), s.seeds_cell()));
    }
    out
}

/// ` paper acc | paper loss |`, dashes where the setting has no paper figures.
pub fn paper_cells(paper: Option<crate::config::PaperResult>) -> String {
    match paper {
        Some(p) => format!(" {:.2}% | {:.4} |", 100.0 * p.test_accuracy, p.test_loss),
        None => " – | – |".into(),
    }
}

/// ` Δ acc | Δ loss |` of the means from the paper's figures; dashes without either.
pub fn delta_cells(paper: Option<crate::config::PaperResult>, acc: &[f64], loss: &[f64]) -> String {
    match paper {
        Some(p) if !acc.is_empty() => format!(
            " {:+.2} | {:+.4} |",
            100.0 * (mean_std(acc).0 - p.test_accuracy),
            mean_std(loss).0 - p.test_loss
        ),
        _ => " – | – |".into(),
    }
}
