// update.wgsl — update: one fused pass over the flat parameter vector.
//   g = grad + penalised · (λ1·sign(w) + λ2·w)        (penalised = 1 for weights, 0 for biases)
//   SGD / momentum (paper rule 5): v ← γ·v − α·g; w ← w + v
//   Adam: m ← β1·m + (1−β1)·g; s ← β2·s + (1−β2)·g²; w ← w − α·(m·c1) / (√(s·c2) + ε)
// Invocation 0 also sums the step's per-row losses and correct flags (written by softmax_xent)
// into stats[stat_slot], in row order: what batch_stats does for evaluation chunks, without a
// dispatch of its own in training.
// CPU twin: cpu::ops::update (same expression order). Test: check.rs::check_update.
// Bindings (group 0):
//   0 params    read_write  f32
//   1 grads     read        f32
//   2 first     read_write  f32 (velocity, or Adam's m)
//   3 second    read_write  f32 (Adam's s)
//   4 penalised read        f32 mask, 1 on weights
//   5 row_loss  read        f32 per row, row_correct at [capacity + r] (softmax_xent's output)
//   6 stats     read_write  vec2<f32> per slot
//   7 p         uniform     UpdateParams (Rust: kernels.rs::UpdateParams)
// Dispatch: one invocation per parameter, 256 per workgroup (grid from kernels.rs::grid).

struct UpdateParams {
    count: u32, optimizer: u32, gamma: f32, l1: f32,
    l2: f32, beta1: f32, beta2: f32, epsilon: f32,
    capacity: u32, _a: u32, _b: u32, _c: u32,
}

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> first: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;
@group(0) @binding(4) var<storage, read> penalised: array<f32>;
@group(0) @binding(5) var<storage, read> row_loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(7) var<uniform> p: UpdateParams;

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups, 256u);
    if i == 0u {
        var loss = 0.0;
        var correct = 0.0;
        for (var r = 0u; r < step.rows; r++) {
            loss += row_loss[r];
            correct += row_loss[p.capacity + r];
        }
        stats[step.stat_slot] = vec2<f32>(loss, correct);
    }
    if i >= p.count { return; }
    let w = params[i];
    let g = grads[i] + penalised[i] * (p.l1 * sign(w) + p.l2 * w);
    let lr = step.learning_rate;
    if p.optimizer == 0u {
        let v = p.gamma * first[i] - lr * g;
        first[i] = v;
        params[i] = w + v;
    } else {
        let m = p.beta1 * first[i] + (1.0 - p.beta1) * g;
        let s = p.beta2 * second[i] + (1.0 - p.beta2) * g * g;
        first[i] = m;
        second[i] = s;
        params[i] = w - lr * (m * step.adam_c1) / (sqrt(s * step.adam_c2) + p.epsilon);
    }
}
