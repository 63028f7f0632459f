// common.wgsl — prepended to every kernel file by src/gpu/shaders.rs.
// The per-step uniform (Rust twin: src/gpu/uniforms.rs::StepUniform), the per-model
// hyperparameters (Rust twin: uniforms.rs::ModelHyper) and the activations.
// The step uniform is bound at group(1) with a dynamic offset: one 256-byte slot per
// mini-batch (or evaluation chunk), written once per epoch, so a whole epoch is recorded
// without the host touching anything between steps.
//
// Packing: the device holds K models of one shape side by side (every per-model buffer is K
// equal slices). Every kernel takes the model as the third dispatch dimension: model =
// step.first_model + workgroup_id.z, so one dispatch serves all K models (a sweep) or one
// (K = 1, or evaluating a single model of a pack).

struct Step {
    offset: u32,      // first row of this batch in the split's index buffer
    rows: u32,        // rows in this batch (the last batch of an epoch may be short)
    scale: f32,       // gradient scale: 1/rows (mean) or 1 (sum)
    adam_c1: f32,     // 1 / (1 - beta1^t)
    adam_c2: f32,     // 1 / (1 - beta2^t)
    stat_slot: u32,   // where batch_stats writes (loss sum, correct count)
    first_model: u32, // model of workgroup_id.z == 0
    // The dropout masks' counters for this step (dropout.wgsl with from_step = 1): the 64-bit
    // optimiser step being taken, in its high and low words, as cpu::network_engine draws them.
    dropout_epoch: u32,
    dropout_step: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(1) @binding(0) var<uniform> step: Step;

// One model's hyperparameters, written once per epoch (read by matmul.wgsl).
struct Model {
    learning_rate: f32,
    gamma: f32,       // momentum γ (0: plain SGD)
    l1: f32,
    l2: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    activation: u32,  // of the hidden layers: ACT_*
    optimizer: u32,   // 0: SGD/momentum; 1: Adam
    training: u32,    // 0: the model has stopped training; update leaves it alone
    _a: u32,
    _b: u32,
}

const ACT_NONE: u32 = 0u;
const ACT_TANH: u32 = 1u;
const ACT_SIGMOID: u32 = 2u;
const ACT_RELU: u32 = 3u;

// tanh is ±1 in f32 beyond |x| ≈ 9; clamping keeps backends whose tanh overflows for large
// inputs (gpuweb#4458) finite without changing any f32 result. Same clamp as cpu/ops.rs.
const TANH_CLAMP: f32 = 15.0;

fn activate(x: f32, kind: u32) -> f32 {
    switch kind {
        case 1u: { return tanh(clamp(x, -TANH_CLAMP, TANH_CLAMP)); }
        case 2u: {
            // Stable logistic: exp of a non-positive number only.
            if x >= 0.0 { return 1.0 / (1.0 + exp(-x)); }
            let e = exp(x);
            return e / (1.0 + e);
        }
        case 3u: { return max(x, 0.0); }
        default: { return x; }
    }
}

// Derivative of the activation written through its output a.
fn activation_slope(a: f32, kind: u32) -> f32 {
    switch kind {
        case 1u: { return 1.0 - a * a; }
        case 2u: { return a * (1.0 - a); }
        case 3u: { return select(0.0, 1.0, a > 0.0); }
        default: { return 1.0; }
    }
}

// One optimiser step for a parameter w with loss gradient g (its penalty included), of the
// model `h`: SGD with the paper's momentum rule (5), v ← γ·v − α·g, w ← w + v, returning
// (w, v); or Adam, m ← β1·m + (1−β1)·g, s ← β2·s + (1−β2)·g², w ← w − α·(m·c1)/(√(s·c2) + ε)
// with the step's corrections, returning (w, m, s). matmul.wgsl's matmul_update and
// update.wgsl's update both step through these, so they apply one rule.
fn momentum_step(h: Model, w: f32, g: f32, v: f32) -> vec2<f32> {
    let next = h.gamma * v - h.learning_rate * g;
    return vec2<f32>(w + next, next);
}

fn adam_step(h: Model, w: f32, g: f32, m: f32, s: f32) -> vec3<f32> {
    let m1 = h.beta1 * m + (1.0 - h.beta1) * g;
    let s1 = h.beta2 * s + (1.0 - h.beta2) * g * g;
    let w1 = w - h.learning_rate * (m1 * step.adam_c1) / (sqrt(s1 * step.adam_c2) + h.epsilon);
    return vec3<f32>(w1, m1, s1);
}

// Linear invocation index over a grid that may be 2-D when one dimension would exceed 65535.
fn linear_index(gid: vec3<u32>, groups: vec3<u32>, width: u32) -> u32 {
    return gid.x + gid.y * groups.x * width;
}
