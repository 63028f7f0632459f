//! A sweep's reports: results.csv (one row per run: ended, unfinished or unreadable) and
//! results.md (mean ± std per setting, each setting's missing runs said), rebuilt from the
//! run directories, never over a file wgtrain did not write.

use std::path::{Path, PathBuf};

use super::run::{RunTag, SWEEP_FILE, read_tag, value_text};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::report::{RunRecord, Setting, delta_cells, mean_pm, paper_cells, read_run};
use crate::rundir::RunDir;

/// Whether `dir` holds a sweep: its `sweep.json`, or (from before sweeps wrote one) a run
/// directory a sweep tagged.
pub(super) fn holds_sweep(dir: &Path) -> bool {
    dir.join(SWEEP_FILE).is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| RunDir::new(e.path()).sweep_tag().is_file())
        })
}

/// Fails unless `path` is absent or begins as wgtrain writes it (`first_line`): a report
/// never replaces a file it did not write.
fn check_ours(path: &Path, first_lines: &[&str]) -> Result<()> {
    match crate::files::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(text)
            if text
                .lines()
                .next()
                .is_some_and(|l| first_lines.contains(&l)) =>
        {
            Ok(())
        }
        _ => Err(Error::NotOurs {
            path: path.to_path_buf(),
        }),
    }
}

/// First line of results.md.
const RESULTS_TITLE: &str = "# Sweep results";

/// Header of results.csv. `adapter` names the GPU adapter and its backend (empty on the CPU);
/// `seconds` is the run's own time, its share of a GPU pack's epochs.
pub const RESULTS_HEADER: &str = "run,setting,seed,overrides,status,best_epoch,epochs_run,best_val_loss,test_accuracy,test_loss,device,adapter,seconds";

/// Headers earlier versions wrote: their results.csv is still ours to rewrite.
const EARLIER_RESULTS_HEADERS: &[&str] = &[
    "run,setting,seed,overrides,status,best_epoch,epochs_run,best_val_loss,test_accuracy,test_loss,device,seconds",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The runs a report covers: every run that ended, and of those the ones a pruning rung
/// stopped and the ones that diverged (ended, though never counted as finished); beside
/// them the runs begun but not ended (interrupted, or training now) and the runs whose files
/// cannot be read, by name with the reason: left out of the figures, never out of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedRuns {
    pub ended: usize,
    pub pruned: usize,
    pub diverged: usize,
    pub unfinished: usize,
    pub unreadable: Vec<(String, String)>,
}

