//! The reference maths, the spec every fast path is checked against. Matrix products here are
//! plain loops (the fast path uses `cpu::gemm`); the element-wise pieces (activations,
//! softmax-cross-entropy, penalties, the update rule) are shared by both, so there is one
//! definition of each. `docs/derivations.md` derives the formulas.

use super::scalar::Scalar;
use crate::config::{Hyper, Optimizer};
use crate::model::{Activation, LayerView};

/// tanh saturates to ±1 in f32 beyond |x| ≈ 9; clamping keeps every backend's tanh finite
/// (some GPU tanh implementations return NaN for large inputs) without changing any f32 result.
const TANH_CLAMP: f64 = 15.0;

/// Applies the hidden activation in place.
pub fn activation_forward<T: Scalar>(activation: Activation, z: &mut [T]) {
    match activation {
        Activation::None => {}
        Activation::Tanh => {
            let c = T::from_f64(TANH_CLAMP);
            z.iter_mut()
                .for_each(|v| *v = v.max(-c).min(c).tanh_activation());
        }
        Activation::Sigmoid => z.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Relu => z.iter_mut().for_each(|v| *v = v.max(T::zero())),
    }
}

/// Numerically stable logistic function: never evaluates exp of a large positive number.
pub fn sigmoid<T: Scalar>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// Multiplies `grad` (dL/da) by the activation's derivative, written in terms of the
/// activation's output `a`, giving dL/dz in place.
pub fn activation_backward<T: Scalar>(activation: Activation, a: &[T], grad: &mut [T]) {
    match activation {
        Activation::None => {}
        Activation::Tanh => grad
            .iter_mut()
            .zip(a)
            .for_each(|(g, &a)| *g = *g * (T::one() - a * a)),
        Activation::Sigmoid => grad
            .iter_mut()
            .zip(a)
            .for_each(|(g, &a)| *g = *g * a * (T::one() - a)),
        // A select rather than a conditional store, so it runs in vector lanes.
        Activation::Relu => grad
            .iter_mut()
            .zip(a)
            .for_each(|(g, &a)| *g = if a <= T::zero() { T::zero() } else { *g }),
    }
}

/// Softmax + cross-entropy over `rows` rows of `classes` logits. Returns the summed loss and the
/// number of rows whose arg-max (first maximum) equals the label. When `grad` is given it
/// receives (softmax − one-hot) · `scale` per element: the loss gradient w.r.t. the logits.
pub fn softmax_xent<T: Scalar>(
    logits: &[T],
    labels: &[u8],
    classes: usize,
    scale: T,
    mut grad: Option<&mut [T]>,
) -> (f64, usize) {
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for (row, (z, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let label = label as usize;
        let (mut argmax, mut max) = (0, z[0]);
        for (c, &v) in z.iter().enumerate().skip(1) {
            if v > max {
                (argmax, max) = (c, v);
            }
        }
        // Subtracting the row max keeps exp from overflowing.
        let sum: T = z.iter().map(|&v| (v - max).exp()).sum();
        loss_sum += (sum.ln() + max - z[label]).to_f64();
        correct += usize::from(argmax == label);
        if let Some(g) = grad.as_deref_mut() {
            let g = &mut g[row * classes..(row + 1) * classes];
            let inv = T::one() / sum;
            for (c, (gv, &v)) in g.iter_mut().zip(z).enumerate() {
                let p = (v - max).exp() * inv;
                let target = if c == label { T::one() } else { T::zero() };
                *gv = (p - target) * scale;
            }
        }
    }
    (loss_sum, correct)
}

/// sign(w) with sign(0) = 0, the L1 subgradient PyTorch uses.
fn sign<T: Scalar>(w: T) -> T {
    if w > T::zero() {
        T::one()
    } else if w < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

/// Gradient of the penalty λ1·|w| + (λ2/2)·w² for one weight.
#[inline]
pub fn penalty_grad<T: Scalar>(w: T, l1: T, l2: T) -> T {
    l1 * sign(w) + l2 * w
}

/// The penalty λ1·Σ|w| + (λ2/2)·Σw² over the weights (biases are not penalised).
pub fn penalty<T: Scalar>(params: &[T], layers: &[LayerView], l1: f64, l2: f64) -> f64 {
    layers
        .iter()
        .flat_map(|v| &params[v.weight..v.bias])
        .map(|&w| {
            let w = w.to_f64();
            l1 * w.abs() + 0.5 * l2 * w * w
        })
        .sum()
}

/// Optimiser state that lives beside the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState<T> {
    /// Momentum velocity, or Adam's first moment.
    pub first: Vec<T>,
    /// Adam's second moment (empty for SGD).
    pub second: Vec<T>,
    /// Steps taken so far (Adam's bias correction needs it).
    pub step: u64,
}

impl<T: Scalar> OptimizerState<T> {
    pub fn new(len: usize) -> Self {
        OptimizerState {
            first: vec![T::zero(); len],
            second: vec![T::zero(); len],
            step: 0,
        }
    }
}

/// Adam's bias corrections at step `t` (1-based): (1 / (1 − β1ᵗ), 1 / (1 − β2ᵗ)). The CPU update
/// and the GPU engine's per-step uniforms both take them from here.
pub fn adam_corrections(hyper: &Hyper, t: u64) -> (f64, f64) {
    let t = t.min(i32::MAX as u64) as i32;
    (
        1.0 / (1.0 - hyper.adam_beta1.powi(t)),
        1.0 / (1.0 - hyper.adam_beta2.powi(t)),
    )
}

/// The parameter vector as runs of (index range, penalised): weights are penalised, biases not.
/// An iterator, not a Vec: the update runs every step, and wgtrain allocates nothing in a step.
pub fn penalty_runs(
    layers: &[LayerView],
) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + '_ {
    layers
        .iter()
        .flat_map(|v| [(v.weight..v.bias, true), (v.bias..v.end(), false)])
}

