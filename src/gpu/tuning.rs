//! How the kernels are arranged on one adapter: choices that change speed, never results. Each
//! starts at a default, is replaced by what `wgtrain tune` measured fastest on this adapter
//! (saved in the tuning file), and is overridden last by its environment variable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::adapter::AdapterSummary;
use super::error::GpuError;

/// How the kernels are arranged on an open device: choices that change speed, never results
/// (the epoch check runs two arrangements on every adapter, and `tests/gpu.rs` checks every
/// arrangement trains to the same bits), so that one binary can time them on one adapter and
/// keep the fastest ([`TuningFile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Gather and z-score each batch inside the first layer's forward matmul (matmul_gather,
    /// one dispatch fewer per step) instead of a gather_batch dispatch of its own. Every
    /// column of workgroups then decodes the same bytes; on lavapipe that was a wash (±5%
    /// either way at batch 32 and 128, BENCHMARKS.md), and on a GPU a step this small is bound
    /// by dispatches, so it is on by default ([`FUSE_GATHER_VAR`]).
    pub fuse_gather: bool,
    /// How far k advances per pass of matmul's tile loop through workgroup memory (one of
    /// [`Tuning::TILE_K_CHOICES`]). Products are still added in k order, so it changes no
    /// bits, only how many barrier-separated passes a long k takes: the first layer's 784 is
    /// 49 passes at 16 and 13 at 64, in each of only (batch/16)·(128/16) workgroups — on a
    /// large GPU that serial chain, not arithmetic, may bound the forward matmul. 64 was 6–10%
    /// slower on lavapipe (BENCHMARKS.md), so 16 is the default until an adapter is tuned
    /// ([`TILE_K_VAR`]).
    pub tile_k: u32,
    /// Training steps recorded per submission; 0 records the whole epoch (and its validation
    /// pass) into one. The host records a step in microseconds, but the device waits for the
    /// whole recording before it starts: submitting every N steps lets it run the first
    /// steps while the host records the next ones. Submissions are queued in order and the
    /// host still waits once per epoch, so it changes no bits. On lavapipe the epoch is
    /// arithmetic and recording is lost in it, so 0 is the default until an adapter is tuned
    /// ([`SUBMIT_EVERY_VAR`]).
    pub submit_every: u32,
    /// Software-pipeline matmul's tile loop: each pass issues the next pass's loads before it
    /// adds up its own products, so a GPU overlaps a memory latency with arithmetic instead of
    /// waiting it out ~49 times in the first layer's k = 784 at k step 16. Same products in
    /// the same order, so no bits change; it costs registers, and on lavapipe (a CPU, no
    /// latency to hide) it is extra work, so it is off by default until an adapter is tuned
    /// ([`PREFETCH_VAR`]).
    pub prefetch: bool,
}

/// Overrides [`Tuning::fuse_gather`]: `1` fuses, `0` does not (for timing both on one adapter).
pub const FUSE_GATHER_VAR: &str = "WGTRAIN_FUSE_GATHER";
/// Overrides [`Tuning::tile_k`]: `16`, `32` or `64`.
pub const TILE_K_VAR: &str = "WGTRAIN_TILE_K";
/// Overrides [`Tuning::submit_every`]: a whole number of steps, 0 for the whole epoch.
pub const SUBMIT_EVERY_VAR: &str = "WGTRAIN_SUBMIT_EVERY";
/// Overrides [`Tuning::prefetch`]: `1` pipelines matmul's tile loop, `0` does not.
pub const PREFETCH_VAR: &str = "WGTRAIN_PREFETCH";
/// Where the tuning file is [default: `$XDG_CACHE_HOME/wgtrain/tuning.toml`, else
/// `~/.cache/wgtrain/tuning.toml`]; empty: no tuning file at all.
pub const TUNING_FILE_VAR: &str = "WGTRAIN_TUNING_FILE";

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            fuse_gather: true,
            tile_k: 16,
            submit_every: 0,
            prefetch: false,
        }
    }
}

impl Tuning {
    /// The k steps matmul.wgsl supports: multiples of its 16-wide tile (each invocation loads
    /// tile_k / 16 elements of A and of B per pass) whose two tiles fit WebGPU's minimum
    /// 16 KiB of workgroup memory.
    pub const TILE_K_CHOICES: [u32; 3] = [16, 32, 64];

    /// The steps per submission `wgtrain tune` tries (0: the whole epoch).
    pub const SUBMIT_EVERY_CHOICES: [u32; 2] = [0, 64];

    /// Every arrangement `wgtrain tune` times, the default first.
    pub fn candidates() -> Vec<Tuning> {
        let mut all = vec![Tuning::default()];
        for fuse_gather in [true, false] {
            for tile_k in Tuning::TILE_K_CHOICES {
                for submit_every in Tuning::SUBMIT_EVERY_CHOICES {
                    for prefetch in [false, true] {
                        let t = Tuning {
                            fuse_gather,
                            tile_k,
                            submit_every,
                            prefetch,
                        };
                        if !all.contains(&t) {
                            all.push(t);
                        }
                    }
                }
            }
        }
        all
    }

