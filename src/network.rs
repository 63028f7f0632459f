//! A model as a list of layers: convolutions, max pooling, dropout and dense layers,
//! each with its own activation, planned against the input's shape into per-layer output shapes
//! and one flat parameter vector. A config's `network = [...]` is read into [`LayerSpec`]s,
//! checked into [`Layer`]s and planned here; `cpu::network` computes a planned network's loss
//! and gradient.
//!
//! Parameter layout, layer after layer: a convolution's `conv{n}.weight` (O, C, K, K) then
//! `conv{n}.bias` (O); a dense layer's `fc{n}.weight` (O, I) then `fc{n}.bias` (O), numbered
//! from 1 within each kind, as PyTorch's `nn.Conv2d` and `nn.Linear` name and lay them out. A
//! network of dense layers alone is laid out exactly as `model::layer_views` lays out its
//! widths. Between a convolution (or pooling) and a dense layer the (C, H, W) values of each
//! image are flattened in that order, as `x.flatten(1)` does.

use serde::{Deserialize, Serialize};

use crate::cpu::conv::{Conv2d, MaxPool2d};
use crate::model::{Activation, LayerView};

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

/// The shape of one image: channels × height × width (a flat vector is N × 1 × 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn flat(len: usize) -> Self {
        ImageShape {
            channels: len,
            height: 1,
            width: 1,
        }
    }
}

/// One parameter tensor of a planned network: its name, where it starts in the flat vector,
/// and its dimensions (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub offset: usize,
    pub dims: Vec<usize>,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `fc1.weight[17, 402]`: the name of element `i` (row-major) of this tensor.
    pub fn element_name(&self, i: usize) -> String {
        let mut index = Vec::with_capacity(self.dims.len());
        let mut rest = i;
        for &d in self.dims.iter().rev() {
            index.push((rest % d).to_string());
            rest /= d;
        }
        index.reverse();
        format!("{}[{}]", self.name, index.join(", "))
    }
}

/// One layer, planned: its operation with every shape known, and where its parameters are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Planned {
    Conv2d {
        shape: Conv2d,
        activation: Activation,
        weight: usize,
        bias: usize,
    },
    MaxPool2d {
        shape: MaxPool2d,
    },
    Dropout {
        p: f64,
        /// Values per image it masks.
        len: usize,
    },
    Dense {
        fan_in: usize,
        fan_out: usize,
        activation: Activation,
        weight: usize,
        bias: usize,
    },
}

/// A network planned against its input: every layer's output shape and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub input: ImageShape,
    /// The layers as the config gave them.
    pub spec: Vec<Layer>,
    pub layers: Vec<Planned>,
    /// Each layer's output shape per image.
    pub outputs: Vec<ImageShape>,
    pub param_count: usize,
}

/// The most parameters a network may have, and the most values per image any of its layers
/// may give: the GPU kernels address them with 32-bit offsets, and counts this size stay far
/// from overflowing wherever they are multiplied later.
pub const MAX_COUNT: u128 = u32::MAX as u128;

/// The values of `shape` (C·H·W), or why there are too many.
fn bounded_len(shape: ImageShape) -> Result<usize, String> {
    let len = (shape.channels as u128)
        .checked_mul(shape.height as u128)
        .and_then(|n| n.checked_mul(shape.width as u128));
    match len {
        Some(len) if len <= MAX_COUNT => Ok(len as usize),
        _ => Err(format!(
            "{}×{}×{} = {} values per image, more than the {MAX_COUNT} any layer may give (on every device: the GPU kernels address values with 32-bit offsets)",
            shape.channels,
            shape.height,
            shape.width,
            len.map_or_else(|| "over 2^128".to_string(), |n| n.to_string())
        )),
    }
}