/// One update of every parameter from the loss gradient `grad`, adding the L1/L2 penalty
/// gradient to weights (not biases). SGD with momentum follows the paper's rule (5):
/// v ← γ·v − α·g, w ← w + v (with γ = 0 this is plain SGD, rule (3)).
pub fn update<T: Scalar>(
    params: &mut [T],
    grad: &[T],
    state: &mut OptimizerState<T>,
    layers: &[LayerView],
    hyper: &Hyper,
) {
    state.step += 1;
    update_range(
        params,
        grad,
        &mut state.first,
        &mut state.second,
        0,
        state.step,
        layers,
        hyper,
    );
}

/// [`update`] for the parameters `offset..offset + w.len()` at optimiser step `t` (the slices
/// hold just that range), so threads can update disjoint ranges of one step.
#[allow(clippy::too_many_arguments)]
pub fn update_range<T: Scalar>(
    w: &mut [T],
    grad: &[T],
    first: &mut [T],
    second: &mut [T],
    offset: usize,
    t: u64,
    layers: &[LayerView],
    hyper: &Hyper,
) {
    let lr = T::from_f64(hyper.learning_rate);
    for (run, penalised) in penalty_runs(layers) {
        let (lo, hi) = (run.start.max(offset), run.end.min(offset + w.len()));
        if lo >= hi {
            continue;
        }
        let r = (lo - offset)..(hi - offset);
        let (l1, l2) = if penalised {
            (T::from_f64(hyper.l1), T::from_f64(hyper.l2))
        } else {
            (T::zero(), T::zero())
        };
        let (w, g) = (&mut w[r.clone()], &grad[r.clone()]);
        match hyper.optimizer {
            Optimizer::Sgd => {
                let gamma = T::from_f64(hyper.momentum_gamma);
                for ((w, &g), v) in w.iter_mut().zip(g).zip(&mut first[r]) {
                    let g = g + penalty_grad(*w, l1, l2);
                    *v = gamma * *v - lr * g;
                    *w = *w + *v;
                }
            }
            Optimizer::Adam => {
                let (b1, b2) = (hyper.adam_beta1, hyper.adam_beta2);
                let (c1, c2) = adam_corrections(hyper, t);
                let (c1, c2) = (T::from_f64(c1), T::from_f64(c2));
                let (b1, b2, eps) = (
                    T::from_f64(b1),
                    T::from_f64(b2),
                    T::from_f64(hyper.adam_epsilon),
                );
                for (((w, &g), m), s) in w
                    .iter_mut()
                    .zip(g)
                    .zip(&mut first[r.clone()])
                    .zip(&mut second[r])
                {
                    let g = g + penalty_grad(*w, l1, l2);
                    *m = b1 * *m + (T::one() - b1) * g;
                    *s = b2 * *s + (T::one() - b2) * g * g;
                    *w = *w - lr * (*m * c1) / ((*s * c2).sqrt() + eps);
                }
            }
        }
    }
}

