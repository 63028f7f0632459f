//! A model: a network, a list of layers (convolutions, max pooling, dropout and dense layers,
//! each with its own activation) planned against the input's shape into per-layer output
//! shapes and one flat parameter vector. A config's `network = [...]` is read into
//! `LayerSpec`s, checked into [`Layer`]s and planned here; its `layers = [784, 128, 10]` with
//! `activation` is a network of dense layers ([`Network::dense`]). The backends compute a
//! planned network's loss and gradient.
//!
//! Parameter layout, layer after layer: a convolution's `conv{n}.weight` (O, C, K, K) then
//! `conv{n}.bias` (O); a dense layer's `fc{n}.weight` (O, I) then `fc{n}.bias` (O), numbered
//! from 1 within each kind, as PyTorch's `nn.Conv2d` and `nn.Linear` name and lay them out.
//! Between a convolution (or pooling) and a dense layer the (C, H, W) values of each image are
//! flattened in that order, as `x.flatten(1)` does.

use super::init::{Init, init_layer};
use super::layer::{Activation, Layer, describe, in_short};
use super::rng::{STREAM_INIT, rng_for};
use super::shape::{Conv2d, ImageShape, MaxPool2d, Tensor};

/// Where one layer's tensors sit in the flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    pub fan_in: usize,
    pub fan_out: usize,
    /// Offset of the (O, I) weight matrix.
    pub weight: usize,
    /// Offset of the (O) bias vector.
    pub bias: usize,
}

impl LayerView {
    pub fn weight_len(&self) -> usize {
        self.fan_in * self.fan_out
    }
    pub fn end(&self) -> usize {
        self.bias + self.fan_out
    }
}

/// Views for every layer of `widths` (e.g. `[784, 128, 10]` gives two layers).
pub fn layer_views(widths: &[usize]) -> Vec<LayerView> {
    let mut offset = 0;
    widths
        .windows(2)
        .map(|w| {
            let view = LayerView {
                fan_in: w[0],
                fan_out: w[1],
                weight: offset,
                bias: offset + w[0] * w[1],
            };
            offset = view.end();
            view
        })
        .collect()
}

/// Total parameter count of a network with these widths.
pub fn param_count(widths: &[usize]) -> usize {
    layer_views(widths).last().map_or(0, LayerView::end)
}

/// [`param_count`] in arithmetic that cannot overflow (it saturates), for checking a config
/// before anything is allocated (`param_count` of `[1 << 40, 1 << 40, 10]` would wrap).
pub fn param_count_u128(widths: &[usize]) -> u128 {
    widths.windows(2).fold(0u128, |sum, w| {
        sum.saturating_add((w[0] as u128 + 1).saturating_mul(w[1] as u128))
    })
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

/// `layer` planned on inputs of `shape`, its parameters placed from `*params` on (which it
/// moves past them), and its output's shape; or why it cannot be.
fn plan_layer(
    layer: &Layer,
    shape: ImageShape,
    params: &mut usize,
) -> Result<(Planned, ImageShape), String> {
    Ok(match *layer {
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
            plan_conv(conv, activation, params)?
        }
        Layer::MaxPool2d { window, stride } => {
            let pool = MaxPool2d {
                channels: shape.channels,
                height: shape.height,
                width: shape.width,
                window,
                stride,
            };
            pool.validate()?;
            let out = ImageShape {
                channels: shape.channels,
                height: pool.out_height(),
                width: pool.out_width(),
            };
            (Planned::MaxPool2d { shape: pool }, out)
        }
        Layer::Dropout { p } => {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("p = {p} is not in [0, 1)"));
            }
            let len = shape.len();
            (Planned::Dropout { p, len }, shape)
        }
        Layer::Dense { units, activation } => {
            if units == 0 {
                return Err("a dense layer needs at least one unit".into());
            }
            let fan_in = shape.len();
            let weight = *params;
            *params = add_params(*params, (fan_in as u128 + 1).saturating_mul(units as u128))?;
            bounded_len(ImageShape::flat(units))?;
            let step = Planned::Dense {
                fan_in,
                fan_out: units,
                activation,
                weight,
                bias: weight + fan_in * units,
            };
            (step, ImageShape::flat(units))
        }
    })
}

/// Convolution `conv` planned, its parameters placed from `*params` on, and its output's
/// shape.
fn plan_conv(
    conv: Conv2d,
    activation: Activation,
    params: &mut usize,
) -> Result<(Planned, ImageShape), String> {
    conv.validate()?;
    let weight = *params;
    let window = [conv.channels, conv.kernel, conv.kernel, conv.filters];
    let weights = (window.iter()).fold(1u128, |n, &d| n.saturating_mul(d as u128));
    *params = add_params(*params, weights.saturating_add(conv.filters as u128))?;
    let out = ImageShape {
        channels: conv.filters,
        height: conv.out_height(),
        width: conv.out_width(),
    };
    bounded_len(out)?;
    let step = Planned::Conv2d {
        shape: conv,
        activation,
        weight,
        bias: weight + conv.weights_len(),
    };
    Ok((step, out))
}

/// The parameters so far with `more` added, within [`MAX_COUNT`].
fn add_params(params: usize, more: u128) -> Result<usize, String> {
    let total = (params as u128).saturating_add(more);
    if total > MAX_COUNT {
        return Err(format!(
            "the network's parameters reach {total}, more than the {MAX_COUNT} a network may have (on every device: the GPU kernels address them with 32-bit offsets)"
        ));
    }
    Ok(total as usize)
}