impl std::fmt::Display for ReportedRuns {
    /// `9 finished runs`, `1 finished run`, `1 finished and 8 pruned runs`, or `1 finished,
    /// 1 diverged and 1 unreadable runs (r3: …)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let finished = self.ended.saturating_sub(self.pruned + self.diverged);
        let mut parts = vec![format!("{finished} finished")];
        for (n, what) in [
            (self.diverged, "diverged"),
            (self.pruned, "pruned"),
            (self.unfinished, "unfinished"),
            (self.unreadable.len(), "unreadable"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let last = parts.pop().unwrap_or_default();
        let all = match parts.is_empty() {
            true => last,
            false => format!("{} and {last}", parts.join(", ")),
        };
        let total = self.ended + self.unfinished + self.unreadable.len();
        write!(f, "{all} run{}", if total == 1 { "" } else { "s" })?;
        if !self.unreadable.is_empty() {
            let named: Vec<String> = (self.unreadable.iter())
                .map(|(run, why)| format!("{run}: {why}"))
                .collect();
            write!(f, " ({})", named.join("; "))?;
        }
        Ok(())
    }
}

/// Rebuilds results.csv and results.md in `out` from every run directory in it that ended
/// (finished, diverged or pruned), naming beside them the runs not ended or unreadable.
/// Returns what it found.
pub fn report(out: &Path) -> Result<ReportedRuns> {
    crate::error::refuse_non_directory(out, "sweep directory")?;
    if !holds_sweep(out) {
        return Err(Error::NotASweep {
            path: out.to_path_buf(),
        });
    }
    let csv_headers: Vec<&str> = std::iter::once(RESULTS_HEADER)
        .chain(EARLIER_RESULTS_HEADERS.iter().copied())
        .collect();
    check_ours(&out.join("results.csv"), &csv_headers)?;
    check_ours(&out.join("results.md"), &[RESULTS_TITLE])?;
    let SweepDirs {
        runs,
        absent,
        why_unreadable,
        tags,
    } = read_runs(out)?;
    // Runs copied in from another sweep whose settings share names would average as seeds.
    crate::report::check_experiments(&runs)?;
    write_atomic(
        &out.join("results.csv"),
        results_csv(&runs, &absent, &tags).as_bytes(),
    )?;
    // The setting a run belongs to: its sweep tag's, else its config's name.
    let settings = Setting::group(&runs, |r| {
        tags.get(&r.dir)
            .map_or_else(|| r.config.name.clone(), |t| t.setting.clone())
    });
    let ranked = rank(settings);
    let reported = ReportedRuns {
        ended: runs.len(),
        pruned: runs
            .iter()
            .filter(|r| r.summary.status == crate::metrics::PRUNED)
            .count(),
        diverged: runs.iter().filter(|r| r.summary.diverged).count(),
        unfinished: absent.iter().filter(|a| a.state == UNFINISHED).count(),
        unreadable: why_unreadable,
    };
    let md = results_md(out, &reported, &ranked, &tags, &absent, &runs);
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    draw_sweep(out, &ranked, &runs)?;
    Ok(reported)
}

/// What a sweep directory holds, in sweep order.
struct SweepDirs {
    /// The runs that ended, read.
    runs: Vec<RunRecord>,
    /// The runs not ended or unreadable: named, never dropped unseen.
    absent: Vec<Absent>,
    /// (run, why) for each unreadable one.
    why_unreadable: Vec<(String, String)>,
    /// Every run's sweep tag.
    tags: Tags,
}

/// Reads every run directory in `out`.
fn read_runs(out: &Path) -> Result<SweepDirs> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let run = RunDir::new(p);
            run.summary().exists() || run.has_metrics() || run.sweep_tag().is_file()
        })
        .collect();
    // Each run's sweep tag, read once: its place in the sweep, its setting, its overrides.
    let tags: Tags = dirs
        .iter()
        .filter_map(|d| Some((d.clone(), read_tag(d)?)))
        .collect();
    // Sweep order when the runs carry their tags, else by name.
    dirs.sort_by_key(|d| (tags.get(d).map_or(usize::MAX, |t| t.index), d.clone()));
    // A run not ended, or ended but with files that cannot be read, is named, never
    // dropped unseen.
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut absent: Vec<Absent> = Vec::new();
    let mut why_unreadable: Vec<(String, String)> = Vec::new();
    for dir in &dirs {
        let state = match RunDir::new(dir).summary().exists() {
            false => UNFINISHED,
            true => match read_run(dir) {
                Ok(run) => {
                    runs.push(run);
                    continue;
                }
                Err(e) => {
                    why_unreadable.push((file_name(dir).to_string(), e.to_string()));
                    UNREADABLE
                }
            },
        };
        let tag = tags.get(dir);
        absent.push(Absent {
            run: file_name(dir).to_string(),
            setting: tag.map_or_else(|| file_name(dir).to_string(), |t| t.setting.clone()),
            seed: tag.map(|t| t.seed),
            overrides: tag.map_or_else(Vec::new, |t| t.overrides.clone()),
            state,
        });
    }
    Ok(SweepDirs {
        runs,
        absent,
        why_unreadable,
        tags,
    })
}

/// results.csv: a row per ended run, then a row per run not ended or unreadable.
fn results_csv(runs: &[RunRecord], absent: &[Absent], tags: &Tags) -> String {
    let mut csv = format!("{RESULTS_HEADER}\n");
    for r in runs {
        let id = file_name(&r.dir);
        let overrides = tags
            .get(&r.dir)
            .map(|t| t.overrides.join(";"))
            .unwrap_or_default();
        let s = &r.summary;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.3}\n",
            csv_field(id),
            csv_field(&r.config.name),
            r.config.seed,
            csv_field(&overrides),
            s.status,
            s.best_epoch,
            s.epochs_run,
            s.best_val_loss.map_or(String::new(), |l| format!("{l:.6}")),
            // A diverged run's test figures measure broken weights: no result to read.
            finite_or_blank(if s.diverged {
                f64::NAN
            } else {
                s.test_accuracy
            }),
            finite_or_blank(if s.diverged { f64::NAN } else { s.test_loss }),
            s.device,
            csv_field(&match (&s.adapter, &s.backend) {
                (Some(a), Some(b)) => format!("{a} ({b})"),
                (Some(a), None) => a.clone(),
                _ => String::new(),
            }),
            s.seconds
        ));
    }
    for a in absent {
        csv.push_str(&format!(
            "{},{},{},{},{},,,,,,,,\n",
            csv_field(&a.run),
            csv_field(&a.setting),
            a.seed.map_or(String::new(), |s| s.to_string()),
            csv_field(&a.overrides.join(";")),
            a.state,
        ));
    }
    csv
}