/// Reference linear layer: out (B, O) = x (B, I) · wᵀ + b, accumulated in f64.
pub fn linear_forward_reference<T: Scalar>(
    x: &[T],
    w: &[T],
    b: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); rows * fan_out];
    for r in 0..rows {
        for o in 0..fan_out {
            let mut acc = b[o].to_f64();
            for i in 0..fan_in {
                acc += x[r * fan_in + i].to_f64() * w[o * fan_in + i].to_f64();
            }
            out[r * fan_out + o] = T::from_f64(acc);
        }
    }
    out
}

/// Reference weight and bias gradients: dw (O, I) = dzᵀ·a, db (O) = column sums of dz.
pub fn linear_backward_params_reference<T: Scalar>(
    dz: &[T],
    a: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
) -> (Vec<T>, Vec<T>) {
    let mut dw = vec![T::zero(); fan_out * fan_in];
    let mut db = vec![T::zero(); fan_out];
    for o in 0..fan_out {
        for i in 0..fan_in {
            let acc: f64 = (0..rows)
                .map(|r| dz[r * fan_out + o].to_f64() * a[r * fan_in + i].to_f64())
                .sum();
            dw[o * fan_in + i] = T::from_f64(acc);
        }
        db[o] = T::from_f64((0..rows).map(|r| dz[r * fan_out + o].to_f64()).sum());
    }
    (dw, db)
}

/// Reference input gradient: da (B, I) = dz (B, O) · w (O, I).
pub fn linear_backward_input_reference<T: Scalar>(
    dz: &[T],
    w: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
) -> Vec<T> {
    let mut da = vec![T::zero(); rows * fan_in];
    for r in 0..rows {
        for i in 0..fan_in {
            let acc: f64 = (0..fan_out)
                .map(|o| dz[r * fan_out + o].to_f64() * w[o * fan_in + i].to_f64())
                .sum();
            da[r * fan_in + i] = T::from_f64(acc);
        }
    }
    da
}

// CPU twins of the WGSL entry points: one function per entry point, of the same name, built
// from the references above (a fused kernel's twin is the unfused references in its order).
// `check::check_<kernel>` compares each kernel with its twin; docs/architecture.md.

/// What one dispatch of WGSL `matmul` computes, as its `MatmulParams` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulMode {
    /// out (B, O) = act(a (B, I) · b (O, I)ᵀ + extra (O)): a layer's forward pass.
    Forward(Activation),
    /// out = dw (O, I) = a (B, O)ᵀ · b (B, I), then db (O) = Σ_rows a: a layer's parameter
    /// gradient from its dz (`a`) and its input (`b`).
    WeightGrad,
    /// out (B, I) = (a (B, O) · b (O, I)) ⊙ act′, the derivative written through the
    /// activation's output `extra` (B, I): the input gradient of the layer below.
    InputGrad(Activation),
}

/// CPU twin of WGSL `matmul` (f64 accumulation; see [`MatmulMode`] for the operands).
pub fn matmul<T: Scalar>(
    mode: MatmulMode,
    a: &[T],
    b: &[T],
    extra: &[T],
    rows: usize,
    fan_in: usize,
    fan_out: usize,
) -> Vec<T> {
    match mode {
        MatmulMode::Forward(activation) => {
            let mut out = linear_forward_reference(a, b, extra, rows, fan_in, fan_out);
            activation_forward(activation, &mut out);
            out
        }
        MatmulMode::WeightGrad => {
            let (mut dw, db) = linear_backward_params_reference(a, b, rows, fan_in, fan_out);
            dw.extend(db);
            dw
        }
        MatmulMode::InputGrad(activation) => {
            let mut da = linear_backward_input_reference(a, b, rows, fan_in, fan_out);
            activation_backward(activation, extra, &mut da);
            da
        }
    }
}

