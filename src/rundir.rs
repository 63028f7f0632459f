//! The layout of a run directory: which file holds what, the lock, and reading back what a run
//! wrote. The only module that spells a run file's name; the files' formats live with their
//! writers (`metrics`, `checkpoint`, `config`), and nothing here trains.

use std::path::{Path, PathBuf};

use crate::config::TrainConfig;
use crate::data::DataIdentity;
use crate::error::{Error, Result};
use crate::metrics::Summary;
use crate::train::EpochRecord;

/// The resolved config (file + `--set` + `--seed`).
const CONFIG: &str = "config.toml";
/// One row per finished epoch.
const METRICS: &str = "metrics.csv";
/// The outcome, written when the run ends: its presence marks a finished (or diverged) run.
const SUMMARY: &str = "summary.json";
/// The best-validation weights.
const MODEL: &str = "model.safetensors";
/// The state to go on from, after every epoch.
const CHECKPOINT: &str = "last.safetensors";
/// Held while a run trains into the directory.
const LOCK: &str = ".lock";
/// The data the run trained on ([`DataIdentity`]).
const DATA: &str = "data.json";
/// A sweep directory's record of itself (its data, its pruning), beside its runs.
pub const SWEEP_RECORD: &str = "sweep.json";
/// A sweep's record of the run's place in it.
const SWEEP_TAG: &str = "sweep_run.json";
/// Every name a run writes in its directory: the files above, the curves `plot` draws and
/// the confusion matrix `eval` draws beside the model.
const RUN_FILES: [&str; 14] = [
    CONFIG,
    METRICS,
    SUMMARY,
    MODEL,
    CHECKPOINT,
    LOCK,
    DATA,
    SWEEP_TAG,
    "accuracy.png",
    "accuracy.svg",
    "loss.png",
    "loss.svg",
    "confusion.png",
    "confusion.svg",
];

/// The entries of `dir` that wgtrain did not write, by name, sorted: every entry but
/// `ours` and the temporary files of an interrupted atomic write (`.NAME.tmp-PID`,
/// `.tmp-PID-NAME`). A directory that cannot be listed (or does not exist) has none.
pub fn foreign_entries(dir: &Path, ours: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let temporary =
                name.starts_with(".tmp-") || (name.starts_with('.') && name.contains(".tmp-"));
            !temporary && !ours(name)
        })
        .collect();
    names.sort();
    names
}

