//! The backend-free core at the bottom of the crate: what a model is and everything about it
//! that needs no hardware. A model is a [`Network`], a list of layers planned against its
//! input; its parameters are one flat vector with named views ([`Params`]); initialisation,
//! the run's random streams, dropout masks and the shapes every backend plans from live here.
//! Both backends import this module; it imports neither.
//!
//! Shape legend used across the crate: B batch rows, I fan-in, O fan-out, C classes.
//! Parameter layout, layer after layer: `fc{l}.weight` (O, I) row-major (PyTorch `nn.Linear`),
//! then `fc{l}.bias` (O), and a convolution's `conv{l}.weight` (O, C, K, K) then `conv{l}.bias`
//! (O). Layers are numbered from 1 within each kind.

pub mod dropout;
pub mod init;
pub mod layer;
pub mod network;
pub mod rng;
pub mod shape;

use std::sync::Arc;

pub use init::{Init, init_layer};
pub use layer::{Activation, Layer, LayerSpec, layers_of};
pub use network::{
    LayerView, MAX_COUNT, Network, Planned, layer_views, param_count, param_count_u128,
};
pub use shape::{Conv2d, ImageShape, MAX_KERNEL, MaxPool2d, Tensor};

/// A model's parameters: the network and one flat f32 vector laid out as its tensors say.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub model: Arc<Network>,
    pub values: Vec<f32>,
}

impl Params {
    /// `model`'s parameters, all zero.
    pub fn zeros(model: Arc<Network>) -> Self {
        let values = vec![0.0; model.param_count];
        Params { model, values }
    }

    /// The seeded initialisation of the network `layers = widths` with `activation` declares;
    /// the error says why no network has these widths.
    pub fn init(
        widths: &[usize],
        activation: Activation,
        init: Init,
        seed: u64,
    ) -> Result<Self, String> {
        let model = Network::dense(widths, activation)?;
        Ok(Params::init_model(Arc::new(model), init, seed))
    }

    /// Any model's seeded initialisation: the draws depend only on `(seed, model, init)`.
    pub fn init_model(model: Arc<Network>, init: Init, seed: u64) -> Self {
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
pub fn first_unusable(model: &Network, values: &[f32], bounded: bool) -> Option<(String, f32)> {
    let bad = |v: f32| !v.is_finite() || (bounded && v.abs() > MAX_PARAMETER_MAGNITUDE);
    // The whole vector first: a healthy one (every epoch of every run) costs one pass.
    let i = values.iter().position(|&v| bad(v))?;
    let tensor = model
        .tensors()
        .into_iter()
        .find(|t| i < t.offset + t.len())?;
    Some((tensor.name, values[i]))
}
