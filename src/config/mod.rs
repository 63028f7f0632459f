//! `TrainConfig`: one experiment's hyperparameters, read from TOML, overridden with
//! `--set key=value`, and validated before any data is read or any work starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod keys;

use crate::model::{Activation, ImageShape, Init, LayerSpec, Network, layers_of};
use keys::suggestion;
pub use keys::{KEYS, SWEEP_KEYS};

/// Errors in configs and overrides; each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: unknown key \"{key}\"{hint}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("--set {arg}: expected key=value")]
    BadOverride { arg: String },
    #[error("--set {arg}: {why}")]
    BadSetValue { arg: String, why: String },
    #[error("config {path}: {key} = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Which early-stopping rule decides when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStoppingRule {
    /// The paper's reading: stop once validation loss has risen for `patience` consecutive epochs.
    Rising,
    /// The common one (Keras, Lightning): stop after `patience` epochs without a new best.
    NoImprovement,
}

/// How per-sample gradients of a mini-batch are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientReduction {
    /// The mean over the batch (what the paper's numbers come from; PyTorch's default).
    Mean,
    /// The sum, as the paper's rule (3) is written: a step `batch_size` times larger.
    Sum,
}

/// How the L1/L2 penalty is weighed against a mini-batch's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyScaling {
    /// The penalty is part of the paper's summed objective ΣCE + λ·R(w); taking the mean gradient
    /// divides all of it by the batch size, so each step applies λ / batch_size.
    BatchMean,
    /// Each step applies λ in full (PyTorch's `weight_decay`, or λ·R added to the mean loss).
    None,
}

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Mini-batch SGD, with the paper's momentum rule (5) when `momentum = true`.
    Sgd,
    /// Adam (Kingma & Ba) with bias correction.
    Adam,
}

/// The paper's reported figures for this experiment, shown beside ours in results tables.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperResult {
    pub test_accuracy: f64,
    pub test_loss: f64,
}

/// One experiment. Field names follow the paper's Tables 2 and 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Experiment name (defaults to the config file's stem); names run directories.
    pub name: String,
    /// Layer widths, input first, classes last: `[784, 10]` is softmax regression.
    pub layers: Vec<usize>,
    pub activation: Activation,
    /// A network of layers instead of `layers` and `activation`: convolutions,
    /// pooling, dropout and dense layers, each with its activation (see [`LayerSpec`]).
    pub network: Option<Vec<LayerSpec>>,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub early_stopping: bool,
    pub early_stopping_rule: EarlyStoppingRule,
    pub patience: usize,
    pub optimizer: Optimizer,
    pub momentum: bool,
    pub momentum_gamma: f64,
    /// L1 penalty strength λ: adds λ·Σ|w| to the loss (weights only, not biases).
    pub l1: f64,
    /// L2 penalty strength λ: adds (λ/2)·Σw² to the loss (weights only, not biases).
    pub l2: f64,
    pub penalty_scaling: PenaltyScaling,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub gradient: GradientReduction,
    pub init: Init,
    pub seed: u64,
    pub val_fraction: f64,
    pub paper: Option<PaperResult>,
}

impl Default for TrainConfig {
    /// The paper's best model: [784, 128, 10], tanh, SGD with momentum.
    fn default() -> Self {
        TrainConfig {
            name: "momentum".into(),
            layers: vec![784, 128, 10],
            activation: Activation::Tanh,
            network: None,
            learning_rate: 0.01,
            batch_size: 128,
            epochs: 100,
            early_stopping: true,
            early_stopping_rule: EarlyStoppingRule::Rising,
            patience: 5,
            optimizer: Optimizer::Sgd,
            momentum: true,
            momentum_gamma: 0.9,
            l1: 0.0,
            l2: 0.0,
            penalty_scaling: PenaltyScaling::None,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            gradient: GradientReduction::Mean,
            init: Init::Paper,
            seed: 1,
            val_fraction: 0.2,
            paper: None,
        }
    }
}

/// A TOML error as one line, `line N: what` (toml's Display draws the line with a caret over
/// several; our errors are one line). N counts the newlines before the error, so an error at
/// the start of a line names that line, not the one before.
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => format!(
            "line {}: {message}",
            text[..span.start.min(text.len())].matches('\n').count() + 1
        ),
        None => message.to_string(),
    }
}

