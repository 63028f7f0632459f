// update.wgsl — update: one optimiser step for `len` parameters at param_off of each model's
// slice of work, from their loss gradient at grad_off, for parameters whose gradient a kernel
// wrote (a network's layers; the MLP's matmul_update fuses the same step into the
// weight-gradient product). Each parameter is one invocation's; both step through
// common.wgsl's momentum_step and adam_step:
//   g = grad + penalised · (λ1·sign(w) + λ2·w)      (weights penalised, biases not)
//   SGD / momentum (paper rule 5): v ← γ·v − α·g; w ← w + v
//   Adam: m ← β1·m + (1−β1)·g; s ← β2·s + (1−β2)·g²; w ← w − α·(m·c1) / (√(s·c2) + ε)
// with the model's hyperparameters (models[model]; a model with training = 0 is left alone),
// Adam's corrections from the step uniform, and the moments at model·param_ms + param_off + e.
// CPU twin: cpu::ops::update. Test: tests/gpu.rs::update_matches_the_cpu_reference
// (check/layers.rs::check_update).
// Bindings (group 0):
//   0 work    read_write  f32: parameters and gradients
//   1 models  read        Model per model (common.wgsl)
//   2 first   read_write  f32 per parameter: velocity, or Adam's m
//   3 second  read_write  f32 per parameter: Adam's s
//   4 p       uniform     UpdateParams (Rust: uniforms.rs::UpdateParams)
// Dispatch: one invocation per parameter, 256 per workgroup, grid from kernels.rs::grid,
// models along z.

struct UpdateParams {
    param_off: u32,
    grad_off: u32,
    len: u32,
    penalised: u32,
    work_ms: u32,
    param_ms: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<storage, read> models: array<Model>;
@group(0) @binding(2) var<storage, read_write> first: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;
@group(0) @binding(4) var<uniform> p: UpdateParams;

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let model = step.first_model + gid.z;
    let h = models[model];
    if e >= p.len || h.training == 0u { return; }
    let base = model * p.work_ms;
    let at = base + p.param_off + e;
    let state = model * p.param_ms + p.param_off + e;
    let w = work[at];
    let g = work[base + p.grad_off + e] + select(0.0, h.l1 * sign(w) + h.l2 * w, p.penalised == 1u);
    if h.optimizer == 0u {
        let r = momentum_step(h, w, g, first[state]);
        work[at] = r.x;
        first[state] = r.y;
    } else {
        let r = adam_step(h, w, g, first[state], second[state]);
        work[at] = r.x;
        first[state] = r.y;
        second[state] = r.z;
    }
}