impl Network {
    /// Plans `layers` on images of `input`, for `classes` classes. Every mismatch is an error
    /// naming the layer (numbered from 1) before any work starts, and so is a count too large
    /// to address ([`MAX_COUNT`]): every count is taken in arithmetic that cannot overflow.
    pub fn plan(input: ImageShape, layers: &[Layer], classes: usize) -> Result<Network, String> {
        bounded_len(input).map_err(|why| format!("the input: {why}"))?;
        let mut planned = Vec::with_capacity(layers.len());
        let mut outputs = Vec::with_capacity(layers.len());
        let mut shape = input;
        let mut params = 0;
        for (n, layer) in layers.iter().enumerate() {
            let name = || format!("layer {} ({})", n + 1, describe(layer));
            let fail = |why: String| format!("{}: {why}", name());
            // The parameters so far with `more` added, within [`MAX_COUNT`].
            let add_params = |params: usize, more: u128| {
                let total = (params as u128).saturating_add(more);
                if total > MAX_COUNT {
                    return Err(fail(format!(
                        "the network's parameters reach {total}, more than the {MAX_COUNT} a network may have (on every device: the GPU kernels address them with 32-bit offsets)"
                    )));
                }
                Ok(total as usize)
            };
            let (step, out) = match *layer {
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    activation,
                } => {
                    let conv = Conv2d {
                        channels: shape.channels,
                        height: shape.height,
                        width: shape.width,
                        filters,
                        kernel,
                        stride,
                        padding,
                    };
                    conv.validate().map_err(fail)?;
                    let weight = params;
                    let window = [shape.channels, kernel, kernel, filters];
                    let weights = (window.iter()).fold(1u128, |n, &d| n.saturating_mul(d as u128));
                    params = add_params(params, weights.saturating_add(filters as u128))?;
                    let out = ImageShape {
                        channels: filters,
                        height: conv.out_height(),
                        width: conv.out_width(),
                    };
                    bounded_len(out).map_err(fail)?;
                    let step = Planned::Conv2d {
                        shape: conv,
                        activation,
                        weight,
                        bias: weight + conv.weights_len(),
                    };
                    (step, out)
                }
                Layer::MaxPool2d { window, stride } => {
                    let pool = MaxPool2d {
                        channels: shape.channels,
                        height: shape.height,
                        width: shape.width,
                        window,
                        stride,
                    };
                    pool.validate().map_err(fail)?;
                    let out = ImageShape {
                        channels: shape.channels,
                        height: pool.out_height(),
                        width: pool.out_width(),
                    };
                    (Planned::MaxPool2d { shape: pool }, out)
                }
                Layer::Dropout { p } => {
                    if !(0.0..1.0).contains(&p) {
                        return Err(fail(format!("p = {p} is not in [0, 1)")));
                    }
                    let step = Planned::Dropout {
                        p,
                        len: shape.len(),
                    };
                    (step, shape)
                }
                Layer::Dense { units, activation } => {
                    if units == 0 {
                        return Err(fail("a dense layer needs at least one unit".into()));
                    }
                    let fan_in = shape.len();
                    let weight = params;
                    params =
                        add_params(params, (fan_in as u128 + 1).saturating_mul(units as u128))?;
                    bounded_len(ImageShape::flat(units)).map_err(fail)?;
                    let step = Planned::Dense {
                        fan_in,
                        fan_out: units,
                        activation,
                        weight,
                        bias: weight + fan_in * units,
                    };
                    (step, ImageShape::flat(units))
                }
            };
            planned.push(step);
            outputs.push(out);
            shape = out;
        }
        match planned.last() {
            Some(Planned::Dense {
                activation: Activation::None,
                fan_out,
                ..
            }) if *fan_out == classes => {}
            Some(Planned::Dense { fan_out, .. }) if *fan_out == classes => {
                return Err(format!(
                    "layer {} ({}): the last layer gives the logits, which softmax takes as they are: its activation must be none",
                    layers.len(),
                    describe(&layers[layers.len() - 1])
                ));
            }
            Some(Planned::Dense { fan_out, .. }) => {
                return Err(format!(
                    "layer {} ({}): the last layer has {fan_out} units, the data has {classes} classes",
                    layers.len(),
                    describe(&layers[layers.len() - 1])
                ));
            }
            _ => {
                return Err(format!(
                    "the last layer must be dense with one unit per class ({classes}), giving the logits"
                ));
            }
        }
        Ok(Network {
            input,
            spec: layers.to_vec(),
            layers: planned,
            outputs,
            param_count: params,
        })
    }

    /// Every parameter tensor in layout order: `conv{n}.weight` (O, C, K, K), `conv{n}.bias`
    /// (O), `fc{n}.weight` (O, I), `fc{n}.bias` (O), numbered from 1 within each kind.
    pub fn tensors(&self) -> Vec<Tensor> {
        let (mut convs, mut denses) = (0, 0);
        let mut tensors = Vec::new();
        for layer in &self.layers {
            let (kind, n, weight, bias, dims) = match *layer {
                Planned::Conv2d {
                    shape,
                    weight,
                    bias,
                    ..
                } => {
                    convs += 1;
                    let dims = vec![shape.filters, shape.channels, shape.kernel, shape.kernel];
                    ("conv", convs, weight, bias, dims)
                }
                Planned::Dense {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                    ..
                } => {
                    denses += 1;
                    ("fc", denses, weight, bias, vec![fan_out, fan_in])
                }
                _ => continue,
            };
            let outputs = dims[0];
            tensors.push(Tensor {
                name: format!("{kind}{n}.weight"),
                offset: weight,
                dims,
            });
            tensors.push(Tensor {
                name: format!("{kind}{n}.bias"),
                offset: bias,
                dims: vec![outputs],
            });
        }
        tensors
    }

    /// Seeded initial parameters, drawn layer after layer from the same stream and by the same
    /// rule (`model::init_layer`) as `Params::init`: a network of dense layers alone starts
    /// exactly where the MLP of its widths does. A convolution's fan-in is C·K·K and its
    /// fan-out O·K·K, as PyTorch counts them.
    pub fn init(&self, init: crate::model::Init, seed: u64) -> Vec<f32> {
        let mut values = vec![0.0f32; self.param_count];
        let mut rng = crate::data::batches::rng_for(seed, crate::data::batches::STREAM_INIT);
        for layer in &self.layers {
            let (weight, bias, outputs, fans) = match *layer {
                Planned::Conv2d {
                    shape,
                    weight,
                    bias,
                    ..
                } => {
                    let taps = shape.kernel * shape.kernel;
                    let fans = (shape.window_len(), shape.filters * taps);
                    (weight, bias, shape.filters, fans)
                }
                Planned::Dense {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                    ..
                } => (weight, bias, fan_out, (fan_in, fan_out)),
                _ => continue,
            };
            let (weights, rest) = values[weight..bias + outputs].split_at_mut(bias - weight);
            crate::model::init_layer(weights, rest, fans, init, &mut rng);
        }
        values
    }

    /// Where each layer with parameters keeps its weights and bias, as the MLP's views say it
    /// (a convolution's fan-in is C·K·K, its fan-out O): what the optimiser's update and the
    /// L1/L2 penalty read, which weigh weights and leave biases.
    pub fn layer_views(&self) -> Vec<LayerView> {
        self.layers
            .iter()
            .filter_map(|layer| match *layer {
                Planned::Conv2d {
                    shape,
                    weight,
                    bias,
                    ..
                } => Some(LayerView {
                    fan_in: shape.window_len(),
                    fan_out: shape.filters,
                    weight,
                    bias,
                }),
                Planned::Dense {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                    ..
                } => Some(LayerView {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                }),
                _ => None,
            })
            .collect()
    }

    /// Whether any layer is a dropout (a pass then needs its step counters).
    pub fn has_dropout(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, Planned::Dropout { p, .. } if *p > 0.0))
    }

    /// One line: `conv 32 → max pool 2 → dense 10` (for errors and reports).
    pub fn describe(&self) -> String {
        self.spec.iter().map(short).collect::<Vec<_>>().join(" → ")
    }

    /// The classes the last layer scores.
    pub fn classes(&self) -> usize {
        self.outputs.last().map_or(0, ImageShape::len)
    }

    /// Each layer's output shape and parameter count, the way `torchinfo.summary` prints them,
    /// as a Markdown table with the total underneath.
    pub fn summary(&self) -> String {
        let shape = |s: &ImageShape| {
            if s.height == 1 && s.width == 1 {
                format!("[B, {}]", s.channels)
            } else {
                format!("[B, {}, {}, {}]", s.channels, s.height, s.width)
            }
        };
        let mut out = String::from("| layer | output shape | parameters |\n|---|---|---|\n");
        out.push_str(&format!("| input | {} | – |\n", shape(&self.input)));
        for ((layer, planned), output) in self.spec.iter().zip(&self.layers).zip(&self.outputs) {
            let count = match planned {
                Planned::Conv2d { shape, .. } => shape.weights_len() + shape.filters,
                Planned::Dense {
                    fan_in, fan_out, ..
                } => fan_in * fan_out + fan_out,
                _ => 0,
            };
            out.push_str(&format!(
                "| {} | {} | {count} |\n",
                describe(layer),
                shape(output)
            ));
        }
        out.push_str(&format!("\n{} parameters\n", self.param_count));
        out
    }
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
