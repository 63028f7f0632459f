// update.wgsl — update: one fused pass over the flat parameter vector.
//   g = grad + penalised · (λ1·sign(w) + λ2·w)        (penalised = 1 for weights, 0 for biases)
//   SGD / momentum (paper rule 5): v ← γ·v − α·g; w ← w + v
//   Adam: m ← β1·m + (1−β1)·g; s ← β2·s + (1−β2)·g²; w ← w − α·(m·c1) / (√(s·c2) + ε)
// Invocation 0 also sums the step's per-row losses and correct flags (written by softmax_xent)
// into stats[stat_slot], in row order: what batch_stats does for evaluation chunks, without a
// dispatch of its own in training.
// Hyperparameters come per model from `models` (a model with training = 0 is left alone: it has
// stopped early while the others of its pack train on). Per model (z): params, grads, first,
// second from model·count, row_loss from model·2·capacity, stats from model·slots.
// CPU twin: cpu::ops::update (same expression order). Test: check/kernels.rs::check_update.
// Bindings (group 0):
//   0 params    read_write  f32
//   1 grads     read        f32
//   2 first     read_write  f32 (velocity, or Adam's m)
//   3 second    read_write  f32 (Adam's s)
//   4 penalised read        f32 mask, 1 on weights
//   5 row_loss  read        f32 per row, row_correct at [capacity + r] (softmax_xent's output)
//   6 stats     read_write  vec2<f32> per slot
//   7 models    read        Model per model (common.wgsl)
//   8 p         uniform     UpdateParams (Rust: kernels.rs::UpdateParams)
// Dispatch: one invocation per parameter, 256 per workgroup (grid from kernels.rs::grid),
// models along z.

struct UpdateParams { count: u32, capacity: u32, slots: u32, _a: u32 }

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> first: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;
@group(0) @binding(4) var<storage, read> penalised: array<f32>;
@group(0) @binding(5) var<storage, read> row_loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> models: array<Model>;
@group(0) @binding(8) var<uniform> p: UpdateParams;

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let model = step.first_model + gid.z;
    let h = models[model];
    if h.training == 0u { return; }
    let i = linear_index(gid, groups, 256u);
    if i == 0u {
        let losses = model * 2u * p.capacity;
        var loss = 0.0;
        var correct = 0.0;
        for (var r = 0u; r < step.rows; r++) {
            loss += row_loss[losses + r];
            correct += row_loss[losses + p.capacity + r];
        }
        stats[model * p.slots + step.stat_slot] = vec2<f32>(loss, correct);
    }
    if i >= p.count { return; }
    let at = model * p.count + i;
    let w = params[at];
    let g = grads[at] + penalised[i] * (h.l1 * sign(w) + h.l2 * w);
    let lr = h.learning_rate;
    if h.optimizer == 0u {
        let v = h.gamma * first[at] - lr * g;
        first[at] = v;
        params[at] = w + v;
    } else {
        let m = h.beta1 * first[at] + (1.0 - h.beta1) * g;
        let s = h.beta2 * second[at] + (1.0 - h.beta2) * g * g;
        first[at] = m;
        second[at] = s;
        params[at] = w - lr * (m * step.adam_c1) / (sqrt(s * step.adam_c2) + h.epsilon);
    }
}
