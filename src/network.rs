//! A model as a list of layers (issue 18): convolutions, max pooling, dropout and dense layers,
//! each with its own activation, planned against the input's shape into per-layer output shapes
//! and one flat parameter vector. Not yet what `train` runs (that is still `layers = [widths]`);
//! `cpu::network` computes a planned network's loss and gradient, the reference the engines
//! will be held to.
//!
//! Parameter layout, layer after layer: a convolution's `conv{n}.weight` (O, C, K, K) then
//! `conv{n}.bias` (O); a dense layer's `fc{n}.weight` (O, I) then `fc{n}.bias` (O), numbered
//! from 1 within each kind, as PyTorch's `nn.Conv2d` and `nn.Linear` name and lay them out. A
//! network of dense layers alone is laid out exactly as `model::layer_views` lays out its
//! widths. Between a convolution (or pooling) and a dense layer the (C, H, W) values of each
//! image are flattened in that order, as `x.flatten(1)` does.

use crate::cpu::conv::{Conv2d, MaxPool2d};
use crate::model::Activation;

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
    pub layers: Vec<Planned>,
    /// Each layer's output shape per image.
    pub outputs: Vec<ImageShape>,
    pub param_count: usize,
}

impl Network {
    /// Plans `layers` on images of `input`, for `classes` classes. Every mismatch is an error
    /// naming the layer (numbered from 1) before any work starts.
    pub fn plan(input: ImageShape, layers: &[Layer], classes: usize) -> Result<Network, String> {
        let mut planned = Vec::with_capacity(layers.len());
        let mut outputs = Vec::with_capacity(layers.len());
        let mut shape = input;
        let mut params = 0;
        for (n, layer) in layers.iter().enumerate() {
            let name = || format!("layer {} ({})", n + 1, describe(layer));
            let fail = |why: String| format!("{}: {why}", name());
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
                    params += conv.weights_len() + filters;
                    let out = ImageShape {
                        channels: filters,
                        height: conv.out_height(),
                        width: conv.out_width(),
                    };
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
                    params += fan_in * units + units;
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

    /// The classes the last layer scores.
    pub fn classes(&self) -> usize {
        self.outputs.last().map_or(0, ImageShape::len)
    }

    /// Each layer's output shape and parameter count, the way `torchinfo.summary` prints them,
    /// as a Markdown table with the total underneath.
    pub fn summary(&self, layers: &[Layer]) -> String {
        let shape = |s: &ImageShape| {
            if s.height == 1 && s.width == 1 {
                format!("[B, {}]", s.channels)
            } else {
                format!("[B, {}, {}, {}]", s.channels, s.height, s.width)
            }
        };
        let mut out = String::from("| layer | output shape | parameters |\n|---|---|---|\n");
        out.push_str(&format!("| input | {} | – |\n", shape(&self.input)));
        for ((layer, planned), output) in layers.iter().zip(&self.layers).zip(&self.outputs) {
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
