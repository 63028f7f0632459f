// pool.wgsl — 2-D max pooling, NCHW, no padding.
// Shapes and offsets in Pool2dParams (rows = 0: the step's rows); every operand lives in
// `work` at its offset in the model's slice (model·work_ms on):
//   x (rows, C, H, W) at x_off · z (rows, C, H′, W′) at z_off · argmax (rows, C, H′, W′) at
//   arg_off, each the index within its image of the pixel taken, as an f32 (exact below 2^24).
// max_pool2d_forward:  z = the window's largest value, ties to the first in row-major order,
//                      NaN winning over any number; argmax where it was
// max_pool2d_backward: x_off receives dx: each pixel the sum of dz over the windows that took
//                      it (from z_off, argmax from arg_off), in the CPU twin's order (outputs
//                      row-major), so the same bits; 0 for pixels no window took
// CPU twins: cpu::conv::{max_pool2d_forward, max_pool2d_backward}.
// Tests: tests/gpu.rs::max_pool2d_*_matches_the_cpu_reference (check/conv.rs::check_max_pool2d).
// Bindings (group 0):
//   0 work    read_write  f32: the operands above
//   1 p       uniform     Pool2dParams (Rust: uniforms.rs::Pool2dParams)
// Dispatch: one invocation per output (forward) or input (backward) element, 256 per
// workgroup, grid from kernels.rs::grid, models along z.

struct Pool2dParams {
    channels: u32,
    height: u32,
    width: u32,
    window: u32,
    stride: u32,
    out_h: u32,
    out_w: u32,
    rows: u32,
    x_off: u32,
    z_off: u32,
    arg_off: u32,
    work_ms: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<uniform> p: Pool2dParams;

// Images in this dispatch: the uniform's, or the step's when it says 0.
fn rows() -> u32 {
    return select(p.rows, step.rows, p.rows == 0u);
}

@compute @workgroup_size(256)
fn max_pool2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let plane = p.out_h * p.out_w;
    let out_len = p.channels * plane;
    if e >= rows() * out_len { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let r = e / out_len;
    let c = (e / plane) % p.channels;
    let y = (e % plane) / p.out_w;
    let x = e % p.out_w;
    let image = base + p.x_off + r * p.channels * p.height * p.width;
    var best_at = (c * p.height + y * p.stride) * p.width + x * p.stride;
    var best = work[image + best_at];
    for (var i = 0u; i < p.window; i++) {
        for (var j = 0u; j < p.window; j++) {
            let at = (c * p.height + y * p.stride + i) * p.width + x * p.stride + j;
            let v = work[image + at];
            // NaN != NaN: a NaN best stays; a NaN value takes over. (WGSL lets a compiler fold
            // NaN comparisons, so `check` feeds no NaN; the CPU twin's rule is the spec.)
            let best_is_nan = best != best;
            if !best_is_nan && (v > best || v != v) {
                best = v;
                best_at = at;
            }
        }
    }
    work[base + p.z_off + e] = best;
    work[base + p.arg_off + e] = f32(best_at);
}

@compute @workgroup_size(256)
fn max_pool2d_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let image_len = p.channels * p.height * p.width;
    if e >= rows() * image_len { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let r = e / image_len;
    let pixel = e % image_len;
    let c = pixel / (p.height * p.width);
    let row = (pixel % (p.height * p.width)) / p.width;
    let col = pixel % p.width;
    let plane = p.out_h * p.out_w;
    let first = base + r * p.channels * plane + c * plane;
    var acc = 0.0;
    // Windows in output order (y, then x, ascending): tap i from the largest down.
    for (var ii = 0u; ii < p.window; ii++) {
        let i = p.window - 1u - ii;
        if row < i || (row - i) % p.stride != 0u { continue; }
        let y = (row - i) / p.stride;
        if y >= p.out_h { continue; }
        for (var jj = 0u; jj < p.window; jj++) {
            let j = p.window - 1u - jj;
            if col < j || (col - j) % p.stride != 0u { continue; }
            let x = (col - j) / p.stride;
            if x >= p.out_w { continue; }
            let q = y * p.out_w + x;
            if u32(work[first + p.arg_off + q]) == pixel {
                acc += work[first + p.z_off + q];
            }
        }
    }
    work[base + p.x_off + e] = acc;
}