/// results.md: the settings ranked, the runs left out of the figures, and what pruning saved.
fn results_md(
    out: &Path,
    reported: &ReportedRuns,
    ranked: &[Setting<'_>],
    tags: &Tags,
    absent: &[Absent],
    runs: &[RunRecord],
) -> String {
    let md = format!(
        "{RESULTS_TITLE}\n\n{reported} in {}, settings ranked by mean best validation loss (the \
         figure to choose by; the test figures beside it never choose). Mean ± sample std over \
         seeds, \"± —\" where one seed gives no spread.\n\n{}",
        out.display(),
        ranked_table(ranked, tags, absent)
    );
    let md = match reported.unreadable.is_empty() && reported.unfinished == 0 {
        true => md,
        false => {
            let lines: Vec<String> = (absent.iter())
                .map(|a| {
                    let why = (reported.unreadable.iter())
                        .find(|(run, _)| *run == a.run)
                        .map_or("not finished (interrupted, or training now)", |(_, w)| w);
                    format!("- {}: {why}", a.run)
                })
                .collect();
            format!(
                "{md}\nRuns left out of the figures above, unfinished or unreadable (their settings' rows say incomplete):\n\n{}\n",
                lines.join("\n")
            )
        }
    };
    // What pruning saved: the epochs trained against every run trained to its `epochs`.
    match reported.pruned > 0 {
        true => {
            // Counted wide: a run's `epochs` may be as large as a config holds.
            let spent: u128 = runs.iter().map(|r| r.summary.epochs_run as u128).sum();
            let full: u128 = runs.iter().map(|r| r.config.epochs as u128).sum();
            format!(
                "{md}\nEpochs trained: {spent} of the {full} that training every run to its `epochs` would take at most ({:.0}%; early stopping aside).\n",
                100.0 * spent as f64 / full.max(1) as f64
            )
        }
        false => md,
    }
}

/// comparison.png (test accuracy per setting, best first) and validation.png (every run's
/// curve, the best setting's strong).
fn draw_sweep(out: &Path, ranked: &[Setting<'_>], runs: &[RunRecord]) -> Result<()> {
    let bars: Vec<crate::plot::ComparisonBar> = ranked
        .iter()
        .filter(|s| !s.counted.is_empty())
        .map(|s| {
            let accs = s.values(|x| x.test_accuracy);
            let (mean, std) = crate::report::mean_std(&accs);
            crate::plot::ComparisonBar {
                label: s.name.clone(),
                mean,
                std: (accs.len() > 1).then_some(std),
            }
        })
        .collect();
    if !bars.is_empty() {
        crate::plot::plot_comparison(
            out,
            &bars,
            "Sweep: test accuracy per setting, best validation loss first",
        )?;
    }
    // Every run's validation curve, the best setting's runs strong.
    let curves: Vec<crate::plot::RunCurves> = runs
        .iter()
        .map(|r| crate::plot::RunCurves::read(&r.dir))
        .collect::<Result<_>>()?;
    let best: Vec<usize> = ranked.first().map_or_else(Vec::new, |s| {
        (runs.iter().enumerate())
            .filter(|(_, r)| s.counted.iter().any(|c| c.dir == r.dir))
            .map(|(i, _)| i)
            .collect()
    });
    let pruned: Vec<usize> = (runs.iter().enumerate())
        .filter(|(_, r)| r.summary.status == crate::metrics::PRUNED)
        .map(|(i, _)| i)
        .collect();
    if !curves.is_empty() {
        crate::plot::plot_validation(
            out,
            &curves,
            (&best, &pruned),
            "Sweep: every run's validation loss by epoch",
        )?;
    }
    Ok(())
}

/// Settings, lowest mean best validation loss first; then the pruned, the furthest first
/// and by the validation loss they reached; settings with no run to count last.
fn rank(mut settings: Vec<Setting<'_>>) -> Vec<Setting<'_>> {
    settings.sort_by(|a, b| {
        let key = |s: &Setting| match (s.mean_val_loss(), pruned_at(s)) {
            (Some(loss), _) => (0, 0, loss),
            (None, Some((epoch, loss))) => (1, usize::MAX - epoch, loss),
            (None, None) => (2, 0, f64::INFINITY),
        };
        let (ka, kb) = (key(a), key(b));
        (ka.0, ka.1).cmp(&(kb.0, kb.1)).then(ka.2.total_cmp(&kb.2))
    });
    settings
}

/// A pruned setting's epoch reached and mean best validation loss by then; `None` when no
/// run of it was pruned.
fn pruned_at(s: &Setting<'_>) -> Option<(usize, f64)> {
    let pruned: Vec<&RunRecord> = s
        .runs
        .iter()
        .copied()
        .filter(|r| r.summary.status == crate::metrics::PRUNED)
        .collect();
    let epoch = pruned.iter().map(|r| r.summary.epochs_run).max()?;
    let losses: Vec<f64> = pruned
        .iter()
        .filter_map(|r| r.summary.best_val_loss)
        .collect();
    let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
    Some((
        epoch,
        if losses.is_empty() {
            f64::INFINITY
        } else {
            mean
        },
    ))
}

/// results.csv's status for a run whose files cannot be read.
const UNREADABLE: &str = "unreadable";
/// results.csv's status for a run begun but not ended (interrupted, or training now).
const UNFINISHED: &str = "unfinished";

/// The last part of a run directory's path: its id in the sweep.
fn file_name(dir: &Path) -> &str {
    dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// A figure with six decimals, or nothing for a run that has none (a pruned run's test).
fn finite_or_blank(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        String::new()
    }
}

/// Each run directory's sweep tag, for the runs that carry one.
type Tags = std::collections::HashMap<PathBuf, RunTag>;

/// A run in the sweep's directory with no result to count: [`UNFINISHED`] or [`UNREADABLE`],
/// with what its sweep tag says of it.
struct Absent {
    run: String,
    setting: String,
    seed: Option<u64>,
    /// `key=value`, as the tag holds them.
    overrides: Vec<String>,
    state: &'static str,
}

impl Absent {
    /// Its swept values, split.
    fn swept(&self) -> Vec<(String, String)> {
        split_overrides(&self.overrides)
    }
}

/// `key=value` overrides of a run's sweep tag, split.
fn swept_values(r: &RunRecord, tags: &Tags) -> Vec<(String, String)> {
    split_overrides(tags.get(&r.dir).map_or(&[][..], |t| &t.overrides))
}

/// `key=value` overrides, split.
fn split_overrides(overrides: &[String]) -> Vec<(String, String)> {
    overrides
        .iter()
        .filter_map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A config's value for `key`, as a sweep file would write it bare.
fn config_value(config: &crate::config::TrainConfig, key: &str) -> Option<String> {
    let table = toml::Value::try_from(config).ok()?;
    table.get(key).map(value_text)
}

/// The columns of results.md's table beyond the figures: the swept keys, whether settings
/// are named, whether the paper's figures stand beside them.
struct Columns<'a> {
    keys: &'a [String],
    named: bool,
    with_paper: bool,
}

impl Columns<'_> {
    /// The row of the `i`th setting `s` by rank, whose keys hold `key_cells`.
    fn ranked_row(
        &self,
        (i, s): (usize, &Setting<'_>),
        key_cells: &[String],
        absent: &[Absent],
    ) -> String {
        let rank = match (i, s.mean_val_loss()) {
            (_, None) => match pruned_at(s) {
                Some((epoch, loss)) => format!("pruned at epoch {epoch} (val loss {loss:.4})"),
                None => "–".to_string(),
            },
            (0, Some(_)) => "1 (best)".to_string(),
            (i, Some(_)) => (i + 1).to_string(),
        };
        let mut cells = vec![rank];
        if self.named {
            cells.push(s.name.clone());
        }
        cells.extend(key_cells.iter().cloned());
        let val = s.val_losses();
        let acc = s.values(|x| x.test_accuracy);
        let loss = s.values(|x| x.test_loss);
        cells.push(mean_pm(&val, 1.0, 4, ""));
        cells.push(mean_pm(&acc, 100.0, 2, "%"));
        cells.push(mean_pm(&loss, 1.0, 4, ""));
        let mut row = format!("| {} |", cells.join(" | "));
        if self.with_paper {
            row.push_str(&paper_cells(s.paper()));
            row.push_str(&delta_cells(s.paper(), &acc, &loss));
        }
        let seeds = match incomplete(absent, &s.name) {
            None => s.seeds_cell(),
            Some(why) => format!("{} (incomplete: {why})", s.seeds_cell()),
        };
        row.push_str(&format!(" {} | {seeds} |\n", s.best_epochs()));
        row
    }

    /// The row of a setting with no result to count: why, and no figures.
    fn absent_row(&self, a: &Absent, absent: &[Absent]) -> String {
        let why = incomplete(absent, &a.setting).unwrap_or_default();
        let mut cells = vec![format!("– ({why})")];
        if self.named {
            cells.push(a.setting.clone());
        }
        let swept = a.swept();
        cells.extend(self.keys.iter().map(|k| {
            (swept.iter())
                .find(|(key, _)| key == k)
                .map_or_else(|| "–".to_string(), |(_, v)| v.clone())
        }));
        let figures = 3 + if self.with_paper { 4 } else { 0 } + 1;
        cells.extend(std::iter::repeat_n("–".to_string(), figures));
        cells.push(format!("0 (incomplete: {why})"));
        format!("| {} |\n", cells.join(" | "))
    }
}

/// results.md's table: a rank (the best marked), a column per swept key (and the setting's
/// name where the keys alone do not tell settings apart: `[[runs]]` of other config files),
/// validation loss, the test figures, the paper's where a config carries them.
/// `absent` holds each run with no result to count (unfinished, unreadable): its setting's
/// row says so, and a setting with no result at all still has a row.
fn ranked_table(ranked: &[Setting<'_>], tags: &Tags, absent: &[Absent]) -> String {
    let swept: Vec<Vec<(String, String)>> = ranked
        .iter()
        .map(|s| swept_values(s.runs[0], tags))
        .collect();
    let mut keys: Vec<String> = Vec::new();
    let absent_swept: Vec<(String, String)> = absent.iter().flat_map(Absent::swept).collect();
    for (k, _) in swept.iter().flatten().chain(&absent_swept) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    // Each setting's value of each key: its own override, else its config's.
    let key_cells: Vec<Vec<String>> = ranked
        .iter()
        .zip(&swept)
        .map(|(s, own)| {
            keys.iter()
                .map(|k| {
                    own.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                        .or_else(|| config_value(&s.runs[0].config, k))
                        .unwrap_or_else(|| "–".into())
                })
                .collect()
        })
        .collect();
    let named = keys.is_empty()
        || key_cells
            .iter()
            .enumerate()
            .any(|(i, c)| key_cells[..i].contains(c));
    let with_paper = ranked.iter().any(|s| s.paper().is_some());
    let mut header = vec!["rank".to_string()];
    if named {
        header.push("setting".into());
    }
    header.extend(keys.iter().cloned());
    header.extend(["best val loss", "test acc", "test loss"].map(String::from));
    if with_paper {
        header.extend(
            ["paper test acc", "paper test loss", "Δ acc (pp)", "Δ loss"].map(String::from),
        );
    }
    header.extend(["best epochs", "seeds"].map(String::from));
    let mut table = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    let columns = Columns {
        keys: &keys,
        named,
        with_paper,
    };
    for (i, s) in ranked.iter().enumerate() {
        table.push_str(&columns.ranked_row((i, s), &key_cells[i], absent));
    }
    // Settings with no result to count: a row that says why, with no figures.
    let mut without: Vec<&Absent> = Vec::new();
    for a in absent {
        if !ranked.iter().any(|s| s.name == a.setting)
            && !without.iter().any(|w| w.setting == a.setting)
        {
            without.push(a);
        }
    }
    for a in without {
        table.push_str(&columns.absent_row(a, absent));
    }
    table
}

/// What `setting` lacks among `absent` ("1 unfinished, 2 unreadable"); `None` for nothing.
fn incomplete(absent: &[Absent], setting: &str) -> Option<String> {
    let parts: Vec<String> = [UNFINISHED, UNREADABLE]
        .iter()
        .filter_map(|state| {
            let n = (absent.iter())
                .filter(|a| a.setting == setting && a.state == *state)
                .count();
            (n > 0).then(|| format!("{n} {state}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}
