// reduce.wgsl — bias_grad: db[col] = Σ_r dz[r, col] over the batch's rows, summed in row order
// (fixed order, no atomics, so runs repeat bit for bit).
// CPU twin: the bias loop in cpu::net::loss_and_gradient. Test: tests/gpu.rs::bias_grad_matches_reference.
// Bindings (group 0):
//   0 dz    read        (rows, cols) f32
//   1 grads read_write  flat gradient, laid out like the parameters
//   2 p     uniform     BiasGradParams (Rust: kernels.rs::BiasGradParams)
// Dispatch: ceil(cols/64) workgroups of 64.

struct BiasGradParams { cols: u32, bias_off: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<storage, read> dz: array<f32>;
@group(0) @binding(1) var<storage, read_write> grads: array<f32>;
@group(0) @binding(2) var<uniform> p: BiasGradParams;

@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if col >= p.cols { return; }
    var acc = 0.0;
    for (var r = 0u; r < step.rows; r++) { acc += dz[r * p.cols + col]; }
    grads[p.bias_off + col] = acc;
}
