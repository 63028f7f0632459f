// dropout.wgsl — dropout_forward: in place over `len` elements at x_off of each model's slice of
// work, x[e] = x[e] · scale where the mask keeps element e, else 0 (inverted dropout: scale is
// 1 / (1 − p), computed on the host in f32 so both paths multiply by the same number).
// The mask is a pure function of (seed, epoch, step, layer, e) in u32 arithmetic only, which
// WGSL (no 64-bit integers) and Rust evaluate to the same bits: no generator state, so a
// resumed run, a pack and the CPU draw the same masks. The same function serves the backward
// pass (the gradient goes through where the value did, with the same scale).
// CPU twin: dropout::dropout_forward (generator: dropout::dropout_bits, hash: dropout::hash32).
// Test: tests/gpu.rs::dropout_forward_matches_the_cpu_reference.
// Bindings (group 0):
//   0 work    read_write  f32: x (len) at x_off of each model's slice (model·work_ms on)
//   1 params  uniform     DropoutParams (Rust: kernels.rs::DropoutParams)
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
    _a: u32,
    _b: u32,
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
    h = hash32(h ^ p.epoch);
    h = hash32(h ^ p.step);
    h = hash32(h ^ p.layer);
    return hash32(h ^ e);
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    if e >= p.len { return; }
    let model = step.first_model + gid.z;
    let at = model * p.work_ms + p.x_off + e;
    let kept = (dropout_bits(e) >> 8u) >= p.threshold;
    work[at] = select(0.0, work[at] * p.scale, kept);
}
