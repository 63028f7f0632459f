// matmul.wgsl — C (m, n) = op(A) (m, k) · op(B) (k, n), 16×16 outputs per workgroup, k in
// steps of TILE_K through workgroup memory, any sizes (edges masked). Four entry points share
// the tile loop (`accumulate`; `accumulate_gathered` is its twin with A from the image pool;
// each has a software-pipelined form, `*_prefetched`, chosen per device by PREFETCH) and
// differ in what they do with the product:
// matmul: C = A·B with an optional fused epilogue
//   epilogue 0: C = A·B
//   epilogue 1: C = act(A·B + bias)                       (forward: Z = X·Wᵀ + b, A = f(Z);
//               the bias sits in B's buffer, at bias_off)
//   epilogue 2: C = (A·B) ⊙ f'(aux)                        (input gradient dZ_prev = dZ·W ⊙ f'(A_prev))
// matmul_update: the weight gradient dW = dZᵀ·A_prev applied at once by the model's optimiser
//   to the parameters C (= W) in place, with its velocity / Adam moments in `first`/`second`:
//   the gradient never goes to memory, and no update dispatch follows. Each parameter is
//   computed by exactly one invocation, so the read-modify-write needs no synchronisation;
//   the layer's input gradient (which reads the old W) must be recorded before it.
//   g = dW + penalised · (λ1·sign(w) + λ2·w)      (weights penalised, biases not)
//   SGD / momentum (paper rule 5): v ← γ·v − α·g; w ← w + v
//   Adam: m ← β1·m + (1−β1)·g; s ← β2·s + (1−β2)·g²; w ← w − α·(m·c1) / (√(s·c2) + ε)
//   With sum_stats = 1 the layer's first workgroup also sums the step's per-row losses and
//   correct flags (softmax_xent's output) into stats[stat_slot], in row order
//   (sum_batch_stats): the training step's batch sums without a dispatch of their own. A
//   model with training = 0 is left alone.
//   One dispatch covers every layer of a table (`layers`, up to MAX_UPDATE_LAYERS): the
//   grid is the layers' tiles one after another, each workgroup finds its layer by tile.
// matmul_softmax_xent: the output layer's logits Z = A·B + bias, when its n ≤ 16 classes fit
//   one tile, go through softmax_xent.wgsl's softmax + cross-entropy in the epilogue: C gets
//   dZ = (softmax(Z) − onehot(y))·scale, the row losses (at row_loss_off) the row's loss and
//   correct flag; the logits never go to memory and no softmax_xent dispatch follows. Same
//   expressions in the same order as softmax_xent (so the same bits), with the row's logits in
//   workgroup memory. The label of row r is labels[indices[model·index_ms + offset + r]]. With
//   input_grad = 1 the workgroup, which now holds whole rows of dZ, also computes the layer
//   below's input gradient for its rows, dA_prev = dZ·W ⊙ f'(A_prev) (A_prev is this matmul's
//   A), at dh_off: the input-gradient matmul's expression in its k order, without its dispatch.
// matmul_gather: the first layer's forward pass (epilogue 1) with A gathered from the image
//   pool and z-scored in the tile loads (batch.wgsl's gather_batch, same expression): no gather
//   dispatch before it. The first column of workgroups also stores the batch at x_off, which
//   the layer's weight gradient reads.
// bias_column = 1 gives B an extra column of ones; that column of the product (the bias
// gradient Σ_r dZ[r, o]) goes to bias_off + row.
// Every operand lives in `work`, one buffer holding each model's slice (work_ms elements):
// the model's parameters first (so the bias is read at bias_off like any operand, and a
// parameter's index in the slice is its index in the flat vector), then the batch,
// activations, deltas and per-row losses at the offsets the host chose (gpu::workspace).
// One binding for all of them is what lets one matmul_update cover every layer, and keeps each
// entry point well inside WebGPU's default of eight storage buffers.
// Operands are strided views, so transposes cost nothing:
// A(i, k) = work[model·work_ms + a_off + i·a_rs + k·a_cs]; likewise B, C (c_off, c_rs), aux
// ((m, n) row-major at aux_off). first/second are per parameter: model·param_ms + index;
// stats per model: model·slots + slot.
// activated = 1 applies the model's hidden activation (models[model].activation) in
// epilogues 1 and 2; 0 applies none (the output layer).
// CPU twins: cpu::gemm::{linear_forward, linear_backward_weight, linear_backward_input} and
// cpu::ops::update (same expression order).
// Tests: check/matmul.rs::{check_matmul, check_matmul_gather},
// check/matmul_fused.rs::{check_matmul_softmax_xent, check_matmul_update}.
// Bindings (group 0):
//   0 work        read_write  f32: every model's parameters, batch, activations, deltas, row losses
//   1 models      read        Model per model (common.wgsl)
//   2 p           uniform     MatmulParams (Rust: uniforms.rs::MatmulParams); not matmul_update
//   3 layers      uniform     MatmulParams per layer (matmul_update)
//   4 first       read_write  f32 per parameter (matmul_update: velocity, or Adam's m)
//   5 second      read_write  f32 per parameter (matmul_update: Adam's s)
//   6 stats       read_write  vec2<f32> per slot (matmul_update)
//   7 labels      read        u32 per image of the pool (matmul_softmax_xent)
//   8 indices     read        u32 pool rows, per model (matmul_softmax_xent, matmul_gather)
//   9 pixels      read        u8 images four to a u32 (matmul_gather; batch.wgsl's layout)
//  10 image_stats read        vec2<f32> (mean, 1/std) per image (matmul_gather)
// matmul binds 0–2, matmul_update 0, 1, 3–6, matmul_softmax_xent 0–2, 7, 8, matmul_gather
// 0–2, 8–10.
// Dispatch: (ceil((n + bias_column)/16), ceil(m/16), models) workgroups of 16×16; one output
// element per invocation (matmul_softmax_xent: one column of workgroups; matmul_update: its
// layers' tiles along x, folded into y past 65,535).
// rows_dim says which dimension is the batch's row count, read from the step uniform, so
// one pipeline and bind group serve full and short batches.