    /// The settings that differ from the defaults, as `VAR=value` ("" when none), so that a
    /// timing taken with one says so (and how to repeat it).
    pub fn changes(&self) -> String {
        let default = Tuning::default();
        let mut changed = Vec::new();
        if self.fuse_gather != default.fuse_gather {
            changed.push(format!("{FUSE_GATHER_VAR}={}", u8::from(self.fuse_gather)));
        }
        if self.tile_k != default.tile_k {
            changed.push(format!("{TILE_K_VAR}={}", self.tile_k));
        }
        if self.submit_every != default.submit_every {
            changed.push(format!("{SUBMIT_EVERY_VAR}={}", self.submit_every));
        }
        if self.prefetch != default.prefetch {
            changed.push(format!("{PREFETCH_VAR}={}", u8::from(self.prefetch)));
        }
        changed.join(" ")
    }

    /// An epoch of `steps` training steps as the parts it is submitted in
    /// ([`Tuning::submit_every`]): the whole epoch, or runs of `submit_every` steps and the
    /// remainder last. The last part also carries the validation pass and the read-back.
    pub fn submission_parts(&self, steps: usize) -> Vec<std::ops::Range<usize>> {
        match self.submit_every as usize {
            0 => std::iter::once(0..steps).collect(),
            every => (0..steps.max(1))
                .step_by(every)
                .map(|first| first..(first + every).min(steps))
                .collect(),
        }
    }

    /// [`Tuning::changes`], or "defaults" when there are none: how tables name an arrangement.
    pub fn label(&self) -> String {
        let changes = self.changes();
        if changes.is_empty() {
            "defaults".to_string()
        } else {
            changes
        }
    }

    /// Bytes of workgroup memory matmul.wgsl needs at this k step (its two tiles).
    pub fn workgroup_storage_bytes(&self) -> u32 {
        2 * 16 * self.tile_k * 4
    }

    fn check(&self) -> Result<(), String> {
        if Tuning::TILE_K_CHOICES.contains(&self.tile_k) {
            Ok(())
        } else {
            Err(format!("tile_k must be 16, 32 or 64, got {}", self.tile_k))
        }
    }
}

/// The tuning environment variables that are set, read (and checked) before any adapter is
/// looked for, so a mistyped one is reported first on every machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TuningOverrides {
    pub fuse_gather: Option<bool>,
    pub tile_k: Option<u32>,
    pub submit_every: Option<u32>,
    pub prefetch: Option<bool>,
}

impl TuningOverrides {
    pub fn from_env() -> Result<Self, GpuError> {
        let switch = |v: &str| match v {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        };
        Ok(TuningOverrides {
            fuse_gather: setting(FUSE_GATHER_VAR, "0 or 1", switch)?,
            tile_k: setting(TILE_K_VAR, "16, 32 or 64", |v| {
                v.parse()
                    .ok()
                    .filter(|k| Tuning::TILE_K_CHOICES.contains(k))
            })?,
            submit_every: setting(
                SUBMIT_EVERY_VAR,
                "a whole number of steps (0: the whole epoch)",
                |v| v.parse().ok(),
            )?,
            prefetch: setting(PREFETCH_VAR, "0 or 1", switch)?,
        })
    }

    /// `base` with every set variable in its place.
    pub fn apply(&self, base: Tuning) -> Tuning {
        Tuning {
            fuse_gather: self.fuse_gather.unwrap_or(base.fuse_gather),
            tile_k: self.tile_k.unwrap_or(base.tile_k),
            submit_every: self.submit_every.unwrap_or(base.submit_every),
            prefetch: self.prefetch.unwrap_or(base.prefetch),
        }
    }
}

/// The environment variable `variable` read by `parse`, or `None` when it is unset.
fn setting<T>(
    variable: &'static str,
    expected: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, GpuError> {
    match std::env::var(variable) {
        Ok(v) => parse(&v).map(Some).ok_or(GpuError::BadSetting {
            variable,
            expected,
            got: v,
        }),
        Err(_) => Ok(None),
    }
}

/// One adapter's measured arrangement in the tuning file. An adapter is the same one when its
/// name, backend and driver are: a new driver is tuned again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedAdapter {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub fuse_gather: bool,
    pub tile_k: u32,
    pub submit_every: u32,
    /// Absent in files written before the knob existed: off, as it was then.
    #[serde(default)]
    pub prefetch: bool,
    /// What was measured, for the reader: workload, batch size, seconds per epoch.
    #[serde(default)]
    pub measured: String,
}

impl TunedAdapter {
    fn is(&self, adapter: &AdapterSummary) -> bool {
        self.name == adapter.name
            && self.backend == adapter.backend
            && self.driver == adapter.driver
    }

    pub fn tuning(&self) -> Tuning {
        Tuning {
            fuse_gather: self.fuse_gather,
            tile_k: self.tile_k,
            submit_every: self.submit_every,
            prefetch: self.prefetch,
        }
    }
}