/// `names` for a message: the first few, and how many more.
/// Where a run of `name` goes unless told: `runs/<name>-<UTC timestamp>`.
pub fn default_run_dir(name: &str) -> PathBuf {
    let t = crate::metrics::UtcTime::now();
    PathBuf::from("runs").join(format!(
        "{name}-{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    ))
}

pub fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// A run directory (which need not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG)
    }

    pub fn metrics(&self) -> PathBuf {
        self.path.join(METRICS)
    }

    pub fn summary(&self) -> PathBuf {
        self.path.join(SUMMARY)
    }

    pub fn model(&self) -> PathBuf {
        self.path.join(MODEL)
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.path.join(CHECKPOINT)
    }

    pub fn sweep_tag(&self) -> PathBuf {
        self.path.join(SWEEP_TAG)
    }

    /// Whether the directory holds a run, finished or not (so a new one needs `--force`).
    pub fn holds_run(&self) -> bool {
        [SUMMARY, METRICS, MODEL, CONFIG]
            .iter()
            .any(|f| self.path.join(f).exists())
    }

    /// Refuses a directory that holds what a run did not write (unless `force`: then the run
    /// writes its files beside them, replacing only its own names). In a directory that holds
    /// no run, every file counts as the user's, even one named like a run's picture.
    pub fn refuse_foreign_files(&self, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        let holds_run = self.holds_run();
        let foreign = foreign_entries(&self.path, |name| {
            name == LOCK || name == SWEEP_TAG || (holds_run && RUN_FILES.contains(&name))
        });
        if foreign.is_empty() {
            return Ok(());
        }
        Err(Error::ForeignFiles {
            what: "run directory",
            path: self.path.clone(),
            names: list_names(&foreign),
            force: ", or --force to write the run beside them: only wgtrain's own files are replaced",
        })
    }

    /// Whether it is a directory holding nothing but what runs write (a run begun, or one
    /// another process is starting: perhaps only its lock or its sweep tag yet).
    pub fn holds_only_run_files(&self) -> bool {
        self.path.is_dir()
            && foreign_entries(&self.path, |name| RUN_FILES.contains(&name)).is_empty()
    }

    /// Whether it holds a finished run (a readable summary, finished or diverged).
    pub fn is_finished(&self) -> bool {
        Summary::read(&self.summary()).is_ok()
    }

    /// Whether it has epochs recorded (a run directory, finished or not).
    pub fn has_metrics(&self) -> bool {
        self.metrics().is_file()
    }

    /// The config.toml the run wrote, as text (`None` when there is none).
    pub fn written_config(&self) -> Option<String> {
        crate::files::read_to_string(self.config()).ok()
    }

    /// The run's config, as it wrote it.
    pub fn read_config(&self) -> Result<TrainConfig> {
        self.read_config_with(&[])
    }

    /// The run's config.toml with `sets` applied (what `--resume` trains with); a directory
    /// without one is no run.
    pub fn read_config_with(&self, sets: &[String]) -> Result<TrainConfig> {
        if !self.config().exists() {
            return Err(self.not_a_run(CONFIG));
        }
        Ok(TrainConfig::load(&self.config(), sets)?)
    }

    /// The error for a directory that lacks `file`, which every run has.
    pub fn not_a_run(&self, file: &str) -> Error {
        let dir = self.path.display();
        Error::Usage(format!("{dir}: not a run directory (no {file})"))
    }

    pub fn read_summary(&self) -> Result<Summary> {
        Summary::read(&self.summary())
    }

    /// Takes the directory's lock for as long as the returned [`RunLock`] lives: a second
    /// process training into the same directory (the same sweep started twice, `--resume` of
    /// a run still going) would interleave its epochs with this one's. The OS drops the lock
    /// when the process ends, however it ends. Where the filesystem cannot lock, the run goes
    /// on unguarded.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.path.join(LOCK);
        let in_use = || Error::RunInUse {
            path: self.path.clone(),
        };
        // A run that ends removes its lock file ([`RunLock`]'s drop); a process that had opened
        // that file just before holds a lock on nothing, so it opens the path again.
        for _ in 0..3 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let held = match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) => return Err(in_use()),
                Err(std::fs::TryLockError::Error(_)) => true,
                Ok(()) => still_at(&file, &path),
            };
            if held {
                return Ok(RunLock { file, path });
            }
        }
        Err(in_use())
    }

    /// Whether another process holds the directory's lock (is training the run) right now.
    /// Probing takes the lock for an instant; a process that asks for it in that instant is
    /// told the run is in use, as if this one were training it.
    pub fn in_use(&self) -> bool {
        let Ok(file) = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(LOCK))
        else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// Removes what marks the end of a run that was here before (summary, checkpoint, model),
    /// before a new run writes anything: stopped early, the new run must not leave the
    /// directory claiming the old one finished, or offering its checkpoint to resume.
    pub fn clear_previous_end(&self) -> Result<()> {
        for stale in [SUMMARY, CHECKPOINT, MODEL] {
            let path = self.path.join(stale);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The data identity the run recorded, or `None` for a run from before runs recorded one.
    pub fn read_data_identity(&self) -> Result<Option<DataIdentity>> {
        crate::metrics::read_json_if_present(&self.path.join(DATA))
    }

    pub fn write_data_identity(&self, identity: &DataIdentity) -> Result<()> {
        crate::metrics::write_json(&self.path.join(DATA), identity)
    }

    /// The first `epochs` rows of metrics.csv as they are.
    pub fn read_metrics(&self, epochs: usize) -> Result<Vec<EpochRecord>> {
        read_metrics(&self.metrics(), epochs)
    }

    /// The first `epochs` rows of metrics.csv, which must be epochs 1 to `epochs` in order: a
    /// file with rows removed or reordered does not belong to the checkpoint, and going on
    /// from it would write epochs 1, 2, 8, 9 and call that four.
    pub fn read_metrics_checked(&self, epochs: usize) -> Result<Vec<EpochRecord>> {
        let path = self.metrics();
        let records = read_metrics(&path, epochs)?;
        let numbers: Vec<usize> = records.iter().map(|r| r.epoch).collect();
        if numbers != (1..=epochs).collect::<Vec<_>>() {
            let text: Vec<String> = numbers.iter().take(12).map(ToString::to_string).collect();
            let shown = match numbers.len() {
                0 => "none".to_string(),
                len if len > 12 => format!("{}, …", text.join(", ")),
                _ => text.join(", "),
            };
            return Err(Error::MetricsMismatch {
                path,
                found: shown,
                epochs,
            });
        }
        Ok(records)
    }
}

/// A run directory's lock ([`RunDir::lock`]), held while this lives. Dropped, however the
/// run ended (finished, refused, interrupted), it removes the lock file, which an ended run
/// has no use for, and lets go: a run directory holds its results and nothing else, and a
/// refused command leaves none behind. Removing it is a courtesy: where it fails the empty
/// file stays, and the run's result stands.
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The first `epochs` rows of the metrics.csv at `path`.
fn read_metrics(path: &Path, epochs: usize) -> Result<Vec<EpochRecord>> {
    let text = crate::files::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line} is not a metrics row"),
            ),
        )
    };
    text.lines()
        .skip(1)
        .take(epochs)
        .enumerate()
        .map(|(i, line)| crate::metrics::parse_metrics_row(line).ok_or_else(|| bad(i + 2)))
        .collect()
}

/// Whether `file` is still the file at `path` (not one removed since it was opened).
#[cfg(unix)]
fn still_at(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(there)) => open.ino() == there.ino() && open.dev() == there.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_at(_file: &std::fs::File, path: &Path) -> bool {
    path.exists()
}