struct MatmulParams {
    m: u32, n: u32, k: u32, rows_dim: u32,
    a_off: u32, a_rs: u32, a_cs: u32, b_off: u32,
    b_rs: u32, b_cs: u32, c_off: u32, c_rs: u32,
    bias_off: u32, epilogue: u32, activated: u32, bias_column: u32,
    work_ms: u32, param_ms: u32, aux_off: u32, dh_off: u32,
    row_loss_off: u32, x_off: u32, capacity: u32, slots: u32,
    sum_stats: u32, index_ms: u32, input_grad: u32, first_tile: u32,
    tiles_x: u32, _a: u32, _b: u32, _c: u32,
}

// Layers one matmul_update dispatch covers (deeper networks take one dispatch per eight).
const MAX_UPDATE_LAYERS: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<storage, read> models: array<Model>;
@group(0) @binding(2) var<uniform> p: MatmulParams;
@group(0) @binding(3) var<uniform> layers: array<MatmulParams, MAX_UPDATE_LAYERS>;
@group(0) @binding(4) var<storage, read_write> first: array<f32>;
@group(0) @binding(5) var<storage, read_write> second: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> labels: array<u32>;
@group(0) @binding(8) var<storage, read> indices: array<u32>;
@group(0) @binding(9) var<storage, read> pixels: array<u32>;
@group(0) @binding(10) var<storage, read> image_stats: array<vec2<f32>>;

// Outputs per workgroup side, and k per pass through workgroup memory (a multiple of TILE:
// each invocation loads TILE_K / TILE elements of A and of B per pass). Products are added in
// k order whatever TILE_K is, so it changes no bits, only how many barrier-separated passes a
// long k takes (the first layer's 784: 49 at 16, 13 at 64). The host sets TILE_K per device
// (gpu::Tuning::tile_k, WGTRAIN_TILE_K; shaders::assembled rewrites the line below, which
// must stay as written): 64 was 6–10% slower on lavapipe (BENCHMARKS.md) and is unmeasured on
// a real GPU, where fewer, wider passes may hide more load latency.
const TILE: u32 = 16u;
const TILE_K: u32 = 16u;
var<workgroup> tile_a: array<array<f32, TILE_K>, TILE>;
var<workgroup> tile_b: array<array<f32, TILE>, TILE_K>;
// Elements of A and of B each invocation loads per pass.
const LOADS: u32 = TILE_K / TILE;

