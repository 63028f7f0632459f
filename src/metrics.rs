//! Run outputs other tools read: `metrics.csv` (one row per epoch, appended and flushed as
//! each epoch ends) and `summary.json` (written atomically at the end), and the one way the
//! JSON records of runs and sweeps are written and read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::train::EpochRecord;

/// A UTC date and time of day, from the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    /// Now (the Unix epoch if the clock reads earlier).
    pub fn now() -> Self {
        let secs = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::from_unix_secs(secs)
    }

    pub fn from_unix_secs(secs: u64) -> Self {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One column of `metrics.csv`: its name, the decimals it is written with (`None`: a whole
/// number), and where an [`EpochRecord`] keeps it.
pub struct MetricsColumn {
    pub name: &'static str,
    pub decimals: Option<usize>,
    pub get: fn(&EpochRecord) -> f64,
    pub set: fn(&mut EpochRecord, f64),
}

/// The columns of `metrics.csv`, in order: the one place they are declared. The writer, the
/// reader a resume uses, the header and the page's per-epoch report are made from it; the
/// header is part of the CLI contract.
pub const METRICS_COLUMNS: [MetricsColumn; 6] = [
    MetricsColumn {
        name: "epoch",
        decimals: None,
        get: |r| r.epoch as f64,
        set: |r, v| r.epoch = v as usize,
    },
    MetricsColumn {
        name: "train_loss",
        decimals: Some(6),
        get: |r| r.train_loss,
        set: |r, v| r.train_loss = v,
    },
    MetricsColumn {
        name: "train_accuracy",
        decimals: Some(6),
        get: |r| r.train_accuracy,
        set: |r, v| r.train_accuracy = v,
    },
    MetricsColumn {
        name: "val_loss",
        decimals: Some(6),
        get: |r| r.val_loss,
        set: |r, v| r.val_loss = v,
    },
    MetricsColumn {
        name: "val_accuracy",
        decimals: Some(6),
        get: |r| r.val_accuracy,
        set: |r, v| r.val_accuracy = v,
    },
    MetricsColumn {
        name: "seconds",
        decimals: Some(3),
        get: |r| r.seconds,
        set: |r, v| r.seconds = v,
    },
];

/// The header line of `metrics.csv`, without its newline.
pub fn metrics_header() -> String {
    let names: Vec<&str> = METRICS_COLUMNS.iter().map(|c| c.name).collect();
    names.join(",")
}

/// The record a `metrics.csv` row (without its newline) holds; `None` when it is not one.
pub fn parse_metrics_row(line: &str) -> Option<EpochRecord> {
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != METRICS_COLUMNS.len() {
        return None;
    }
    let mut record = EpochRecord::default();
    for (column, field) in METRICS_COLUMNS.iter().zip(fields) {
        (column.set)(&mut record, field.parse::<f64>().ok()?);
    }
    Some(record)
}

/// Keeps `metrics.csv` current: after every epoch the whole file (header and every row so far)
/// is rewritten atomically, so an interrupted run keeps every finished epoch and a failed write
/// never leaves a half-written file.
pub struct MetricsWriter {
    text: String,
    path: PathBuf,
}

impl MetricsWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Self::resume(path, &[])
    }

    /// Continues a run's metrics.csv after its first `records.len()` epochs (rows beyond them,
    /// written after the checkpoint a resume starts from, are dropped).
    pub fn resume(path: &Path, records: &[EpochRecord]) -> Result<Self> {
        let writer = MetricsWriter {
            text: metrics_csv(records),
            path: path.to_path_buf(),
        };
        write_atomic(path, writer.text.as_bytes())?;
        Ok(writer)
    }

    pub fn append(&mut self, r: &EpochRecord) -> Result<()> {
        self.push(r);
        write_atomic(&self.path, self.text.as_bytes())?;
        Ok(())
    }

    fn push(&mut self, r: &EpochRecord) {
        self.text.push_str(&metrics_row(r));
    }
}

/// One row of `metrics.csv`, with its newline.
fn metrics_row(r: &EpochRecord) -> String {
    let fields: Vec<String> = (METRICS_COLUMNS.iter())
        .map(|c| match c.decimals {
            Some(decimals) => format!("{:.*}", decimals, (c.get)(r)),
            None => format!("{}", (c.get)(r) as u64),
        })
        .collect();
    format!("{}\n", fields.join(","))
}

