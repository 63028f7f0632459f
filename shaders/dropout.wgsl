// dropout.wgsl — dropout_forward: over `len` elements (or, with per_row > 0, the step's rows
// × per_row) from x_off of each model's slice of work to z_off (the same offset: in place),
// z[e] = x[e] · scale where the mask keeps element e, else 0 (inverted dropout: scale is
// 1 / (1 − p), computed on the host in f32 so both paths multiply by the same number).
// The mask is a pure function of (seed, epoch, step, layer, e) in u32 arithmetic only (epoch
// and step from the uniform, or with from_step = 1 the step uniform's dropout counters), which
// WGSL (no 64-bit integers) and Rust evaluate to the same bits: no generator state, so a
// resumed run, a pack and the CPU draw the same masks. The same function serves the backward
// pass (the gradient goes through where the value did, with the same scale).
// CPU twin: dropout::dropout_forward (generator: dropout::dropout_bits, hash: dropout::hash32).
// Test: tests/gpu.rs::dropout_forward_matches_the_cpu_reference.
// Bindings (group 0):
//   0 work    read_write  f32: x (len) at x_off, z at z_off, of each model's slice (model·work_ms on)
//   1 params  uniform     DropoutParams (Rust: uniforms.rs::DropoutParams)
// Dispatch: one invocation per element, 256 per workgroup, grid from kernels.rs::grid, models
// along z.

struct DropoutParams {
    seed_lo: u32,
    seed_hi: u32,
    epoch: u32,
    step: u32,
    layer: u32,
    threshold: u32, // dropped when the top 24 of the element's bits are below it: p · 2^24
    scale: f32,
    len: u32,
    work_ms: u32,
    x_off: u32,
    z_off: u32,
    from_step: u32, // 1: epoch and step are the step uniform's dropout counters
    per_row: u32,   // > 0: len is the step's rows × per_row
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<uniform> p: DropoutParams;

// Chris Wellons' lowbias32; u32 multiplication wraps in WGSL as wrapping_mul does in Rust.
fn hash32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn dropout_bits(e: u32) -> u32 {
    var h = hash32(p.seed_lo ^ 0x9e3779b9u);
    h = hash32(h ^ p.seed_hi);
    let epoch = select(p.epoch, step.dropout_epoch, p.from_step == 1u);
    let counter = select(p.step, step.dropout_step, p.from_step == 1u);
    h = hash32(h ^ epoch);
    h = hash32(h ^ counter);
    h = hash32(h ^ p.layer);
    return hash32(h ^ e);
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let len = select(p.len, step.rows * p.per_row, p.per_row > 0u);
    if e >= len { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let kept = (dropout_bits(e) >> 8u) >= p.threshold;
    work[base + p.z_off + e] = select(0.0, work[base + p.x_off + e] * p.scale, kept);
}