// Whether the tile loop loads the next pass while it adds up the current one
// (accumulate_prefetched): the same products in the same order, so no bit changes, only
// whether a GPU waits out a memory latency per pass. The host sets it per device
// (gpu::Tuning::prefetch, WGTRAIN_PREFETCH; shaders::assembled rewrites the line below, which
// must stay as written).
const PREFETCH: bool = false;

// The helpers take the dispatch's MatmulParams as `q` (p, or a matmul_update layer's entry)
// rather than reading p: a function parameter keeps them uniform for the barriers inside.

// This dispatch's m and k (one of them may be the step's row count).
fn dims(q: MatmulParams) -> vec2<u32> {
    var m = q.m;
    var k = q.k;
    if q.rows_dim == 1u { m = step.rows; }
    if q.rows_dim == 2u { k = step.rows; }
    return vec2<u32>(m, k);
}

// Σ_k A(row, k)·B(k, col) of `model`, in k order. Every invocation of the workgroup must call
// it (it has barriers); out-of-range loads are masked to 0 instead of returning early.
fn accumulate(q: MatmulParams, lid: vec3<u32>, model: u32, row: u32, col: u32) -> f32 {
    if PREFETCH { return accumulate_prefetched(q, lid, model, row, col); }
    let mk = dims(q);
    let m = mk.x;
    let k = mk.y;
    let a_base = model * q.work_ms + q.a_off;
    let b_base = model * q.work_ms + q.b_off;
    var acc = 0.0;
    for (var t = 0u; t < k; t += TILE_K) {
        for (var j = 0u; j < TILE_K; j += TILE) {
            let ak = t + j + lid.x;
            var av = 0.0;
            if row < m && ak < k { av = work[a_base + row * q.a_rs + ak * q.a_cs]; }
            tile_a[lid.y][j + lid.x] = av;
            let bk = t + j + lid.y;
            var bv = 0.0;
            if bk < k && col < q.n {
                bv = work[b_base + bk * q.b_rs + col * q.b_cs];
            } else if bk < k && col == q.n && q.bias_column == 1u {
                bv = 1.0;
            }
            tile_b[j + lid.y][lid.x] = bv;
        }
        workgroupBarrier();
        for (var i = 0u; i < TILE_K; i++) {
            acc += tile_a[lid.y][i] * tile_b[i][lid.x];
        }
        workgroupBarrier();
    }
    return acc;
}

// accumulate with A the step's images, z-scored from the pool as gather_batch does (same
// expression, so the same bits): A(row, i) = (pixel[indices[offset + row]][i] − mean)·inv_std.
// The first column of workgroups also stores A at x_off for the layer's weight gradient.
fn accumulate_gathered(q: MatmulParams, lid: vec3<u32>, wid: vec3<u32>, model: u32, row: u32, col: u32) -> f32 {
    if PREFETCH { return accumulate_gathered_prefetched(q, lid, wid, model, row, col); }
    let mk = dims(q);
    let m = mk.x;
    let k = mk.y; // features
    let b_base = model * q.work_ms + q.b_off;
    let x_base = model * q.work_ms + q.x_off;
    var sample = 0u;
    var image = vec2<f32>(0.0, 1.0);
    if row < m {
        sample = indices[model * q.index_ms + step.offset + row];
        image = image_stats[sample];
    }
    var acc = 0.0;
    for (var t = 0u; t < k; t += TILE_K) {
        for (var j = 0u; j < TILE_K; j += TILE) {
            let ak = t + j + lid.x;
            var av = 0.0;
            if row < m && ak < k {
                let byte_index = sample * k + ak;
                let word = pixels[byte_index / 4u];
                let pixel = f32((word >> ((byte_index % 4u) * 8u)) & 0xffu);
                av = (pixel - image.x) * image.y;
                if wid.x == 0u { work[x_base + row * q.a_rs + ak] = av; }
            }
            tile_a[lid.y][j + lid.x] = av;
            // B as in accumulate (kept inline: helper functions in this loop cost llvmpipe ~10%).
            let bk = t + j + lid.y;
            var bv = 0.0;
            if bk < k && col < q.n { bv = work[b_base + bk * q.b_rs + col * q.b_cs]; }
            tile_b[j + lid.y][lid.x] = bv;
        }
        workgroupBarrier();
        for (var i = 0u; i < TILE_K; i++) {
            acc += tile_a[lid.y][i] * tile_b[i][lid.x];
        }
        workgroupBarrier();
    }
    return acc;
}

