// softmax_xent.wgsl — fused softmax + cross-entropy + its gradient, and the batch's sums.
// softmax_xent: per row r (one invocation each), with z the logits and y = labels[indices[offset + r]]:
//   p = exp(z − max z) / Σ exp(z − max z);  loss_r = ln Σ exp(z − max z) + max z − z_y
//   dz = (p − onehot(y)) · scale;  correct_r = [first arg-max == y]
// batch_stats: sums loss_r and correct_r over the batch in row order (no float atomics: the
//   result repeats bit for bit) into stats[stat_slot] = (loss sum, correct). One invocation
//   adds each sum, as a plain loop would, but from workgroup memory that the workgroup fills
//   256 rows at a time: reading storage itself, one row per iteration, it waited out a memory
//   latency per row (1,024 per evaluation chunk). matmul.wgsl's sum_batch_stats does the same
//   inside the update.
// Per model (z): logits, dz and the row losses sit in the model's slice of work (model·work_ms
// on, at logits_off, dz_off, row_loss_off), indices from model·index_ms, stats from
// model·slots; labels are shared (the image pool's).
// Training steps and evaluation chunks of models with at most 16 classes use its fused twin,
// matmul.wgsl's matmul_softmax_xent (same expressions, same order); this kernel serves wider
// output layers, and batch_stats every evaluation chunk.
// CPU twin: cpu::ops::softmax_xent. Test: check/kernels.rs::check_softmax_xent.
// Bindings (group 0):
//   0 work     read_write  f32: logits (rows, classes), dz (rows, classes), row losses (f32 per
//                          row, row_correct packed beside them at [capacity + r])
//   1 labels   read        u32 per image of the pool
//   2 indices  read        u32 rows of the pool, per model
//   3 stats    read_write  vec2<f32> per slot
//   4 p        uniform     XentParams (Rust: uniforms.rs::XentParams)
// Dispatch: softmax_xent (ceil(rows/64), 1, models) workgroups of 64; batch_stats (1, 1, models)
// workgroups of 256.

struct XentParams {
    classes: u32, capacity: u32, index_ms: u32, slots: u32,
    work_ms: u32, logits_off: u32, dz_off: u32, row_loss_off: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> p: XentParams;

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if r >= step.rows { return; }
    let model = step.first_model + gid.z;
    let slice = model * p.work_ms;
    let base = slice + p.logits_off + r * p.classes;
    let grad = slice + p.dz_off + r * p.classes;
    let losses = slice + p.row_loss_off;
    let label = labels[indices[model * p.index_ms + step.offset + r]];
    var argmax = 0u;
    var zmax = work[base];
    for (var c = 1u; c < p.classes; c++) {
        let v = work[base + c];
        if v > zmax { zmax = v; argmax = c; }
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) { sum += exp(work[base + c] - zmax); }
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.classes; c++) {
        let prob = exp(work[base + c] - zmax) * inv;
        work[grad + c] = (prob - select(0.0, 1.0, c == label)) * step.scale;
    }
    work[losses + r] = log(sum) + zmax - work[base + label];
    work[losses + p.capacity + r] = select(0.0, 1.0, argmax == label);
}

// Rows batch_stats brings into workgroup memory at a time (its workgroup size).
const STATS_ROWS: u32 = 256u;
var<workgroup> row_stats: array<vec2<f32>, STATS_ROWS>;

@compute @workgroup_size(256)
fn batch_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) me: u32) {
    let model = step.first_model + wid.z;
    let losses = model * p.work_ms + p.row_loss_off;
    var loss = 0.0;
    var correct = 0.0;
    for (var first = 0u; first < step.rows; first += STATS_ROWS) {
        let r = first + me;
        var row = vec2<f32>(0.0, 0.0);
        if r < step.rows { row = vec2<f32>(work[losses + r], work[losses + p.capacity + r]); }
        workgroupBarrier(); // the previous rows are summed
        row_stats[me] = row;
        workgroupBarrier();
        let count = min(STATS_ROWS, step.rows - first);
        if me == 0u {
            for (var i = 0u; i < count; i++) { loss += row_stats[i].x; }
        } else if me == 1u {
            for (var i = 0u; i < count; i++) { correct += row_stats[i].y; }
        }
    }
    workgroupBarrier();
    if me == 1u { row_stats[0].y = correct; }
    workgroupBarrier();
    if me == 0u { stats[model * p.slots + step.stat_slot] = vec2<f32>(loss, row_stats[0].y); }
}