/// Fails unless the last of `planned` (planned from `layers`) gives `classes` logits: a dense
/// layer of one unit per class with no activation.
fn check_logits(planned: &[Planned], layers: &[Layer], classes: usize) -> Result<(), String> {
    let last = || {
        let n = layers.len();
        format!("layer {n} ({})", describe(&layers[n - 1]))
    };
    match planned.last() {
        Some(Planned::Dense {
            activation: Activation::None,
            fan_out,
            ..
        }) if *fan_out == classes => Ok(()),
        Some(Planned::Dense { fan_out, .. }) if *fan_out == classes => Err(format!(
            "{}: the last layer gives the logits, which softmax takes as they are: its activation must be none",
            last()
        )),
        Some(Planned::Dense { fan_out, .. }) => Err(format!(
            "{}: the last layer has {fan_out} units, the data has {classes} classes",
            last()
        )),
        _ => Err(format!(
            "the last layer must be dense with one unit per class ({classes}), giving the logits"
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
            let fail = |why: String| format!("layer {} ({}): {why}", n + 1, describe(layer));
            let (step, out) = plan_layer(layer, shape, &mut params).map_err(fail)?;
            planned.push(step);
            outputs.push(out);
            shape = out;
        }
        check_logits(&planned, layers, classes)?;
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

    /// Seeded initial parameters, drawn layer after layer from one stream by one rule
    /// ([`init_layer`]). A convolution's fan-in is C·K·K and its fan-out O·K·K, as PyTorch
    /// counts them.
    pub fn init(&self, init: Init, seed: u64) -> Vec<f32> {
        let mut values = vec![0.0f32; self.param_count];
        let mut rng = rng_for(seed, STREAM_INIT);
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
            init_layer(weights, rest, fans, init, &mut rng);
        }
        values
    }

    /// Where each layer with parameters keeps its weights and bias (a convolution's fan-in is
    /// C·K·K, its fan-out O): what the optimiser's update and the
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

    /// One line for messages: `layers [784, 128, 10], tanh` for what a `layers` list declares,
    /// else `network conv 32 3×3 relu → pool 2 → dense 10`.
    pub fn describe(&self) -> String {
        match self.declared_widths() {
            Some((widths, activation)) => format!("layers {widths:?}, {}", activation.name()),
            None => format!("network {}", in_short(&self.spec)),
        }
    }

    /// The shape of what layer `l` takes: the input, or the layer before's output.
    pub fn layer_input(&self, l: usize) -> ImageShape {
        match l {
            0 => self.input,
            _ => self.outputs[l - 1],
        }
    }

    /// The network a config's `layers = widths` and `activation` declare: dense layers of
    /// `widths[1..]` units on flat inputs of `widths[0]` values, `activation` after every
    /// hidden one, the last giving the logits. Laid out as [`layer_views`] lays out `widths`.
    pub fn dense(widths: &[usize], activation: Activation) -> Result<Network, String> {
        let Some((&inputs, units)) = widths.split_first() else {
            return Err("a network needs an input width".into());
        };
        let layers: Vec<Layer> = units
            .iter()
            .enumerate()
            .map(|(l, &width)| Layer::Dense {
                units: width,
                // The hidden layers take `activation`; the last gives the logits as they are.
                activation: if l + 1 < units.len() {
                    activation
                } else {
                    Activation::None
                },
            })
            .collect();
        Network::plan(
            ImageShape::flat(inputs),
            &layers,
            *widths.last().unwrap_or(&0),
        )
    }

    /// The widths (input first) and hidden activation when every layer is dense, with one
    /// activation after every hidden layer: such a network trains on each backend's fused
    /// dense path. A network of one layer has no hidden activation: `none`.
    pub fn dense_stack(&self) -> Option<(Vec<usize>, Activation)> {
        let mut widths = vec![self.input.len()];
        let mut hidden = None;
        let last = self.layers.len().checked_sub(1)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let Planned::Dense {
                fan_out,
                activation,
                ..
            } = *layer
            else {
                return None;
            };
            widths.push(fan_out);
            if l < last && *hidden.get_or_insert(activation) != activation {
                return None;
            }
        }
        Some((widths, hidden.unwrap_or(Activation::None)))
    }

    /// [`Network::dense_stack`] for a network on flat inputs: what a `layers` list declares,
    /// and how a model file and the messages write it.
    pub fn declared_widths(&self) -> Option<(Vec<usize>, Activation)> {
        self.dense_stack().filter(|_| self.input.is_flat())
    }

    /// Values per input image.
    pub fn inputs(&self) -> usize {
        self.input.len()
    }

    /// FLOPs of one training epoch over `rows` rows: the forward products, the weight-gradient
    /// products and the input-gradient products of every layer but the first (which backprop
    /// does not need), 2 FLOPs per multiply-add; a convolution's products are its im2col
    /// GEMMs (positions × filters × C·K·K). Element-wise work (activations, pooling, dropout)
    /// is not counted.
    pub fn epoch_flops(&self, rows: usize) -> f64 {
        let macs: Vec<f64> = (self.layers.iter())
            .filter_map(|layer| match *layer {
                Planned::Conv2d { shape, .. } => {
                    Some((shape.out_len() * shape.window_len()) as f64)
                }
                Planned::Dense {
                    fan_in, fan_out, ..
                } => Some((fan_in * fan_out) as f64),
                _ => None,
            })
            .collect();
        let forward: f64 = macs.iter().sum();
        let input_grads: f64 = macs.iter().skip(1).sum();
        2.0 * rows as f64 * (2.0 * forward + input_grads)
    }

    /// The classes the last layer scores.
    pub fn classes(&self) -> usize {
        self.outputs.last().map_or(0, ImageShape::len)
    }

    /// Each layer's output shape and parameter count, the way `torchinfo.summary` prints them,
    /// as a Markdown table with the total underneath.
    pub fn summary(&self) -> String {
        let shape = |s: &ImageShape| {
            if s.is_flat() {
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
