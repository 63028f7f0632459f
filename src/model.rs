//! The model and its parameters: the paper's MLP by its widths and hidden activation, or a
//! planned list of layers (`network`); one flat parameter vector with named views, and seeded
//! initialisation.
//!
//! Shape legend used across the crate: B batch rows, I fan-in, O fan-out, C classes.
//! Parameter layout, layer after layer: `fc{l}.weight` (O, I) row-major (PyTorch `nn.Linear`),
//! then `fc{l}.bias` (O). Layers are numbered from 1.

use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::network::{Network, Tensor};

use crate::data::batches::{STREAM_INIT, rng_for};

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

/// Weight initialisation schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The paper's course starter code: every weight and bias 0.01·U[0, 1).
    Paper,
    /// Glorot/Xavier uniform: U(−a, a), a = √(6 / (I + O)); biases 0. Suits tanh and sigmoid.
    Xavier,
    /// He/Kaiming normal: N(0, 2 / I); biases 0. Suits ReLU.
    He,
    /// PyTorch `nn.Linear` default: weights and biases U(−1/√I, 1/√I).
    Pytorch,
}

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

/// What a run trains.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// The paper's fully-connected network: widths input first, one activation for every
    /// hidden layer (`layers` and `activation` in a config). The MLP engines train it.
    Mlp {
        widths: Vec<usize>,
        activation: Activation,
    },
    /// A list of layers planned against the images (`network` in a config).
    Network(Arc<Network>),
}

impl Model {
    /// The widths and hidden activation of an MLP; `None` for a network of layers.
    pub fn mlp(&self) -> Option<(&[usize], Activation)> {
        match self {
            Model::Mlp { widths, activation } => Some((widths, *activation)),
            Model::Network(_) => None,
        }
    }

    pub fn param_count(&self) -> usize {
        match self {
            Model::Mlp { widths, .. } => param_count(widths),
            Model::Network(net) => net.param_count,
        }
    }

    /// Values per input image.
    pub fn inputs(&self) -> usize {
        match self {
            Model::Mlp { widths, .. } => widths[0],
            Model::Network(net) => net.input.len(),
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Model::Mlp { widths, .. } => *widths.last().unwrap_or(&0),
            Model::Network(net) => net.classes(),
        }
    }

    /// Where each layer's weights and bias sit (what the update and the penalties read).
    pub fn layer_views(&self) -> Vec<LayerView> {
        match self {
            Model::Mlp { widths, .. } => layer_views(widths),
            Model::Network(net) => net.layer_views(),
        }
    }

    /// Every parameter tensor in layout order, named as PyTorch names them (`fc1.weight`
    /// (O, I), `conv1.weight` (O, C, K, K), ...).
    pub fn tensors(&self) -> Vec<Tensor> {
        match self {
            Model::Mlp { widths, .. } => layer_views(widths)
                .iter()
                .enumerate()
                .flat_map(|(l, view)| {
                    [
                        Tensor {
                            name: format!("fc{}.weight", l + 1),
                            offset: view.weight,
                            dims: vec![view.fan_out, view.fan_in],
                        },
                        Tensor {
                            name: format!("fc{}.bias", l + 1),
                            offset: view.bias,
                            dims: vec![view.fan_out],
                        },
                    ]
                })
                .collect(),
            Model::Network(net) => net.tensors(),
        }
    }

    /// One line for messages: `layers [784, 128, 10], tanh`, or
    /// `network conv 32 3×3 relu → pool 2 → dense 10`.
    pub fn describe(&self) -> String {
        match self {
            Model::Mlp { widths, activation } => {
                format!("layers {widths:?}, {}", activation.name())
            }
            Model::Network(net) => format!("network {}", net.describe()),
        }
    }

    /// FLOPs of one training epoch over `rows` rows: the forward products, the weight-gradient
    /// products and the input-gradient products of every layer but the first (which backprop
    /// does not need), 2 FLOPs per multiply-add; a convolution's products are its im2col
    /// GEMMs (positions × filters × C·K·K). Element-wise work (activations, pooling, dropout)
    /// is not counted.
    pub fn epoch_flops(&self, rows: usize) -> f64 {
        let macs: Vec<f64> = match self {
            Model::Mlp { widths, .. } => layer_views(widths)
                .iter()
                .map(|v| (v.fan_in * v.fan_out) as f64)
                .collect(),
            Model::Network(net) => net
                .layers
                .iter()
                .filter_map(|layer| match layer {
                    crate::network::Planned::Conv2d { shape, .. } => {
                        Some((shape.out_len() * shape.window_len()) as f64)
                    }
                    crate::network::Planned::Dense {
                        fan_in, fan_out, ..
                    } => Some((fan_in * fan_out) as f64),
                    _ => None,
                })
                .collect(),
        };
        let forward: f64 = macs.iter().sum();
        let input_grads: f64 = macs.iter().skip(1).sum();
        2.0 * rows as f64 * (2.0 * forward + input_grads)
    }