// accumulate, software-pipelined (PREFETCH): iteration t issues the loads of pass t into
// registers, then adds up pass t − TILE_K from the tiles while those loads are in flight, so a
// pass costs the longer of a memory latency and its products instead of both. One iteration
// more than passes: the first has nothing to add, the last nothing in range to load. The same
// products are added in the same k order as accumulate's (the same bits).
fn accumulate_prefetched(q: MatmulParams, lid: vec3<u32>, model: u32, row: u32, col: u32) -> f32 {
    let mk = dims(q);
    let m = mk.x;
    let k = mk.y;
    let a_base = model * q.work_ms + q.a_off;
    let b_base = model * q.work_ms + q.b_off;
    var a_next: array<f32, LOADS>;
    var b_next: array<f32, LOADS>;
    var acc = 0.0;
    for (var t = 0u; t < k + TILE_K; t += TILE_K) {
        if t > 0u {
            for (var j = 0u; j < LOADS; j++) {
                tile_a[lid.y][j * TILE + lid.x] = a_next[j];
                tile_b[j * TILE + lid.y][lid.x] = b_next[j];
            }
        }
        workgroupBarrier();
        for (var j = 0u; j < LOADS; j++) {
            let ak = t + j * TILE + lid.x;
            var av = 0.0;
            if row < m && ak < k { av = work[a_base + row * q.a_rs + ak * q.a_cs]; }
            a_next[j] = av;
            let bk = t + j * TILE + lid.y;
            var bv = 0.0;
            if bk < k && col < q.n {
                bv = work[b_base + bk * q.b_rs + col * q.b_cs];
            } else if bk < k && col == q.n && q.bias_column == 1u {
                bv = 1.0;
            }
            b_next[j] = bv;
        }
        if t > 0u {
            for (var i = 0u; i < TILE_K; i++) {
                acc += tile_a[lid.y][i] * tile_b[i][lid.x];
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// accumulate_gathered, software-pipelined as accumulate_prefetched is (PREFETCH).
fn accumulate_gathered_prefetched(q: MatmulParams, lid: vec3<u32>, wid: vec3<u32>, model: u32, row: u32, col: u32) -> f32 {
    let mk = dims(q);
    let m = mk.x;
    let k = mk.y; // features
    let b_base = model * q.work_ms + q.b_off;
    let x_base = model * q.work_ms + q.x_off;
    var sample = 0u;
    var image = vec2<f32>(0.0, 1.0);
    if row < m {
        sample = indices[model * q.index_ms + step.offset + row];
        image = image_stats[sample];
    }
    var a_next: array<f32, LOADS>;
    var b_next: array<f32, LOADS>;
    var acc = 0.0;
    for (var t = 0u; t < k + TILE_K; t += TILE_K) {
        if t > 0u {
            for (var j = 0u; j < LOADS; j++) {
                tile_a[lid.y][j * TILE + lid.x] = a_next[j];
                tile_b[j * TILE + lid.y][lid.x] = b_next[j];
            }
        }
        workgroupBarrier();
        for (var j = 0u; j < LOADS; j++) {
            let ak = t + j * TILE + lid.x;
            var av = 0.0;
            if row < m && ak < k {
                let byte_index = sample * k + ak;
                let word = pixels[byte_index / 4u];
                let pixel = f32((word >> ((byte_index % 4u) * 8u)) & 0xffu);
                av = (pixel - image.x) * image.y;
                if wid.x == 0u { work[x_base + row * q.a_rs + ak] = av; }
            }
            a_next[j] = av;
            let bk = t + j * TILE + lid.y;
            var bv = 0.0;
            if bk < k && col < q.n { bv = work[b_base + bk * q.b_rs + col * q.b_cs]; }
            b_next[j] = bv;
        }
        if t > 0u {
            for (var i = 0u; i < TILE_K; i++) {
                acc += tile_a[lid.y][i] * tile_b[i][lid.x];
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// The forward epilogue (1: bias, then the activation when activated = 1) of output (row, col).
fn forward_epilogue(q: MatmulParams, model: u32, col: u32, acc: f32) -> f32 {
    let act = select(ACT_NONE, models[model].activation, q.activated == 1u);
    return activate(acc + work[model * q.work_ms + q.bias_off + col], act);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = p;
    let model = step.first_model + wid.z;
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    let acc = accumulate(q, lid, model, row, col);
    let m = dims(q).x;
    let base = model * q.work_ms;
    if row < m && col == q.n && q.bias_column == 1u {
        work[base + q.bias_off + row] = acc;
    }
    if row < m && col < q.n {
        var v = acc;
        if q.epilogue == 1u {
            v = forward_epilogue(q, model, col, acc);
        } else if q.epilogue == 2u {
            let act = select(ACT_NONE, models[model].activation, q.activated == 1u);
            v = v * activation_slope(work[base + q.aux_off + row * q.n + col], act);
        }
        work[base + q.c_off + row * q.c_rs + col] = v;
    }
}

@compute @workgroup_size(16, 16)
fn matmul_gather(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = p;
    let model = step.first_model + wid.z;
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    let acc = accumulate_gathered(q, lid, wid, model, row, col);
    if row < dims(q).x && col < q.n {
        work[model * q.work_ms + q.c_off + row * q.c_rs + col] = forward_epilogue(q, model, col, acc);
    }
}

// The step's batch sums into stats[stat_slot]: Σ row losses and Σ correct flags, each added in
// row order by one invocation (so the same bits as a plain loop over the rows), from rows the
// whole workgroup brings into workgroup memory 256 at a time: one invocation reading them from
// storage itself waited out a memory latency per row, in a dispatch every other workgroup had
// long finished. Uses tile_a and tile_b (free after accumulate's last barrier), and has
// barriers: call it in uniform control flow.
fn sum_batch_stats(q: MatmulParams, lid: vec3<u32>, model: u32) {
    let losses = model * q.work_ms + q.row_loss_off;
    let me = lid.y * TILE + lid.x;
    var loss = 0.0;
    var correct = 0.0;
    for (var first = 0u; first < step.rows; first += TILE * TILE) {
        let r = first + me;
        var row_loss = 0.0;
        var row_correct = 0.0;
        if r < step.rows {
            row_loss = work[losses + r];
            row_correct = work[losses + q.capacity + r];
        }
        workgroupBarrier(); // the previous rows are summed
        tile_a[me / TILE_K][me % TILE_K] = row_loss;
        tile_b[me / TILE][me % TILE] = row_correct;
        workgroupBarrier();
        let count = min(TILE * TILE, step.rows - first);
        if me == 0u {
            for (var i = 0u; i < count; i++) { loss += tile_a[i / TILE_K][i % TILE_K]; }
        } else if me == 1u {
            for (var i = 0u; i < count; i++) { correct += tile_b[i / TILE][i % TILE]; }
        }
    }
    workgroupBarrier();
    if me == 1u { tile_b[0][0] = correct; }
    workgroupBarrier();
    if me == 0u { stats[model * q.slots + step.stat_slot] = vec2<f32>(loss, tile_b[0][0]); }
}

// One dispatch for every layer of the table (up to MAX_UPDATE_LAYERS): the grid is the
// layers' tiles one after another, layers[l].first_tile where layer l's begin (increasing;
// unused entries 0xffffffff), tiles_x its tiles per row. Layers write disjoint parameters
// and read only deltas and activations, so their order within the dispatch does not matter.
@compute @workgroup_size(16, 16)
fn matmul_update(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let tile = wid.x + wid.y * groups.x;
    var layer = 0u;
    for (var l = 1u; l < MAX_UPDATE_LAYERS; l++) {
        if tile >= layers[l].first_tile { layer = l; }
    }
    let q = layers[layer];
    let model = step.first_model + wid.z;
    let h = models[model];
    // Both are the same for the whole workgroup, so returning keeps the barriers in uniform
    // control flow. Past the last tile: the grid's padding when it folds into 2-D.
    if h.training == 0u || tile >= q.first_tile + q.tiles_x * ((q.m + TILE - 1u) / TILE) { return; }
    let in_layer = tile - q.first_tile;
    let row = (in_layer / q.tiles_x) * TILE + lid.y;
    let col = (in_layer % q.tiles_x) * TILE + lid.x;
    let grad = accumulate(q, lid, model, row, col);
    let base = model * q.work_ms;
    if q.sum_stats == 1u && in_layer == 0u { sum_batch_stats(q, lid, model); }
    let is_bias = col == q.n && q.bias_column == 1u;
    if row >= dims(q).x || (col >= q.n && !is_bias) { return; }
    // The parameters open each model's slice of work, so a parameter's index there is its
    // index in the flat vector, which also places it in first and second.
    let index = select(q.c_off + row * q.c_rs + col, q.bias_off + row, is_bias);
    let at = base + index;
    let state = model * q.param_ms + index;
    let w = work[at];
    let g = grad + select(h.l1 * sign(w) + h.l2 * w, 0.0, is_bias);
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

@compute @workgroup_size(16, 16)
fn matmul_softmax_xent(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = p;
    let model = step.first_model + wid.z;
    let row = wid.y * TILE + lid.y;
    let col = lid.x;
    let acc = accumulate(q, lid, model, row, col);
    let base = model * q.work_ms;
    // The workgroup's logits, in tile_a: free once accumulate's last barrier has passed.
    if col < q.n { tile_a[lid.y][col] = acc + work[base + q.bias_off + col]; }
    workgroupBarrier();
    var dz = 0.0;
    if row < dims(q).x && col < q.n {
        let label = labels[indices[model * q.index_ms + step.offset + row]];
        var argmax = 0u;
        var zmax = tile_a[lid.y][0];
        for (var c = 1u; c < q.n; c++) {
            let v = tile_a[lid.y][c];
            if v > zmax { zmax = v; argmax = c; }
        }
        var sum = 0.0;
        for (var c = 0u; c < q.n; c++) { sum += exp(tile_a[lid.y][c] - zmax); }
        let inv = 1.0 / sum;
        let prob = exp(tile_a[lid.y][col] - zmax) * inv;
        dz = (prob - select(0.0, 1.0, col == label)) * step.scale;
        work[base + q.c_off + row * q.c_rs + col] = dz;
        if col == 0u {
            let losses = base + q.row_loss_off;
            work[losses + row] = log(sum) + zmax - tile_a[lid.y][label];
            work[losses + q.capacity + row] = select(0.0, 1.0, argmax == label);
        }
    }
    if q.input_grad == 1u {
        // The rows' dZ in tile_b (zeros past the batch and the classes). Then 16 input columns
        // at a time: the whole workgroup loads those columns of W into tile_a (W(c, i) at
        // [c][i − i0], zeros past the classes), one element each, and each invocation sums its
        // row's column over the classes in class order. Each invocation reading W from storage
        // itself waited a memory latency per class and column.
        tile_b[lid.y][lid.x] = dz;
        let m = dims(q).x;
        let act = models[model].activation;
        let a_base = base + q.a_off;
        let b_base = base + q.b_off;
        for (var i0 = 0u; i0 < q.k; i0 += TILE) {
            let i = i0 + lid.x;
            var w = 0.0;
            if lid.y < q.n && i < q.k { w = work[b_base + i * q.b_rs + lid.y * q.b_cs]; }
            var below = 0.0;
            if row < m && i < q.k { below = work[a_base + row * q.a_rs + i * q.a_cs]; }
            workgroupBarrier(); // tile_a's logits, or the last columns of W, are read
            tile_a[lid.y][lid.x] = w;
            workgroupBarrier();
            if row < m && i < q.k {
                var grad = 0.0;
                for (var c = 0u; c < q.n; c++) { grad += tile_b[lid.y][c] * tile_a[c][lid.x]; }
                work[base + q.dh_off + row * q.a_rs + i] = grad * activation_slope(below, act);
            }
        }
    }
}
