// batch.wgsl — gather_batch: x[r, i] = (pixel[indices[offset + r], i] − mean) · inv_std
// per model: indices from model·index_ms (0 when the models share one order), x at x_off of the
// model's slice of work (model·work_ms on; matmul.wgsl says what else the slice holds).
// CPU twin: data::prep::zscore_images + the row gather in cpu/engine.rs.
// Test: tests/gpu.rs::gather_batch_matches_reference.
// Bindings (group 0):
//   0 pixels  read        u8 images packed four to a u32, row-major (count, features)
//   1 stats   read        vec2<f32> per image: (mean, 1 / std), std = 1 when the image is constant
//   2 indices read        u32 rows of the image pool, per model (models, split length)
//   3 work    read_write  f32: x (capacity, features) at x_off of each model's slice
//   4 params  uniform     GatherParams (Rust: uniforms.rs::GatherParams)
// Dispatch: one invocation per element of x, 256 per workgroup, grid from kernels.rs::grid,
// models along z.
// Images stay as bytes on the device: 48,000 × 784 f32 would be 150 MB, over lavapipe's
// 128 MiB binding limit; as bytes it is 37.6 MB.

struct GatherParams { features: u32, index_ms: u32, work_ms: u32, x_off: u32 }

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> work: array<f32>;
@group(0) @binding(4) var<uniform> p: GatherParams;

@compute @workgroup_size(256)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = linear_index(gid, groups, 256u);
    if e >= step.rows * p.features { return; }
    let model = step.first_model + gid.z;
    let r = e / p.features;
    let i = e % p.features;
    let sample = indices[model * p.index_ms + step.offset + r];
    let byte_index = sample * p.features + i;
    let word = pixels[byte_index / 4u];
    let pixel = f32((word >> ((byte_index % 4u) * 8u)) & 0xffu);
    let s = stats[sample];
    work[model * p.work_ms + p.x_off + e] = (pixel - s.x) * s.y;
}
