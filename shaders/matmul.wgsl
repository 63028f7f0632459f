// matmul.wgsl — matmul: C (m, n) = op(A) (m, k) · op(B) (k, n), tiled 16×16 through
// workgroup memory, any sizes (edges masked), with an optional fused epilogue:
//   epilogue 0: C = A·B                                   (weight gradient dW = dZᵀ·A_prev)
//     with bias_column = 1, B gets an extra column of ones and that column of C (the bias
//     gradient Σ_r dZ[r, o]) is written to c[bias_off + row]: one dispatch instead of two.
//   epilogue 1: C = act(A·B + bias)                       (forward: Z = X·Wᵀ + b, A = f(Z))
//   epilogue 2: C = (A·B) ⊙ f'(aux)                        (input gradient dZ_prev = dZ·W ⊙ f'(A_prev))
// Operands are strided views, so transposes cost nothing: A(i, k) = a[a_off + i·a_rs + k·a_cs].
// Each model's operands start model·{a,b,c,aux}_ms further on (the bias sits in B's buffer and
// uses b_ms when read, c_ms when written as the bias column).
// activated = 1 applies the model's hidden activation (models[model].activation) in
// epilogues 1 and 2; 0 applies none (the output layer).
// CPU twins: cpu::gemm::{linear_forward, linear_backward_weight, linear_backward_input}.
// Test: tests/gpu.rs::matmul_matches_reference.
// Bindings (group 0):
//   0 a     read        f32
//   1 b     read        f32
//   2 bias  read        f32 (epilogue 1)
//   3 aux   read        f32 (epilogue 2), (m, n) row-major like C
//   4 c     read_write  f32
//   5 models read        Model per model (common.wgsl)
//   6 p     uniform     MatmulParams (Rust: kernels.rs::MatmulParams)
// Dispatch: (ceil((n + bias_column)/16), ceil(m/16), models) workgroups of 16×16; one output
// element per invocation.
// rows_dim says which dimension is the batch's row count, read from the step uniform, so
// one pipeline and bind group serve full and short batches.

struct MatmulParams {
    m: u32, n: u32, k: u32, rows_dim: u32,
    a_off: u32, a_rs: u32, a_cs: u32, b_off: u32,
    b_rs: u32, b_cs: u32, c_off: u32, c_rs: u32,
    bias_off: u32, epilogue: u32, activated: u32, bias_column: u32,
    a_ms: u32, b_ms: u32, c_ms: u32, aux_ms: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> models: array<Model>;
@group(0) @binding(6) var<uniform> p: MatmulParams;

const TILE: u32 = 16u;
var<workgroup> tile_a: array<array<f32, 16>, 16>;
var<workgroup> tile_b: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    var m = p.m;
    var k = p.k;
    if p.rows_dim == 1u { m = step.rows; }
    if p.rows_dim == 2u { k = step.rows; }
    let model = step.first_model + wid.z;
    let a_base = model * p.a_ms + p.a_off;
    let b_base = model * p.b_ms + p.b_off;
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    var acc = 0.0;
    // Every invocation runs every iteration (k is uniform), so the barriers stay in uniform
    // control flow; out-of-range loads are masked to 0 instead of returning early.
    for (var t = 0u; t < k; t += TILE) {
        let ak = t + lid.x;
        var av = 0.0;
        if row < m && ak < k { av = a[a_base + row * p.a_rs + ak * p.a_cs]; }
        tile_a[lid.y][lid.x] = av;
        let bk = t + lid.y;
        var bv = 0.0;
        if bk < k && col < p.n {
            bv = b[b_base + bk * p.b_rs + col * p.b_cs];
        } else if bk < k && col == p.n && p.bias_column == 1u {
            bv = 1.0;
        }
        tile_b[lid.y][lid.x] = bv;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i++) {
            acc += tile_a[lid.y][i] * tile_b[i][lid.x];
        }
        workgroupBarrier();
    }
    let c_base = model * p.c_ms;
    if row < m && col == p.n && p.bias_column == 1u {
        c[c_base + p.bias_off + row] = acc;
    }
    if row < m && col < p.n {
        let act = select(ACT_NONE, models[model].activation, p.activated == 1u);
        var v = acc;
        if p.epilogue == 1u {
            v = activate(v + bias[model * p.b_ms + p.bias_off + col], act);
        } else if p.epilogue == 2u {
            v = v * activation_slope(aux[model * p.aux_ms + row * p.n + col], act);
        }
        c[c_base + p.c_off + row * p.c_rs + col] = v;
    }
}
