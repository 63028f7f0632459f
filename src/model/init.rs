//! Seeded initialisation: the schemes, and the one rule every layer kind draws its weights
//! and biases by.

use rand::RngExt;
use serde::{Deserialize, Serialize};

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