/// The whole text of `metrics.csv` for `records` (what a browser page offers for download).
pub fn metrics_csv(records: &[EpochRecord]) -> String {
    let rows: String = records.iter().map(metrics_row).collect();
    format!("{}\n{rows}", metrics_header())
}

/// What a run a pruning sweep stopped at a rung says in its summary's `status`.
pub const PRUNED: &str = "pruned";

/// `summary.json`: the run's outcome. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub status: String,
    /// NaN (null in the file) for a run never evaluated on the test split: a pruned one.
    #[serde(deserialize_with = "null_as_nan")]
    pub test_accuracy: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub test_loss: f64,
    pub best_epoch: usize,
    /// `None` when no epoch finished (a run that diverged in its first epoch).
    pub best_val_loss: Option<f64>,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub diverged: bool,
    pub device: String,
    pub device_detail: String,
    /// GPU runs: the adapter's name and wgpu backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// GPU runs: the adapter's index in `wgtrain devices`, its PCI bus id where the backend
    /// reports one, and what chose it (`--adapter 1`, `CUDA_VISIBLE_DEVICES=1`; absent where
    /// wgtrain took the best adapter it found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_chosen_by: Option<String>,
    pub seed: u64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the run finished but its result is suspect (see `run::worse_than_untrained`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// What trained which epochs: one leg, or several for a run resumed on another device or
    /// thread count (`device_detail` names the last in full).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<crate::checkpoint::Leg>,
}

/// A number, or NaN where the file says null (serde_json writes a NaN as null).
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Summary {
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// ", stopped early" where the run stopped early, else nothing: the words a line about
    /// the run adds.
    pub fn stopped_early_words(&self) -> &'static str {
        match self.stopped_early {
            true => ", stopped early",
            false => "",
        }
    }

    /// What a user should know about the run's legs, where it has more than one: that sums
    /// on another device round differently, or which keys a resume changed. (Another CPU
    /// thread count changes no bit, so it goes without a word.)
    pub fn legs_note(&self) -> Option<String> {
        let legs = crate::checkpoint::Leg::describe(&self.legs);
        if self.legs.windows(2).any(|w| !w[0].rounds_as(&w[1])) {
            Some(format!(
                "trained {legs}: sums on another device round differently, so the run differs from one trained on one throughout (summary.json lists each leg)"
            ))
        } else if self.legs.iter().any(|l| !l.changed.is_empty()) {
            Some(format!(
                "trained {legs} (config.toml holds the latest values; summary.json lists each leg)"
            ))
        } else {
            None
        }
    }

    /// Why a resume trained nothing, and how to go further.
    pub fn nothing_left_note(&self) -> String {
        let further = match self.stopped_early {
            true => ", with a larger patience or early_stopping=false",
            false => "",
        };
        format!(
            "had nothing left to train ({} epochs done{}); --set epochs=N goes further{further}",
            self.epochs_run,
            self.stopped_early_words(),
        )
    }

    /// The line a finished run prints: test accuracy and loss, best epoch, device, time.
    pub fn result_line(&self, out: &Path) -> String {
        format!(
            "{}: test accuracy {:.2}%, test loss {:.4} (best epoch {} of {}{}) on {} in {:.1}s → {}",
            self.name,
            100.0 * self.test_accuracy,
            self.test_loss,
            self.best_epoch,
            self.epochs_run,
            self.stopped_early_words(),
            self.device_detail,
            self.seconds,
            out.display()
        )
    }
}

/// Writes `value` to `path` as pretty JSON with a final newline, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Usage(e.to_string()))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// The JSON file at `path`; unreadable or malformed, an error naming it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::files::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_json(path, &text)
}

/// [`read_json`], or `None` where there is no file (a record older versions did not write).
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match crate::files::read_to_string(path) {
        Ok(text) => parse_json(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// `42 s`, `17 min`, `3.5 h`.
pub fn duration_words(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// A speed ratio in words: `speed` 4.2 reads "4.20× faster", 0.0055 "183× slower" (a bare
/// "0.01×" makes the reader do the division); `–` where it is not a finite ratio.
pub fn faster_or_slower(speed: f64) -> String {
    let (factor, word) = if speed >= 1.0 {
        (speed, "faster")
    } else {
        (1.0 / speed, "slower")
    };
    if !factor.is_finite() {
        return "–".into();
    }
    let digits = if factor >= 10.0 { 0 } else { 2 };
    format!("{factor:.digits$}× {word}")
}
