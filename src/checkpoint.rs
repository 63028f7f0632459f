//! Model files: `model.safetensors` with PyTorch `nn.Linear` names and layout, and the atomic
//! write every output file goes through (temporary name, fsync, rename), so a crash never
//! leaves a half-written file in place of a good one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;

use crate::model::{Activation, Params, first_unusable, layer_views};

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

    /// Fails on the first non-finite value of `values` (parameters laid out for `widths`).
    fn check_finite(
        self,
        path: &Path,
        widths: &[usize],
        values: &[f32],
    ) -> Result<(), CheckpointError> {
        match first_unusable(widths, values, false) {
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

/// Serialises parameters as safetensors: `fc{i}.weight` (O, I) and `fc{i}.bias` (O), f32
/// little-endian, with `layers` (JSON list) and `activation` in the metadata, then any `flat`
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
    metadata.insert(
        "layers".to_string(),
        serde_json::to_string(&params.widths).map_err(|e| e.to_string())?,
    );
    metadata.insert(
        "activation".to_string(),
        params.activation.name().to_string(),
    );
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
    FileKind::Model.check_finite(path, &params.widths, &params.values)?;
    let bytes = model_bytes(params, extra).map_err(|message| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    })?;
    write_atomic(path, &bytes)
}

/// Reads a model written by [`save_model`], checking every tensor's name, shape and dtype.
pub fn load_model(path: &Path) -> Result<Params, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
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
    let widths: Vec<usize> = info
        .get("layers")
        .ok_or_else(|| bad("metadata lacks \"layers\"".into()))
        .and_then(|s| {
            serde_json::from_str(s).map_err(|e| bad(format!("metadata \"layers\": {e}")))
        })?;
    if widths.len() < 2 || widths.contains(&0) {
        return Err(bad(format!(
            "metadata \"layers\" = {widths:?} is not a network"
        )));
    }
    let activation = info
        .get("activation")
        .and_then(|a| Activation::parse(a))
        .ok_or_else(|| bad("metadata lacks a known \"activation\"".into()))?;
    let tensors =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| kind.unreadable(path, e))?;
    let mut params = Params::zeros(&widths, activation);
    for (l, view) in layer_views(&widths).iter().enumerate() {
        for (name, shape, range) in [
            (
                format!("fc{}.weight", l + 1),
                vec![view.fan_out, view.fan_in],
                view.weight..view.bias,
            ),
            (
                format!("fc{}.bias", l + 1),
                vec![view.fan_out],
                view.bias..view.end(),
            ),
        ] {
            let t = tensors
                .tensor(&name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            for (dst, chunk) in params.values[range]
                .iter_mut()
                .zip(t.data().chunks_exact(4))
            {
                *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
    kind.check_finite(path, &params.widths, &params.values)?;
    Ok(params)
}

/// Version tag of `last.safetensors`.
const CHECKPOINT_FORMAT: &str = "wgtrain-checkpoint-1";

/// Writes `last.safetensors`: the parameters (as in model files), the kept best parameters, the
/// optimiser's buffers and step, the epochs done and the early-stopping state. Shuffles need no
/// RNG state: each epoch's order is a function of (seed, epoch) alone.
pub fn save_checkpoint(
    path: &Path,
    widths: &[usize],
    activation: Activation,
    state: &crate::engine::TrainingState,
    epochs_done: usize,
    stopping: &crate::train::EarlyStopping,
    untrained_val_loss: Option<f64>,
) -> Result<(), CheckpointError> {
    let bad = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    for values in [&state.params, &state.best, &state.first, &state.second] {
        FileKind::Checkpoint.check_finite(path, widths, values)?;
    }
    let params = Params {
        widths: widths.to_vec(),
        activation,
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
    let bytes = encode(&params, &flat, &meta).map_err(bad)?;
    write_atomic(path, &bytes)
}

/// What [`load_checkpoint`] returns.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub widths: Vec<usize>,
    pub activation: Activation,
    pub state: crate::engine::TrainingState,
    pub epochs_done: usize,
    pub stopping: crate::train::EarlyStopping,
    /// The run's untrained validation loss (absent from checkpoints that predate it).
    pub untrained_val_loss: Option<f64>,
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bad = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
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
        kind.check_finite(path, &params.widths, &values)?;
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
        widths: params.widths,
        activation: params.activation,
        epochs_done: number("epochs_done")? as usize,
        stopping,
        untrained_val_loss: info.get("untrained_val_loss").and_then(|v| v.parse().ok()),
    })
}
