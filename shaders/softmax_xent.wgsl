// softmax_xent.wgsl — fused softmax + cross-entropy + its gradient, and the batch's sums.
// softmax_xent: per row r (one invocation each), with z the logits and y = labels[indices[offset + r]]:
//   p = exp(z − max z) / Σ exp(z − max z);  loss_r = ln Σ exp(z − max z) + max z − z_y
//   dz = (p − onehot(y)) · scale;  correct_r = [first arg-max == y]
// batch_stats: one invocation sums loss_r and correct_r over the batch in row order (no float
//   atomics: the result repeats bit for bit) into stats[stat_slot] = (loss sum, correct).
// Per model (z): logits, dz from model·capacity·classes, row_loss from model·2·capacity,
// indices from model·index_ms, stats from model·slots; labels are shared (the image pool's).
// Training steps and evaluation chunks of models with at most 16 classes use its fused twin,
// matmul.wgsl's matmul_softmax_xent (same expressions, same order); this kernel serves wider
// output layers, and batch_stats every evaluation chunk.
// CPU twin: cpu::ops::softmax_xent. Test: tests/gpu.rs::softmax_xent_matches_reference.
// Bindings (group 0):
//   0 logits   read        (rows, classes) f32
//   1 labels   read        u32 per image of the pool
//   2 indices  read        u32 rows of the pool, per model
//   3 dz       read_write  (rows, classes) f32
//   4 row_loss read_write  f32 per row; row_correct packed beside it at [capacity + r]
//   5 stats    read_write  vec2<f32> per slot
//   6 p        uniform     XentParams (Rust: kernels.rs::XentParams)
// Dispatch: softmax_xent (ceil(rows/64), 1, models) workgroups of 64; batch_stats (1, 1, models)
// workgroups of 1.

struct XentParams { classes: u32, capacity: u32, index_ms: u32, slots: u32 }

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(6) var<uniform> p: XentParams;

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if r >= step.rows { return; }
    let model = step.first_model + gid.z;
    let base = (model * p.capacity + r) * p.classes;
    let losses = model * 2u * p.capacity;
    let label = labels[indices[model * p.index_ms + step.offset + r]];
    var argmax = 0u;
    var zmax = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        let v = logits[base + c];
        if v > zmax { zmax = v; argmax = c; }
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) { sum += exp(logits[base + c] - zmax); }
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.classes; c++) {
        let prob = exp(logits[base + c] - zmax) * inv;
        dz[base + c] = (prob - select(0.0, 1.0, c == label)) * step.scale;
    }
    row_loss[losses + r] = log(sum) + zmax - logits[base + label];
    row_loss[losses + p.capacity + r] = select(0.0, 1.0, argmax == label);
}

@compute @workgroup_size(1)
fn batch_stats(@builtin(workgroup_id) wid: vec3<u32>) {
    let model = step.first_model + wid.z;
    let losses = model * 2u * p.capacity;
    var loss = 0.0;
    var correct = 0.0;
    for (var r = 0u; r < step.rows; r++) {
        loss += row_loss[losses + r];
        correct += row_loss[losses + p.capacity + r];
    }
    stats[model * p.slots + step.stat_slot] = vec2<f32>(loss, correct);
}