/// Parses the value side of `--set key=value` as TOML, falling back to a bare string
/// (`--set activation=relu` needs no quotes). An error, saying why, for a whole number TOML
/// cannot hold (beyond 64-bit signed) and for an array or table TOML cannot read, which
/// would otherwise fall back to a string and be reported as one ("invalid type: string").
fn parse_override_value(raw: &str) -> Result<toml::Value, String> {
    const RANGE: &str =
        "out of range (TOML integers are 64-bit signed, at most 9223372036854775807)";
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => Ok(t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string()))),
        // An array or a table that TOML cannot read is not meant as a string: say why.
        Err(e) if raw.starts_with(['[', '{']) => {
            let why = e.message().lines().next().unwrap_or_default().to_string();
            Err(
                match why.contains("too large") || why.contains("out of range") {
                    true => format!("a number in it is {RANGE}"),
                    false => format!("not a TOML value ({why})"),
                },
            )
        }
        Err(_) => {
            let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
            let whole =
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
            match whole {
                true => Err(RANGE.to_string()),
                false => Ok(toml::Value::String(raw.to_string())),
            }
        }
    }
}

/// Fails on a key a config does not have (with a hint: a near miss, or a sweep file given
/// as a config), and on `layers` or `activation` beside `network`.
fn check_keys(table: &toml::Table, path: &Path) -> Result<(), ConfigError> {
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            // A sweep file given where a config goes: its keys are not typos of ours.
            let hint = if SWEEP_KEYS.contains(&key.as_str()) {
                format!(
                    " ({} is a sweep file, not a training config: run it with `wgtrain sweep {}`; `--config` and a sweep's `base` name configs)",
                    path.display(),
                    path.display()
                )
            } else {
                suggestion(key)
            };
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                hint,
            });
        }
    }
    if table.contains_key("network")
        && let Some(key) = ["layers", "activation"]
            .into_iter()
            .find(|k| table.contains_key(*k))
    {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value: table[key].to_string(),
            reason: "a config with `network` describes its whole model there (each layer has its own activation): drop this key".into(),
        });
    }
    Ok(())
}

