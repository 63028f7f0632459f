// conv.wgsl — 2-D convolution, NCHW, one invocation
// per output element, summing in a fixed order (no atomics: the same bits on every rerun).
// Shapes and offsets in Conv2dParams (rows = 0: the step's rows, so one uniform serves a short
// last batch); every operand lives in `work` at its offset in the model's slice (model·work_ms
// on), as in matmul.wgsl:
//   x (rows, C, H, W) at x_off · w (O, C, K, K) at w_off · b (O) at b_off ·
//   z (rows, O, H′, W′) at z_off; H′ = (H + 2p − K)/s + 1.
// conv2d_forward:         z = b + Σ_c Σ_taps w · x            (taps on padding count 0)
// conv2d_backward_input:  x_off receives dx = Σ over the outputs each pixel fed of dz · w,
//                         from dz at z_off
// conv2d_backward_params: w_off receives dw = Σ_rows Σ_positions dz · x, b_off db = Σ dz;
//                         invocations 0..O·C·K·K are weights, the next O the biases
// CPU twins: cpu::conv::{conv2d_forward, conv2d_backward_input, conv2d_backward_params}.
// Tests: tests/gpu.rs::conv2d_*_matches_the_cpu_reference (check/conv.rs::check_conv2d).
// Bindings (group 0):
//   0 work    read_write  f32: the operands above
//   1 p       uniform     Conv2dParams (Rust: uniforms.rs::Conv2dParams)
// Dispatch: one invocation per output element, 256 per workgroup, grid from kernels.rs::grid,
// models along z.

struct Conv2dParams {
    channels: u32,
    height: u32,
    width: u32,
    filters: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    rows: u32,
    out_h: u32,
    out_w: u32,
    x_off: u32,
    w_off: u32,
    b_off: u32,
    z_off: u32,
    work_ms: u32,
    _a: u32,
}

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<uniform> p: Conv2dParams;

// Images in this dispatch: the uniform's, or the step's when it says 0.
fn rows() -> u32 {
    return select(p.rows, step.rows, p.rows == 0u);
}

// The input pixel output (y, x) sees through tap (i, j), as (row, col), or -1 on padding.
fn conv_tap(y: u32, x: u32, i: u32, j: u32) -> vec2<i32> {
    let row = i32(y * p.stride + i) - i32(p.padding);
    let col = i32(x * p.stride + j) - i32(p.padding);
    if row < 0 || col < 0 || row >= i32(p.height) || col >= i32(p.width) {
        return vec2<i32>(-1, -1);
    }
    return vec2<i32>(row, col);
}

@compute @workgroup_size(256)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let plane = p.out_h * p.out_w;
    if e >= rows() * p.filters * plane { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let r = e / (p.filters * plane);
    let o = (e / plane) % p.filters;
    let y = (e % plane) / p.out_w;
    let x = e % p.out_w;
    var acc = work[base + p.b_off + o];
    for (var c = 0u; c < p.channels; c++) {
        let image = base + p.x_off + (r * p.channels + c) * p.height * p.width;
        for (var i = 0u; i < p.kernel; i++) {
            for (var j = 0u; j < p.kernel; j++) {
                let at = conv_tap(y, x, i, j);
                if at.x < 0 { continue; }
                let weight = work[base + p.w_off + ((o * p.channels + c) * p.kernel + i) * p.kernel + j];
                acc += weight * work[image + u32(at.x) * p.width + u32(at.y)];
            }
        }
    }
    work[base + p.z_off + e] = acc;
}

@compute @workgroup_size(256)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let image_len = p.channels * p.height * p.width;
    if e >= rows() * image_len { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let r = e / image_len;
    let c = (e / (p.height * p.width)) % p.channels;
    let row = (e % (p.height * p.width)) / p.width;
    let col = e % p.width;
    var acc = 0.0;
    for (var o = 0u; o < p.filters; o++) {
        let dz = base + p.z_off + (r * p.filters + o) * p.out_h * p.out_w;
        for (var i = 0u; i < p.kernel; i++) {
            // Output row y took this pixel through tap i when y·s + i − pad = row.
            let yy = i32(row) + i32(p.padding) - i32(i);
            if yy < 0 || yy % i32(p.stride) != 0 { continue; }
            let y = u32(yy) / p.stride;
            if y >= p.out_h { continue; }
            for (var j = 0u; j < p.kernel; j++) {
                let xx = i32(col) + i32(p.padding) - i32(j);
                if xx < 0 || xx % i32(p.stride) != 0 { continue; }
                let x = u32(xx) / p.stride;
                if x >= p.out_w { continue; }
                let weight = work[base + p.w_off + ((o * p.channels + c) * p.kernel + i) * p.kernel + j];
                acc += work[dz + y * p.out_w + x] * weight;
            }
        }
    }
    work[base + p.x_off + e] = acc;
}

@compute @workgroup_size(256)
fn conv2d_backward_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    let taps = p.kernel * p.kernel;
    let weights = p.filters * p.channels * taps;
    if e >= weights + p.filters { return; }
    let base = (step.first_model + gid.z) * p.work_ms;
    let plane = p.out_h * p.out_w;
    if e >= weights {
        // Bias o: every position of every row of its output plane.
        let o = e - weights;
        var acc = 0.0;
        for (var r = 0u; r < rows(); r++) {
            let dz = base + p.z_off + (r * p.filters + o) * plane;
            for (var q = 0u; q < plane; q++) {
                acc += work[dz + q];
            }
        }
        work[base + p.b_off + o] = acc;
        return;
    }
    let o = e / (p.channels * taps);
    let c = (e / taps) % p.channels;
    let i = (e % taps) / p.kernel;
    let j = e % p.kernel;
    var acc = 0.0;
    for (var r = 0u; r < rows(); r++) {
        let dz = base + p.z_off + (r * p.filters + o) * plane;
        let image = base + p.x_off + (r * p.channels + c) * p.height * p.width;
        for (var y = 0u; y < p.out_h; y++) {
            for (var x = 0u; x < p.out_w; x++) {
                let at = conv_tap(y, x, i, j);
                if at.x < 0 { continue; }
                acc += work[dz + y * p.out_w + x] * work[image + u32(at.x) * p.width + u32(at.y)];
            }
        }
    }
    work[base + p.w_off + e] = acc;
}
