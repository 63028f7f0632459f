//! Model files: `model.safetensors` with PyTorch's `nn.Linear` and `nn.Conv2d` names and
//! layouts, the model described in the metadata, and the atomic
//! write every output file goes through (temporary name, fsync, rename), so a crash never
//! leaves a half-written file in place of a good one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;

use crate::cpu::CpuKernels;
use crate::model::{Activation, Network, Params, first_unusable};
use crate::model::{ImageShape, LayerSpec, layers_of};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{kind} {path} is truncated or is not a safetensors file ({message}) (hint: {hint})")]
    Unreadable {
        kind: &'static str,
        path: PathBuf,
        message: String,
        hint: &'static str,
    },
    #[error("{kind} {path} holds {value} in {tensor}: not a usable network (hint: {hint})")]
    NotFinite {
        kind: &'static str,
        path: PathBuf,
        tensor: String,
        value: f32,
        hint: &'static str,
    },
}

/// What a safetensors file is to its reader, for its errors.
#[derive(Debug, Clone, Copy)]
enum FileKind {
    Model,
    Checkpoint,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Model => "model file",
            FileKind::Checkpoint => "checkpoint",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            FileKind::Model => "train the model again, or point --model at another file",
            FileKind::Checkpoint => "the run cannot go on from it; train it again with --force",
        }
    }

    /// The error for bytes the safetensors parser refuses.
    fn unreadable(self, path: &Path, e: safetensors::SafeTensorError) -> CheckpointError {
        CheckpointError::Unreadable {
            kind: self.name(),
            path: path.to_path_buf(),
            message: e.to_string(),
            hint: self.hint(),
        }
    }

    /// Fails on the first non-finite value of `values` (laid out like `model`'s parameters).
    fn check_finite(
        self,
        path: &Path,
        model: &Network,
        values: &[f32],
    ) -> Result<(), CheckpointError> {
        match first_unusable(model, values, false) {
            Some((tensor, value)) => Err(CheckpointError::NotFinite {
                kind: self.name(),
                path: path.to_path_buf(),
                tensor,
                value,
                hint: self.hint(),
            }),
            None => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the contents produced by `write`. If `write` (or the sync or
/// rename) fails, the temporary file is removed and whatever `path` held before is untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Serialises parameters as safetensors: `fc{i}.weight` (O, I), `fc{i}.bias` (O),
/// `conv{i}.weight` (O, C, K, K), `conv{i}.bias` (O), f32 little-endian, with the model in the
/// metadata ([`model_metadata`]), then any `flat`
/// extra tensors (1-D) and `extra` metadata (which may replace the defaults, `format` included).
///
/// The header is written here rather than by `safetensors::serialize`, which takes the
/// metadata as a `HashMap` and so writes its keys in a different order in every process: two
/// identical runs would leave model files that differ. Here the metadata keys and the tensors
/// are in name order (the tensors' order is the one `safetensors` itself uses for one dtype),
/// so identical parameters give identical bytes.
fn encode(
    params: &Params,
    flat: &[(&str, &[f32])],
    extra: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = params.named_tensors();
    tensors.extend(
        flat.iter()
            .map(|(name, values)| (name.to_string(), vec![values.len()], *values)),
    );
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.extend(model_metadata(&params.model)?);
    for (k, v) in extra {
        metadata.insert((*k).to_string(), v.clone());
    }
    let mut header = format!("{{\"__metadata__\":{}", json(&metadata)?);
    let mut offset = 0;
    for (name, shape, values) in &tensors {
        let end = offset + 4 * values.len();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            json(name)?,
            json(shape)?
        ));
        offset = end;
    }
    header.push('}');
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for (_, _, values) in &tensors {
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(bytes)
}

/// The metadata that says what `model` is: for a network a `layers` list declares, its
/// `layers` (JSON list of widths) and `activation`, as every model file before networks of other
/// layers had; for any other, its `network` (JSON list of its layers as a config writes them,
/// every key given) and `input` ([C, H, W]).
fn model_metadata(model: &Network) -> Result<Vec<(String, String)>, String> {
    if let Some((widths, activation)) = model.declared_widths() {
        return Ok(vec![
            ("layers".into(), json(&widths)?),
            ("activation".into(), activation.name().into()),
        ]);
    }
    let specs: Vec<LayerSpec> = model.spec.iter().map(|l| l.spec()).collect();
    let input = [model.input.channels, model.input.height, model.input.width];
    Ok(vec![
        ("network".into(), json(&specs)?),
        ("input".into(), json(&input)?),
    ])
}

/// The model [`model_metadata`] described; the message says what is missing or wrong.
fn model_from_metadata(
    info: &std::collections::HashMap<String, String>,
) -> Result<Network, String> {
    if let Some(network) = info.get("network") {
        let specs: Vec<LayerSpec> =
            serde_json::from_str(network).map_err(|e| format!("metadata \"network\": {e}"))?;
        let input: [usize; 3] = info
            .get("input")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or("metadata lacks a readable \"input\" [C, H, W]")?;
        let layers = layers_of(&specs).map_err(|e| format!("metadata \"network\": {e}"))?;
        let classes = match layers.last() {
            Some(crate::model::Layer::Dense { units, .. }) => *units,
            _ => 0,
        };
        let input = ImageShape {
            channels: input[0],
            height: input[1],
            width: input[2],
        };
        return Network::plan(input, &layers, classes)
            .map_err(|e| format!("metadata \"network\": {e}"));
    }
    let widths: Vec<usize> = info
        .get("layers")
        .ok_or_else(|| "metadata lacks \"layers\"".to_string())
        .and_then(|s| serde_json::from_str(s).map_err(|e| format!("metadata \"layers\": {e}")))?;
    if widths.len() < 2 || widths.contains(&0) {
        return Err(format!("metadata \"layers\" = {widths:?} is not a network"));
    }
    let params = crate::model::param_count_u128(&widths);
    if params > crate::model::MAX_COUNT
        || widths.iter().any(|&w| w as u128 > crate::model::MAX_COUNT)
    {
        return Err(format!(
            "metadata \"layers\" = {widths:?} declares {params} parameters, more than any model can have"
        ));
    }
    let activation = info
        .get("activation")
        .and_then(|a| Activation::parse(a))
        .ok_or("metadata lacks a known \"activation\"")?;
    Network::dense(&widths, activation).map_err(|e| format!("metadata \"layers\": {e}"))
}

/// `value` as JSON.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// A model file's bytes: the parameters and their metadata, plus `extra` metadata.
pub fn model_bytes(params: &Params, extra: &[(&str, String)]) -> Result<Vec<u8>, String> {
    encode(params, &[], extra)
}

/// Writes `model.safetensors` (or any path) atomically.
pub fn save_model(
    path: &Path,
    params: &Params,
    extra: &[(&str, String)],
) -> Result<(), CheckpointError> {
    // No file that claims to be a model ever holds a non-finite value (training refuses such
    // parameters before it saves; this is the last guard).
    FileKind::Model.check_finite(path, &params.model, &params.values)?;
    let bytes = model_bytes(params, extra).map_err(|message| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    })?;
    write_atomic(path, &bytes)
}

/// Reads a model written by [`save_model`], checking every tensor's name, shape and dtype.
pub fn load_model(path: &Path) -> Result<Params, CheckpointError> {
    let bytes = crate::files::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    params_from_bytes(&bytes, path, FileKind::Model)
}

/// The parameters of a model or checkpoint file's bytes; `path` labels errors.
fn params_from_bytes(bytes: &[u8], path: &Path, kind: FileKind) -> Result<Params, CheckpointError> {
    let bad = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| kind.unreadable(path, e))?;
    let info = meta.metadata().clone().unwrap_or_default();
    let model = std::sync::Arc::new(model_from_metadata(&info).map_err(bad)?);
    // Before anything is allocated for them: a few bytes of metadata may declare billions.
    let declared = model.param_count as u128 * 4;
    if declared > bytes.len() as u128 {
        return Err(bad(format!(
            "its metadata declares {} parameters ({declared} bytes), more than the file's {} bytes hold",
            model.param_count,
            bytes.len()
        )));
    }
    let tensors =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| kind.unreadable(path, e))?;
    let mut values = vec![0.0f32; model.param_count];
    for tensor in model.tensors() {
        let name = &tensor.name;
        let t = tensors
            .tensor(name)
            .map_err(|_| bad(format!("missing tensor {name}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != tensor.dims.as_slice() {
            return Err(bad(format!(
                "tensor {name} is {:?} {:?}, expected F32 {:?}",
                t.dtype(),
                t.shape(),
                tensor.dims
            )));
        }
        let range = tensor.offset..tensor.offset + tensor.len();
        for (dst, chunk) in values[range].iter_mut().zip(t.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    kind.check_finite(path, &model, &values)?;
    Ok(Params { model, values })
}

/// Version tag of `last.safetensors`.
const CHECKPOINT_FORMAT: &str = "wgtrain-checkpoint-1";

/// Writes `last.safetensors`: the parameters (as in model files), the kept best parameters, the
/// optimiser's buffers and step, the epochs done and the early-stopping state. Shuffles need no
/// RNG state: each epoch's order is a function of (seed, epoch) alone.
pub fn save_checkpoint(
    path: &Path,
    model: &std::sync::Arc<Network>,
    state: &crate::engine::TrainingState,
    epochs_done: usize,
    stopping: &crate::train::EarlyStopping,
    untrained_val_loss: Option<f64>,
    legs: &[Leg],
) -> Result<(), CheckpointError> {
    let bad = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    for values in [&state.params, &state.best, &state.first, &state.second] {
        FileKind::Checkpoint.check_finite(path, model, values)?;
    }
    let params = Params {
        model: std::sync::Arc::clone(model),
        values: state.params.clone(),
    };
    let flat: [(&str, &[f32]); 3] = [
        ("best.flat", &state.best),
        ("optimizer.first", &state.first),
        ("optimizer.second", &state.second),
    ];
    let mut meta = vec![
        ("format", CHECKPOINT_FORMAT.to_string()),
        ("epochs_done", epochs_done.to_string()),
        ("optimizer_step", state.step.to_string()),
        (
            "early_stopping",
            serde_json::to_string(stopping).map_err(|e| bad(e.to_string()))?,
        ),
    ];
    if let Some(loss) = untrained_val_loss {
        meta.push(("untrained_val_loss", loss.to_string()));
    }
    if !legs.is_empty() {
        meta.push((
            "legs",
            serde_json::to_string(legs).map_err(|e| bad(e.to_string()))?,
        ));
    }
    let bytes = encode(&params, &flat, &meta).map_err(bad)?;
    write_atomic(path, &bytes)
}

/// Epochs `first_epoch..=last_epoch` of a run, trained on `device` (the engine's own
/// description: `cpu (2 threads, avx512f kernels)`, or the adapter). A run resumed elsewhere
/// has several. On another CPU thread count it is still bit for bit the run an uninterrupted
/// one would be (the CPU path's sums do not depend on its threads, nor on its x86-64 kernel
/// set); on another device it is not ([`Leg::rounds_as`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leg {
    pub first_epoch: usize,
    pub last_epoch: usize,
    pub device: String,
    /// The hyperparameters a resume changed from this leg on ("optimizer from \"sgd\" to
    /// \"adam\""): config.toml holds the latest values, this says since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

impl Leg {
    /// `legs` with epoch `epoch` trained on `device` added: the last leg extended when it
    /// is the same device's, ends the epoch before and nothing `changed`, else a new leg.
    pub fn extend(legs: &mut Vec<Leg>, epoch: usize, device: &str, changed: Vec<String>) {
        match legs.last_mut() {
            Some(leg)
                if leg.device == device && leg.last_epoch + 1 == epoch && changed.is_empty() =>
            {
                leg.last_epoch = epoch;
            }
            _ => legs.push(Leg {
                first_epoch: epoch,
                last_epoch: epoch,
                device: device.to_string(),
                changed,
            }),
        }
    }

    /// Whether this leg and `other` round their sums alike: the same device, where a CPU's
    /// thread count does not count (the CPU path splits its sums where the data says, never
    /// where the threads do) and its kernel set counts only across families
    /// ([`CpuKernels::sums_as`]: `cpu (2 threads, avx512f kernels)` rounds as
    /// `cpu (1 thread, avx2+fma kernels)`). A CPU leg that names no kernels (written before
    /// legs did, by a build whose kernels summed as today's on the machines it ran on) rounds
    /// as any CPU leg, as it was taken to then.
    pub fn rounds_as(&self, other: &Leg) -> bool {
        // `Some(family)` for a CPU leg (`None` inside where it names no kernels), else `None`.
        let cpu_family = |device: &str| {
            let rest = device.strip_prefix("cpu (")?;
            Some(
                (rest.split_once(", "))
                    .and_then(|(_, k)| k.strip_suffix(" kernels)"))
                    .and_then(CpuKernels::named)
                    .map(CpuKernels::sums_as),
            )
        };
        match (cpu_family(&self.device), cpu_family(&other.device)) {
            (Some(a), Some(b)) => a.is_none() || b.is_none() || a == b,
            (None, None) => self.device == other.device,
            _ => false,
        }
    }

    /// "epochs 1–9 on cpu (1 thread, avx2+fma kernels), 10–12 on cpu (2 threads, avx2+fma
    /// kernels) with momentum from true to false".
    pub fn describe(legs: &[Leg]) -> String {
        let parts: Vec<String> = legs
            .iter()
            .map(|l| {
                let epochs = match l.first_epoch == l.last_epoch {
                    true => l.first_epoch.to_string(),
                    false => format!("{}–{}", l.first_epoch, l.last_epoch),
                };
                match l.changed.is_empty() {
                    true => format!("{epochs} on {}", l.device),
                    false => format!("{epochs} on {} with {}", l.device, l.changed.join(", ")),
                }
            })
            .collect();
        format!("epochs {}", parts.join(", "))
    }
}

/// What [`load_checkpoint`] returns.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub model: std::sync::Arc<Network>,
    pub state: crate::engine::TrainingState,
    pub epochs_done: usize,
    pub stopping: crate::train::EarlyStopping,
    /// The run's untrained validation loss (absent from checkpoints that predate it).
    pub untrained_val_loss: Option<f64>,
    /// What trained its epochs (empty in checkpoints that predate the record).
    pub legs: Vec<Leg>,
}

impl Checkpoint {
    /// The legs that trained its epochs; one of an unknown device for a checkpoint from
    /// before legs were recorded.
    pub fn legs_so_far(&self) -> Vec<Leg> {
        if self.legs.is_empty() && self.epochs_done > 0 {
            return vec![Leg {
                first_epoch: 1,
                last_epoch: self.epochs_done,
                device: "(not recorded)".into(),
                changed: Vec::new(),
            }];
        }
        self.legs.clone()
    }
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bad = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let bytes = crate::files::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = FileKind::Checkpoint;
    let params = params_from_bytes(&bytes, path, kind)?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| kind.unreadable(path, e))?;
    let info = meta.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(bad(format!(
            "not a wgtrain checkpoint (format {:?})",
            info.get("format")
        )));
    }
    let number = |key: &str| -> Result<u64, CheckpointError> {
        info.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata lacks a number {key:?}")))
    };
    let stopping = info
        .get("early_stopping")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("metadata lacks a readable \"early_stopping\"".into()))?;
    let tensors =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| kind.unreadable(path, e))?;
    let flat = |name: &str| -> Result<Vec<f32>, CheckpointError> {
        let t = tensors
            .tensor(name)
            .map_err(|_| bad(format!("missing tensor {name}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != [params.values.len()] {
            return Err(bad(format!(
                "tensor {name} is {:?} {:?}, expected F32 [{}]",
                t.dtype(),
                t.shape(),
                params.values.len()
            )));
        }
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        kind.check_finite(path, &params.model, &values)?;
        Ok(values)
    };
    Ok(Checkpoint {
        state: crate::engine::TrainingState {
            best: flat("best.flat")?,
            first: flat("optimizer.first")?,
            second: flat("optimizer.second")?,
            step: number("optimizer_step")?,
            params: params.values,
        },
        model: params.model,
        epochs_done: number("epochs_done")? as usize,
        stopping,
        untrained_val_loss: info.get("untrained_val_loss").and_then(|v| v.parse().ok()),
        legs: match info.get("legs") {
            Some(text) => serde_json::from_str(text)
                .map_err(|_| bad("metadata has an unreadable \"legs\"".into()))?,
            None => Vec::new(),
        },
    })
}