impl TrainConfig {
    /// Reads `path`, applies `overrides` (`key=value`), checks keys and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = crate::files::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("run")
            .to_string();
        Self::from_toml_str(&text, path, &stem, overrides)
    }

    /// The same as [`TrainConfig::load`] for TOML text; `path` only labels errors.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        default_name: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: toml_error_line(text, &e),
                })?;
        table
            .entry("name")
            .or_insert_with(|| toml::Value::String(default_name.to_string()));
        let as_written = table.clone();
        let mut overrides_paper = false;
        for arg in overrides {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride { arg: arg.clone() })?;
            overrides_paper |= key.trim() == "paper";
            let value =
                parse_override_value(value.trim()).map_err(|why| ConfigError::BadSetValue {
                    arg: arg.clone(),
                    why,
                })?;
            table.insert(key.trim().to_string(), value);
        }
        check_keys(&table, path)?;
        let mut config: TrainConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim().replace('\n', " "),
                })?;
        // An override that changes the experiment (anything but its seed and name) makes it no
        // longer the one whose reported figures the file carries, so `wgtrain table` does not
        // set a modified run beside the paper's numbers; a `paper` override is the user's own.
        if config.paper.is_some() && !overrides_paper {
            let written: Option<TrainConfig> = toml::Value::Table(as_written).try_into().ok();
            let same_experiment = written.is_some_and(|w| {
                TrainConfig {
                    seed: config.seed,
                    name: config.name.clone(),
                    ..w
                } == config
            });
            if !same_experiment {
                config.paper = None;
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate_model(path)?;
        self.validate_training(path)
    }

    /// [`TrainConfig::validate`]'s checks of `layers` and `network`.
    fn validate_model(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason: reason.to_string(),
        };
        if self.layers.len() < 2 {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                "needs at least an input and an output width",
            ));
        }
        if self.layers.contains(&0) {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                "every width must be at least 1",
            ));
        }
        if *self.layers.last().unwrap_or(&0) < 2 {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                "a softmax output needs at least 2 classes",
            ));
        }
        if let Some(specs) = &self.network {
            let value = || "[...]".to_string();
            if specs.is_empty() {
                return Err(bad("network", value(), "needs at least one layer"));
            }
            // The layers' own keys are checked here; their shapes need the data's images,
            // and are checked against them by `model_for` before any work starts.
            layers_of(specs).map_err(|e| bad("network", value(), &e))?;
        }
        // Checked here, in arithmetic that cannot overflow, so that no later count wraps; the
        // memory a network needs is checked against the machine when its engine is built.
        let params = crate::model::param_count_u128(&self.layers);
        if params > u32::MAX as u128 {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                &format!(
                    "{params} parameters, more than the {} the GPU kernels' 32-bit offsets can address",
                    u32::MAX
                ),
            ));
        }
        Ok(())
    }

    /// [`TrainConfig::validate`]'s checks of the training keys.
    fn validate_training(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason: reason.to_string(),
        };
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(key, v.to_string(), "must be a finite number > 0"))
            }
        };
        positive("learning_rate", self.learning_rate)?;
        positive("adam_epsilon", self.adam_epsilon)?;
        for (key, v) in [("l1", self.l1), ("l2", self.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(key, v.to_string(), "must be a finite number ≥ 0"));
            }
        }
        for (key, v) in [
            ("momentum_gamma", self.momentum_gamma),
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(key, v.to_string(), "must lie in [0, 1)"));
            }
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size", "0".into(), "must be at least 1"));
        }
        if self.epochs == 0 {
            return Err(bad("epochs", "0".into(), "must be at least 1"));
        }
        if self.early_stopping && self.patience == 0 {
            return Err(bad(
                "patience",
                "0".into(),
                "must be at least 1 when early_stopping = true",
            ));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(bad(
                "val_fraction",
                self.val_fraction.to_string(),
                "must lie strictly between 0 and 1",
            ));
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(bad(
                "name",
                format!("{:?}", self.name),
                "must be non-empty and hold no path separators",
            ));
        }
        Ok(())
    }

    /// Checks the config against the data it will train on.
    pub fn check_against_data(
        &self,
        features: usize,
        classes: usize,
        train_rows: usize,
    ) -> Result<(), ConfigError> {
        let path = Path::new("(resolved config)");
        let bad = |key: &'static str, value: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        };
        // A network's shapes are checked by `model_for`, against the images themselves.
        let dense = self.network.is_none();
        if dense && self.layers[0] != features {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                format!("the input width must equal the data's {features} pixels per image"),
            ));
        }
        if dense && *self.layers.last().unwrap_or(&0) != classes {
            return Err(bad(
                "layers",
                format!("{:?}", self.layers),
                format!("the output width must equal the data's {classes} classes"),
            ));
        }
        if self.batch_size > train_rows {
            return Err(bad(
                "batch_size",
                self.batch_size.to_string(),
                format!("larger than the {train_rows} training rows"),
            ));
        }
        Ok(())
    }

    /// The model this config trains on images of `image` = (height, width) in `classes`
    /// classes: the network of its `layers` and `activation`, or its `network` planned on the
    /// images (an error names the layer that does not fit). Parameter counts beyond what the
    /// GPU's 32-bit offsets address are refused.
    pub fn model_for(
        &self,
        image: (usize, usize),
        classes: usize,
    ) -> Result<Arc<Network>, ConfigError> {
        let bad = |key: &'static str, value: String, reason: String| ConfigError::Invalid {
            path: PathBuf::from("(resolved config)"),
            key,
            value,
            reason,
        };
        let Some(specs) = &self.network else {
            let net = Network::dense(&self.layers, self.activation)
                .map_err(|e| bad("layers", format!("{:?}", self.layers), e))?;
            return Ok(Arc::new(net));
        };
        let bad = |reason: String| bad("network", "[...]".into(), reason);
        let layers = layers_of(specs).map_err(bad)?;
        let input = ImageShape {
            channels: 1,
            height: image.0,
            width: image.1,
        };
        let net = Network::plan(input, &layers, classes).map_err(|e| {
            bad(format!(
                "{e} (on the data's {}×{} images)",
                image.0, image.1
            ))
        })?;
        if net.param_count as u128 > u32::MAX as u128 {
            return Err(bad(format!(
                "{} parameters, more than the {} 32-bit offsets can address",
                net.param_count,
                u32::MAX
            )));
        }
        Ok(Arc::new(net))
    }

    /// The model in words, for headers: `layers [784, 128, 10], tanh`, or `network` and its
    /// layers in short.
    pub fn model_words(&self) -> String {
        match layers_of(self.network.as_deref().unwrap_or_default()) {
            Ok(layers) if self.network.is_some() => {
                format!("network {}", crate::model::layer::in_short(&layers))
            }
            _ => format!("layers {:?}, {}", self.layers, self.activation.name()),
        }
    }

    /// Whether `model` (a checkpoint's) is the one this config trains: the same layers on
    /// inputs of the same size (`layers = [...]` and the `network` of those dense layers on
    /// flat inputs are one model).
    pub fn describes(&self, model: &Network) -> bool {
        let image = (model.input.height, model.input.width);
        self.model_for(image, model.classes())
            .is_ok_and(|ours| ours.spec == model.spec && ours.inputs() == model.inputs())
    }

    /// The keys whose values differ between `self` and `other`, other than those in `except`,
    /// each as `key = a / b` (in key order).
    pub fn differences(&self, other: &TrainConfig, except: &[&str]) -> Vec<String> {
        let table = |c: &TrainConfig| -> toml::Table {
            toml::Value::try_from(c)
                .ok()
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default()
        };
        let (a, b) = (table(self), table(other));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let shown = |v: Option<&toml::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
        keys.into_iter()
            .filter(|k| !except.contains(&k.as_str()) && a.get(*k) != b.get(*k))
            .map(|k| format!("{k} = {} / {}", shown(a.get(k)), shown(b.get(k))))
            .collect()
    }

    /// What this config, resuming a run, changes of `started` (the config the run was
    /// trained with so far), each as "key from was to now": the keys a resume may not change,
    /// then the rest. `seed` and `val_fraction` make the train/validation split, and `seed`
    /// and `init` the initial weights: changed mid-run, validation would hold rows already
    /// trained on, and the run's files would claim the new values for all of it. The rest
    /// are hyperparameters (and `name`), which apply from the resumed epoch on; `epochs` (how
    /// far to go) is neither.
    pub fn resume_changes(&self, started: &TrainConfig) -> (Vec<String>, Vec<String>) {
        const FIXED: [&str; 3] = ["init", "seed", "val_fraction"];
        // `differences` says "key = was / now".
        let changes = started.differences(self, &["epochs"]);
        let (fixed, rest): (Vec<String>, Vec<String>) = changes
            .into_iter()
            .partition(|d| FIXED.iter().any(|k| d.starts_with(&format!("{k} = "))));
        let worded = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|d| {
                    match d
                        .split_once(" = ")
                        .and_then(|(k, v)| Some((k, v.split_once(" / ")?)))
                    {
                        Some((key, (was, now))) => format!("{key} from {was} to {now}"),
                        None => d,
                    }
                })
                .collect()
        };
        (worded(fixed), worded(rest))
    }

    /// The resolved config as TOML, as written into every run directory. A config with a
    /// `network` leaves out `layers` and `activation`, which it does not use (and which
    /// reading it back would refuse beside `network`).
    pub fn to_toml(&self) -> String {
        let table = toml::Value::try_from(self).map(|mut v| {
            if self.network.is_some()
                && let Some(t) = v.as_table_mut()
            {
                t.remove("layers");
                t.remove("activation");
            }
            v
        });
        table
            .and_then(|v| toml::to_string(&v))
            .unwrap_or_else(|e| format!("# could not serialise config: {e}\n"))
    }

    /// Hyperparameters the engines read at each step.
    pub fn hyper(&self) -> Hyper {
        let penalty_divisor = match (self.penalty_scaling, self.gradient) {
            (PenaltyScaling::BatchMean, GradientReduction::Mean) => self.batch_size as f64,
            _ => 1.0,
        };
        Hyper {
            learning_rate: self.learning_rate,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            momentum_gamma: if self.momentum {
                self.momentum_gamma
            } else {
                0.0
            },
            l1: self.l1 / penalty_divisor,
            l2: self.l2 / penalty_divisor,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_epsilon: self.adam_epsilon,
            gradient: self.gradient,
            seed: self.seed,
        }
    }
}

/// What an engine needs to take one epoch of steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub learning_rate: f64,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// γ of the momentum rule; 0 means plain SGD.
    pub momentum_gamma: f64,
    /// Effective per-step penalty strengths (after `penalty_scaling`).
    pub l1: f64,
    pub l2: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub gradient: GradientReduction,
    /// The run's seed: what dropout masks are drawn from (with the step).
    pub seed: u64,
}
