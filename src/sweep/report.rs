//! A sweep's reports: results.csv (one row per finished run) and results.md (mean ± std per
//! setting), rebuilt from the run directories, never over a file wgtrain did not write.

use std::path::{Path, PathBuf};

use super::{SWEEP_FILE, read_tag};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::report::{RunRecord, markdown_table, read_run};
use crate::rundir::RunDir;

/// Whether `dir` holds a sweep: its `sweep.json`, or (from before sweeps wrote one) a run
/// directory a sweep tagged.
fn holds_sweep(dir: &Path) -> bool {
    dir.join(SWEEP_FILE).is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| RunDir::new(e.path()).sweep_tag().is_file())
        })
}

/// Fails unless `path` is absent or begins as wgtrain writes it (`first_line`): a report
/// never replaces a file it did not write.
fn check_ours(path: &Path, first_line: &str) -> Result<()> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(text) if text.lines().next() == Some(first_line) => Ok(()),
        _ => Err(Error::NotOurs {
            path: path.to_path_buf(),
        }),
    }
}

/// First line of results.md.
const RESULTS_TITLE: &str = "# Sweep results";

/// Header of results.csv.
pub const RESULTS_HEADER: &str = "run,setting,seed,overrides,status,best_epoch,epochs_run,best_val_loss,test_accuracy,test_loss,device,seconds";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rebuilds results.csv and results.md in `out` from every finished run directory in it.
/// Returns how many runs it found.
pub fn report(out: &Path) -> Result<usize> {
    crate::error::refuse_non_directory(out, "sweep directory")?;
    if !holds_sweep(out) {
        return Err(Error::NotASweep {
            path: out.to_path_buf(),
        });
    }
    check_ours(&out.join("results.csv"), RESULTS_HEADER)?;
    check_ours(&out.join("results.md"), RESULTS_TITLE)?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && RunDir::new(p).is_finished())
        .collect();
    // Sweep order when the runs carry their tags, else by name.
    dirs.sort_by_key(|d| (read_tag(d).map_or(usize::MAX, |t| t.index), d.clone()));
    let runs: Vec<RunRecord> = dirs.iter().map(|d| read_run(d)).collect::<Result<_>>()?;
    let mut csv = format!("{RESULTS_HEADER}\n");
    for r in &runs {
        let id = r
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let overrides = read_tag(&r.dir)
            .map(|t| t.overrides.join(";"))
            .unwrap_or_default();
        let s = &r.summary;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{},{:.3}\n",
            csv_field(id),
            csv_field(&r.config.name),
            r.config.seed,
            csv_field(&overrides),
            s.status,
            s.best_epoch,
            s.epochs_run,
            s.best_val_loss.map_or(String::new(), |l| format!("{l:.6}")),
            s.test_accuracy,
            s.test_loss,
            s.device,
            s.seconds
        ));
    }
    write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    let md = format!(
        "{RESULTS_TITLE}\n\n{} finished runs in {}; mean ± sample std over seeds.\n\n{}",
        runs.len(),
        out.display(),
        markdown_table(&runs)
    );
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    let mut settings: Vec<(String, Vec<f64>)> = Vec::new();
    for r in &runs {
        match settings.iter_mut().find(|(n, _)| *n == r.config.name) {
            Some((_, accs)) => accs.push(r.summary.test_accuracy),
            None => settings.push((r.config.name.clone(), vec![r.summary.test_accuracy])),
        }
    }
    let bars: Vec<(String, f64, f64)> = settings
        .into_iter()
        .map(|(name, accs)| {
            let (mean, std) = crate::report::mean_std(&accs);
            (name, mean, std)
        })
        .collect();
    if !bars.is_empty() {
        crate::plot::plot_comparison(out, &bars, "Sweep: test accuracy per setting")?;
    }
    Ok(runs.len())
}
