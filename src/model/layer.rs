//! Layers as a config names them: [`LayerSpec`] (one entry of `network = [...]`, as written),
//! [`Layer`] (checked), and each layer's activation.

use serde::{Deserialize, Serialize};

/// Activation of the hidden layers (the output layer is always softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Identity: for softmax regression, which has no hidden layer.
    None,
    Tanh,
    Sigmoid,
    Relu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Activation::None),
            "tanh" => Some(Activation::Tanh),
            "sigmoid" => Some(Activation::Sigmoid),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}

/// One entry of a config's `network` list, as written: exactly one of `conv`, `max_pool`,
/// `dropout` and `dense` says what the layer is, the other keys refine it.
///
/// ```toml
/// network = [
///   { conv = 32, kernel = 3, padding = 1, activation = "relu" },
///   { max_pool = 2 },
///   { dropout = 0.25 },
///   { dense = 10 },
/// ]
/// ```
/// Defaults follow PyTorch's layers: `kernel = 3` (PyTorch has no default: 3 is the common
/// one), `stride = 1`, `padding = 0` for a convolution; a pooling's `stride` is its window;
/// `activation = "none"` (as `nn.Linear` and Keras' `Dense` apply none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pool: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stride: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padding: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

impl LayerSpec {
    /// The layer this entry describes; the message says what is wrong with it (the caller
    /// names the layer).
    pub fn layer(&self) -> Result<Layer, String> {
        let kinds = [
            self.conv.map(|_| "conv"),
            self.max_pool.map(|_| "max_pool"),
            self.dropout.map(|_| "dropout"),
            self.dense.map(|_| "dense"),
        ];
        let named: Vec<&str> = kinds.into_iter().flatten().collect();
        let kind = match named.as_slice() {
            [one] => *one,
            [] => return Err("says none of conv, max_pool, dropout, dense".into()),
            many => return Err(format!("says both {} and {}", many[0], many[1])),
        };
        // Keys that mean nothing for this kind are mistakes, not silently ignored.
        let allowed: &[&str] = match kind {
            "conv" => &["kernel", "stride", "padding", "activation"],
            "max_pool" => &["stride"],
            "dense" => &["activation"],
            _ => &[],
        };
        for (key, given) in [
            ("kernel", self.kernel.is_some()),
            ("stride", self.stride.is_some()),
            ("padding", self.padding.is_some()),
            ("activation", self.activation.is_some()),
        ] {
            if given && !allowed.contains(&key) {
                return Err(format!("{kind} takes no {key}"));
            }
        }
        let activation = self.activation.unwrap_or(Activation::None);
        Ok(match kind {
            "conv" => Layer::Conv2d {
                filters: self.conv.unwrap_or(0),
                kernel: self.kernel.unwrap_or(3),
                stride: self.stride.unwrap_or(1),
                padding: self.padding.unwrap_or(0),
                activation,
            },
            "max_pool" => {
                let window = self.max_pool.unwrap_or(0);
                Layer::MaxPool2d {
                    window,
                    stride: self.stride.unwrap_or(window),
                }
            }
            "dropout" => Layer::Dropout {
                p: self.dropout.unwrap_or(0.0),
            },
            _ => Layer::Dense {
                units: self.dense.unwrap_or(0),
                activation,
            },
        })
    }
}

impl Layer {
    /// This layer as a config writes it (every key given, so a model file reads the same
    /// whatever the defaults become).
    pub fn spec(&self) -> LayerSpec {
        match *self {
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                activation,
            } => LayerSpec {
                conv: Some(filters),
                kernel: Some(kernel),
                stride: Some(stride),
                padding: Some(padding),
                activation: Some(activation),
                ..LayerSpec::default()
            },
            Layer::MaxPool2d { window, stride } => LayerSpec {
                max_pool: Some(window),
                stride: Some(stride),
                ..LayerSpec::default()
            },
            Layer::Dropout { p } => LayerSpec {
                dropout: Some(p),
                ..LayerSpec::default()
            },
            Layer::Dense { units, activation } => LayerSpec {
                dense: Some(units),
                activation: Some(activation),
                ..LayerSpec::default()
            },
        }
    }
}

/// The layers of a config's `network` list; the error names the first bad entry.
pub fn layers_of(specs: &[LayerSpec]) -> Result<Vec<Layer>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(n, spec)| spec.layer().map_err(|e| format!("layer {}: {e}", n + 1)))
        .collect()
}

/// One layer as a config describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    /// `filters` kernels of `kernel` × `kernel`, `stride` 1 or 2, `padding` zeros each side.
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        activation: Activation,
    },
    /// `window` × `window` max pooling every `stride` pixels.
    MaxPool2d { window: usize, stride: usize },
    /// Inverted dropout with probability `p` while training; nothing at evaluation.
    Dropout { p: f64 },
    /// A fully-connected layer of `units` outputs.
    Dense {
        units: usize,
        activation: Activation,
    },
}

/// `conv 32 3×3 relu`, `pool 2`, `dropout 0.25`, `dense 10`: a layer in a few characters.
pub fn short(layer: &Layer) -> String {
    let act = |a: Activation| match a {
        Activation::None => String::new(),
        a => format!(" {}", a.name()),
    };
    match *layer {
        Layer::Conv2d {
            filters,
            kernel,
            activation,
            ..
        } => format!("conv {filters} {kernel}×{kernel}{}", act(activation)),
        Layer::MaxPool2d { window, .. } => format!("pool {window}"),
        Layer::Dropout { p } => format!("dropout {p}"),
        Layer::Dense { units, activation } => format!("dense {units}{}", act(activation)),
    }
}

/// `conv 32 3×3 relu → pool 2 → dense 10`: a list of layers in short.
pub fn in_short(layers: &[Layer]) -> String {
    layers.iter().map(short).collect::<Vec<_>>().join(" → ")
}

/// `conv 32, 3×3, stride 1, pad 1, relu`, `max pool 2×2 / 2`, `dropout 0.25`, `dense 128, relu`.
pub fn describe(layer: &Layer) -> String {
    match *layer {
        Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            activation,
        } => format!(
            "conv {filters}, {kernel}×{kernel}, stride {stride}, pad {padding}, {}",
            activation.name()
        ),
        Layer::MaxPool2d { window, stride } => format!("max pool {window}×{window} / {stride}"),
        Layer::Dropout { p } => format!("dropout {p}"),
        Layer::Dense { units, activation } => format!("dense {units}, {}", activation.name()),
    }
}