    /// Seeded initial parameters: the draws depend only on `(seed, model, init)`.
    pub fn init(&self, init: Init, seed: u64) -> Vec<f32> {
        match self {
            Model::Mlp { widths, .. } => {
                let mut values = vec![0.0; param_count(widths)];
                let mut rng = rng_for(seed, STREAM_INIT);
                for view in layer_views(widths) {
                    let (weights, rest) =
                        values[view.weight..view.end()].split_at_mut(view.weight_len());
                    init_layer(
                        weights,
                        &mut rest[..view.fan_out],
                        (view.fan_in, view.fan_out),
                        init,
                        &mut rng,
                    );
                }
                values
            }
            Model::Network(net) => net.init(init, seed),
        }
    }
}

/// A model's parameters: the model and one flat f32 vector laid out as its tensors say.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub model: Model,
    pub values: Vec<f32>,
}

impl Params {
    /// An MLP's parameters, all zero.
    pub fn zeros(widths: &[usize], activation: Activation) -> Self {
        Params {
            model: Model::Mlp {
                widths: widths.to_vec(),
                activation,
            },
            values: vec![0.0; param_count(widths)],
        }
    }

    /// An MLP's seeded initialisation; the draws depend only on `(seed, widths, init)`.
    pub fn init(widths: &[usize], activation: Activation, init: Init, seed: u64) -> Self {
        let model = Model::Mlp {
            widths: widths.to_vec(),
            activation,
        };
        Params::init_model(model, init, seed)
    }

    /// Any model's seeded initialisation.
    pub fn init_model(model: Model, init: Init, seed: u64) -> Self {
        let values = model.init(init, seed);
        Params { model, values }
    }

    /// Where each layer's weights and bias sit.
    pub fn layers(&self) -> Vec<LayerView> {
        self.model.layer_views()
    }

    /// (name, shape, values) for every tensor, in layer order: `fc1.weight`, `fc1.bias`, ...
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        self.model
            .tensors()
            .into_iter()
            .map(|t| {
                let values = &self.values[t.offset..t.offset + t.len()];
                (t.name, t.dims, values)
            })
            .collect()
    }
}

/// The largest magnitude a parameter may reach before the run counts as diverged although
/// every value is still finite: 2^64, past which a value squared overflows f32. Such a network
/// computes infinities on one path and not on another (the GPU's tanh saturates to exactly ±1
/// and stops the gradient, the CPU's stops just short of it), so judging by finiteness alone
/// would let the two paths disagree about one run; no network of this kind trains to weights
/// within many orders of magnitude of it.
pub const MAX_PARAMETER_MAGNITUDE: f32 = 18_446_744_073_709_551_616.0;

/// The first tensor of a flat vector laid out like `model`'s parameters (parameters, or an
/// optimiser buffer) that holds a non-finite value, or — with `bounded` — one past
/// [`MAX_PARAMETER_MAGNITUDE`]: its name (`fc1.weight`) and the value.
pub fn first_unusable(model: &Model, values: &[f32], bounded: bool) -> Option<(String, f32)> {
    let bad = |v: f32| !v.is_finite() || (bounded && v.abs() > MAX_PARAMETER_MAGNITUDE);
    // The whole vector first: a healthy one (every epoch of every run) costs one pass.
    let i = values.iter().position(|&v| bad(v))?;
    let tensor = model
        .tensors()
        .into_iter()
        .find(|t| i < t.offset + t.len())?;
    Some((tensor.name, values[i]))
}

/// Initialises one layer's `weights` and `biases` from `rng` as `init` says, with the layer's
/// (fan_in, fan_out) as PyTorch counts them (a convolution's are C·K·K and O·K·K). Every layer
/// kind draws through here, so a network of dense layers starts where `Params::init` does.
pub fn init_layer(
    weights: &mut [f32],
    biases: &mut [f32],
    (fan_in, fan_out): (usize, usize),
    init: Init,
    rng: &mut impl RngExt,
) {
    let (fan_in, fan_out) = (fan_in as f64, fan_out as f64);
    match init {
        Init::Paper => {
            for v in weights.iter_mut().chain(biases.iter_mut()) {
                *v = (0.01 * rng.random::<f64>()) as f32;
            }
        }
        Init::Xavier => {
            let a = (6.0 / (fan_in + fan_out)).sqrt();
            for v in weights.iter_mut() {
                *v = (a * (2.0 * rng.random::<f64>() - 1.0)) as f32;
            }
            biases.fill(0.0);
        }
        Init::He => {
            let std = (2.0 / fan_in).sqrt();
            for v in weights.iter_mut() {
                *v = (std * standard_normal(rng)) as f32;
            }
            biases.fill(0.0);
        }
        Init::Pytorch => {
            let a = 1.0 / fan_in.sqrt();
            for v in weights.iter_mut().chain(biases.iter_mut()) {
                *v = (a * (2.0 * rng.random::<f64>() - 1.0)) as f32;
            }
        }
    }
}

/// Box–Muller: one standard normal draw from two uniforms.
fn standard_normal(rng: &mut impl RngExt) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1], so ln never sees 0
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