/// The tuning file: the arrangement `wgtrain tune` measured fastest, per adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningFile {
    #[serde(default)]
    pub adapter: Vec<TunedAdapter>,
}

impl TuningFile {
    /// The adapters as `wgtrain devices` lists them: a Markdown table of what wgtrain knows of
    /// each, and the arrangement a GPU run on it starts from (this file's, or the defaults).
    pub fn adapters_table(&self, adapters: &[AdapterSummary]) -> String {
        let mut table = String::from(
            "| index | name | backend | type | driver | PCI bus | max storage binding (bytes) | max workgroup storage (bytes) | max invocations/workgroup | timestamps | tuning |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in adapters {
            let tuning = match self.find(s) {
                Some(t) => format!("tuned: {}", t.label()),
                None => "defaults".to_string(),
            };
            let bus = if s.pci_bus_id.is_empty() {
                "—"
            } else {
                &s.pci_bus_id
            };
            table.push_str(&format!(
                "| {} | {} | {} | {} | {} | {bus} | {} | {} | {} | {} | {tuning} |\n",
                s.index,
                s.name,
                s.backend,
                s.device_type,
                s.driver,
                s.max_storage_buffer_binding_size,
                s.max_compute_workgroup_storage_size,
                s.max_compute_invocations_per_workgroup,
                if s.timestamp_queries { "yes" } else { "no" },
            ));
        }
        table
    }
}

impl TuningFile {
    /// The tuning file's path: [`TUNING_FILE_VAR`], else the user's cache directory; `None`
    /// when the variable is empty or no cache directory is known.
    pub fn path() -> Option<PathBuf> {
        match std::env::var_os(TUNING_FILE_VAR) {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(PathBuf::from(p)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|d| d.join("wgtrain").join("tuning.toml")),
        }
    }

    fn error(path: &Path, message: impl std::fmt::Display) -> GpuError {
        GpuError::TuningFile {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// The file at `path`; an empty one when it does not exist, nor can (a cache directory
    /// such as `XDG_CACHE_HOME=/dev/null` that is not a directory: the file is a cache of
    /// speed measurements, and without it every arrangement trains to the same bits).
    pub fn load(path: &Path) -> Result<TuningFile, GpuError> {
        use std::io::ErrorKind::{NotADirectory, NotFound};
        let text = match crate::files::read_to_string(path) {
            Ok(t) => t,
            Err(e) if matches!(e.kind(), NotFound | NotADirectory) => {
                return Ok(TuningFile::default());
            }
            Err(e) => return Err(Self::error(path, e)),
        };
        let file: TuningFile = toml::from_str(&text)
            .map_err(|e| Self::error(path, crate::config::toml_error_line(&text, &e)))?;
        for entry in &file.adapter {
            entry
                .tuning()
                .check()
                .map_err(|m| Self::error(path, format!("adapter {:?}: {m}", entry.name)))?;
        }
        Ok(file)
    }

    /// The arrangement measured for `adapter`, if any.
    pub fn find(&self, adapter: &AdapterSummary) -> Option<Tuning> {
        self.adapter
            .iter()
            .find(|a| a.is(adapter))
            .map(TunedAdapter::tuning)
    }

    /// Records `tuning` as `adapter`'s, replacing what was there for it.
    pub fn record(&mut self, adapter: &AdapterSummary, tuning: Tuning, measured: String) {
        self.adapter.retain(|a| !a.is(adapter));
        self.adapter.push(TunedAdapter {
            name: adapter.name.clone(),
            backend: adapter.backend.clone(),
            driver: adapter.driver.clone(),
            fuse_gather: tuning.fuse_gather,
            tile_k: tuning.tile_k,
            submit_every: tuning.submit_every,
            prefetch: tuning.prefetch,
            measured,
        });
    }

    /// Writes the file atomically (a temporary file renamed over it), making its directory.
    pub fn save(&self, path: &Path) -> Result<(), GpuError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Self::error(path, e))?;
        }
        let text = format!(
            "# wgtrain tune: the fastest kernel arrangement measured per adapter (speed only: every\n\
             # arrangement trains to the same bits). Delete this file to go back to the defaults.\n\n{}",
            toml::to_string(self).map_err(|e| Self::error(path, e))?
        );
        let temporary = path.with_extension("toml.tmp");
        std::fs::write(&temporary, text).map_err(|e| Self::error(path, e))?;
        std::fs::rename(&temporary, path).map_err(|e| Self::error(path, e))
    }

    /// The tuning file at [`TuningFile::path`] (empty when there is none).
    pub fn load_configured() -> Result<TuningFile, GpuError> {
        match TuningFile::path() {
            Some(path) => TuningFile::load(&path),
            None => Ok(TuningFile::default()),
        }
    }

    /// The arrangement for `adapter`: the defaults, replaced by this file's entry for it,
    /// overridden by the environment.
    pub fn tuning_for(&self, adapter: &AdapterSummary, overrides: &TuningOverrides) -> Tuning {
        overrides.apply(self.find(adapter).unwrap_or_default())
    }
}
