// activation.wgsl — a layer's activation as a pass of its own, for networks of layers (issue
// 18), where each convolution and dense layer has its own (the MLP's matmul applies the model's
// hidden activation in its epilogues instead). Over `len` elements, or with per_row > 0 the
// step's rows × per_row, of each model's slice of work (model·work_ms on):
// activation_forward:  x[e] = f(x[e])            in place at x_off
// activation_backward: g[e] = g[e] · f′(a[e])    g at g_off; a, f's output, at x_off
// f is `kind` (common.wgsl's ACT_*), f′ written through f's output as activation_slope does.
// CPU twins: cpu::ops::{activation_forward, activation_backward}.
// Tests: tests/gpu.rs::activation_{forward,backward}_matches_the_cpu_reference
// (check/layers.rs::check_activation).
// Bindings (group 0):
//   0 work    read_write  f32: the operands above
//   1 p       uniform     ActivationParams (Rust: uniforms.rs::ActivationParams)
// Dispatch: one invocation per element, 256 per workgroup, grid from kernels.rs::grid, models
// along z.

struct ActivationParams {
    kind: u32,
    len: u32,
    per_row: u32,
    work_ms: u32,
    x_off: u32,
    g_off: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<uniform> p: ActivationParams;

// Elements in this dispatch.
fn count() -> u32 {
    return select(p.len, step.rows * p.per_row, p.per_row > 0u);
}

@compute @workgroup_size(256)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    if e >= count() { return; }
    let at = (step.first_model + gid.z) * p.work_ms + p.x_off + e;
    work[at] = activate(work[at], p.kind);
}

@compute @workgroup_size(256)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    if e >= count() { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let at = base + p.g_off + e;
    work[at] = work[at] * activation_slope(work[base + p.x_off + e], p.kind);
}