/// CPU twin of WGSL `gather_batch`: the images at `indices` of `pixels` (`features` bytes
/// each), each z-scored on its own, as (rows, features).
pub fn gather_batch(pixels: &[u8], features: usize, indices: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0; indices.len() * features];
    for (row, &i) in out.chunks_exact_mut(features.max(1)).zip(indices) {
        let i = i as usize;
        crate::data::prep::zscore_to(&pixels[i * features..(i + 1) * features], row);
    }
    out
}

/// CPU twin of WGSL `matmul_gather`: [`gather_batch`] then the first layer's forward
/// [`matmul`], `w` (O, I) and `bias` (O).
pub fn matmul_gather(
    pixels: &[u8],
    features: usize,
    indices: &[u32],
    w: &[f64],
    bias: &[f64],
    fan_out: usize,
    activation: Activation,
) -> Vec<f64> {
    let x: Vec<f64> = gather_batch(pixels, features, indices)
        .iter()
        .map(|&v| v as f64)
        .collect();
    matmul(
        MatmulMode::Forward(activation),
        &x,
        w,
        bias,
        indices.len(),
        features,
        fan_out,
    )
}

/// CPU twin of WGSL `batch_stats`: a split's (loss, correct) sums over the per-row pairs
/// softmax_xent left.
pub fn batch_stats(row_loss: &[f64], row_correct: &[f64]) -> (f64, f64) {
    (row_loss.iter().sum(), row_correct.iter().sum())
}

/// CPU twin of WGSL `matmul_softmax_xent`: the output layer's logits ([`matmul`] forward,
/// no activation) through [`softmax_xent`] with `scale`, and when `below` is given — the
/// layer below's activation and its outputs (rows, I) — the input gradient into it
/// ([`matmul`] input-gradient mode). Returns (loss sum, correct, dz, input gradient).
#[allow(clippy::too_many_arguments)]
pub fn matmul_softmax_xent(
    x: &[f64],
    w: &[f64],
    bias: &[f64],
    labels: &[u8],
    scale: f64,
    fan_in: usize,
    classes: usize,
    below: Option<Activation>,
) -> (f64, usize, Vec<f64>, Option<Vec<f64>>) {
    let rows = labels.len();
    let logits = matmul(
        MatmulMode::Forward(Activation::None),
        x,
        w,
        bias,
        rows,
        fan_in,
        classes,
    );
    let mut dz = vec![0.0; rows * classes];
    let (loss, correct) = softmax_xent(&logits, labels, classes, scale, Some(&mut dz));
    let input_grad = below.map(|activation| {
        matmul(
            MatmulMode::InputGrad(activation),
            &dz,
            w,
            x,
            rows,
            fan_in,
            classes,
        )
    });
    (loss, correct, dz, input_grad)
}

/// CPU twin of WGSL `matmul_update`: each layer's weight and bias gradient ([`matmul`]
/// weight-gradient mode, from its dz and input) applied to `params` by the optimiser
/// ([`update`]); `operands` holds (layer, dz, input) for the layers of the dispatch, and the
/// other layers' parameters are left as they were. Returns the gradient it applied (zero
/// outside those layers).
pub fn matmul_update<T: Scalar>(
    params: &mut [T],
    operands: &[(LayerView, &[T], &[T])],
    rows: usize,
    state: &mut OptimizerState<T>,
    hyper: &Hyper,
) -> Vec<T> {
    let mut grad = vec![T::zero(); params.len()];
    for (v, dz, a) in operands {
        let g = matmul(
            MatmulMode::WeightGrad,
            dz,
            a,
            &[],
            rows,
            v.fan_in,
            v.fan_out,
        );
        grad[v.weight..v.end()].copy_from_slice(&g);
    }
    let layers: Vec<LayerView> = operands.iter().map(|(v, _, _)| *v).collect();
    update(params, &grad, state, &layers, hyper);
    grad
}
