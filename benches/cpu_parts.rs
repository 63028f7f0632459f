//! `cargo bench --bench cpu_parts`: where a CPU training step of the paper's network spends its
//! time, piece by piece, against the GEMM's rate on large square products (the peak `wgtrain
//! bench` divides by). Each figure is the median of many timed repetitions after warm-up;
//! compare them only with each other, within one run (see BENCHMARKS.md).
//!
//! Shapes are one shard's: the CPU engine splits a batch of 128 into two 64-row shards, one per
//! thread, and runs each shard's products on that thread alone.
//!
//! A second table counts heap allocations per call of the same pieces (a counting global
//! allocator; one relaxed atomic add per allocation, nothing per byte), so that the engine's
//! step can be seen to allocate exactly what its GEMM products do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wgtrain::bench::{cpu_gemm_peak, gemm_operand as filled, median_secs};
use wgtrain::config::TrainConfig;
use wgtrain::cpu::dense::{self, Shape, Workspace};
use wgtrain::cpu::{CpuEngine, gemm};
use wgtrain::data::{Dataset, batches::epoch_order};
use wgtrain::engine::{Engine, wait};
use wgtrain::model::{Activation, Init, Params};

/// The system allocator, counting calls to `alloc` (a step that allocates shows up here).
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator with the same arguments.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Heap allocations during one call of `f`, after one untimed call (which may size buffers).
fn allocations(mut f: impl FnMut()) -> usize {
    f();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Prints one row (with its share of `peak`, GFLOP/s, when given) and returns its GFLOP/s.
fn report(what: &str, flops: f64, secs: f64, peak: Option<f64>) -> f64 {
    let gflops = flops / secs / 1e9;
    let share = peak.map_or("–".to_string(), |p| format!("{:.0}%", 100.0 * gflops / p));
    println!("| {what} | {:.2} | {gflops:.1} | {share} |", secs * 1e6);
    gflops
}

/// `wgtrain bench`'s GEMM peak at one size (the fastest of `runs` products), as a row.
fn square(size: usize, threads: usize) -> f64 {
    let runs = if size >= 1024 { 9 } else { 25 };
    let peak = cpu_gemm_peak(&[size], threads, runs);
    let flops = 2.0 * (size as f64).powi(3);
    report(
        &format!(
            "square {size}³, {} thread(s), fastest of {runs}",
            peak.threads
        ),
        flops,
        flops / (peak.gflops * 1e9),
        None,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; there are no filters (the whole run takes half a minute).
    let (rows, fan_in, hidden, classes) = (64, 784, 128, 10);
    println!(
        "| what | µs (median; squares: fastest) | GFLOP/s | share of peak (one thread's, × threads) |"
    );
    println!("|---|---|---|---|");
    let mut peak_one_thread: f64 = 0.0;
    for size in [256, 384, 512, 768, 1024] {
        peak_one_thread = peak_one_thread.max(square(size, 1));
        square(size, 2);
    }
    // Every piece below runs on one thread, as in the engine; its yardstick is the fastest
    // one-thread square product above.
    let peak = Some(peak_one_thread);

    let x = filled(rows * fan_in, 3);
    let w1 = filled(hidden * fan_in, 4);
    let w2 = filled(classes * hidden, 5);
    let (mut h, mut logits) = (vec![0.0f32; rows * hidden], vec![0.0f32; rows * classes]);
    let dz2 = filled(rows * classes, 6);
    let dz1 = filled(rows * hidden, 7);
    let (mut dw1, mut dw2) = (
        vec![0.0f32; hidden * fan_in],
        vec![0.0f32; classes * hidden],
    );
    let mut da1 = vec![0.0f32; rows * hidden];
    let reps = 2001;
    let flops = |m: usize, n: usize, k: usize| 2.0 * (m * n * k) as f64;
    // One row per product: its name, its FLOPs and one call of it; and its allocations.
    let mut allocated: Vec<(String, f64)> = Vec::new();
    let mut part = |what: &str, flops: f64, call: &mut dyn FnMut()| {
        report(what, flops, median_secs(reps, &mut *call), peak);
        allocated.push((what.to_string(), allocations(call) as f64));
    };
    part(
        "forward 1: (64×784)·(784×128)",
        flops(rows, hidden, fan_in),
        &mut || {
            gemm::linear_forward(&mut h, &x, &w1, rows, fan_in, hidden, 1);
            black_box(&h);
        },
    );
    part(
        "forward 2: (64×128)·(128×10)",
        flops(rows, classes, hidden),
        &mut || {
            gemm::linear_forward(&mut logits, &h, &w2, rows, hidden, classes, 1);
            black_box(&logits);
        },
    );
    part(
        "weight grad 2: (10×64)·(64×128)",
        flops(classes, hidden, rows),
        &mut || {
            gemm::linear_backward_weight(&mut dw2, &dz2, &h, rows, hidden, classes, 1);
            black_box(&dw2);
        },
    );
    part(
        "input grad 2: (64×10)·(10×128)",
        flops(rows, hidden, classes),
        &mut || {
            gemm::linear_backward_input(&mut da1, &dz2, &w2, rows, hidden, classes, 1);
            black_box(&da1);
        },
    );
    part(
        "weight grad 1: (128×64)·(64×784)",
        flops(hidden, fan_in, rows),
        &mut || {
            gemm::linear_backward_weight(&mut dw1, &dz1, &x, rows, fan_in, hidden, 1);
            black_box(&dw1);
        },
    );

    // The whole shard step: the products above plus bias, tanh, softmax and their gradients.
    let widths = [fan_in, hidden, classes];
    let params = Params::init(&widths, Activation::Tanh, Init::Paper, 1).unwrap();
    let layers = params.model.layer_views();
    let shape = Shape {
        layers: &layers,
        activation: Activation::Tanh,
        threads: 1,
    };
    let labels: Vec<u8> = (0..rows).map(|i| (i % classes) as u8).collect();
    let mut grad = vec![0.0f32; params.values.len()];
    let mut ws = Workspace::new(&layers, rows);
    let step_flops = flops(rows, hidden, fan_in) * 2.0
        + flops(rows, classes, hidden) * 2.0
        + flops(rows, hidden, classes);
    let mut shard_step = || {
        let result = dense::loss_and_gradient_scaled(
            shape,
            &params.values,
            &x,
            &labels,
            rows,
            1.0 / 128.0,
            &mut grad,
            &mut ws,
        );
        black_box(result);
    };
    let what = "shard step: forward + backward, 64 rows";
    report(what, step_flops, median_secs(reps, &mut shard_step), peak);
    allocated.push((what.to_string(), allocations(&mut shard_step) as f64));

    allocated.extend(engine_steps(peak_one_thread));

    println!("\n| what | heap allocations per call |\n|---|---|");
    for (what, count) in allocated {
        println!("| {what} | {count:.2} |");
    }
}

/// The CPU engine's training step on Fashion-MNIST (the momentum config, batch 128, two
/// threads): the median over many runs of 16 steps, so that one slow stretch of a shared
/// machine moves the figure less than it moves an epoch's time. Its share is of two threads'
/// worth of the one-thread peak. Returns each thread count's heap allocations per step: the
/// difference between 32 and 16 steps over 16, so that what an epoch does once (evaluating
/// the validation split) drops out.
fn engine_steps(peak_one_thread: f64) -> Vec<(String, f64)> {
    let mut allocated = Vec::new();
    const STEPS: usize = 16;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = TrainConfig::load(&root.join("configs/momentum.toml"), &[]).expect("config");
    let hyper = config.hyper();
    let data = Dataset::load(
        &root.join("data/fashion-mnist"),
        config.val_fraction,
        config.seed,
    )
    .expect("Fashion-MNIST in data/fashion-mnist");
    let data = Arc::new(wgtrain::bench::training_only(data));
    let params = Params::init(&config.layers, config.activation, config.init, config.seed).unwrap();
    let order = epoch_order(config.seed, 1, data.train.len);
    let chunk = STEPS * hyper.batch_size;
    let flops = wgtrain::bench::epoch_flops(&config.layers, chunk);
    for threads in [1, 2] {
        let mut engine = CpuEngine::new(&params, threads, hyper.batch_size).unwrap();
        engine.upload(Arc::clone(&data)).expect("upload");
        let mut chunks = order.chunks_exact(chunk).cycle();
        let secs = median_secs(121, || {
            let stats = wait(engine.train_epoch(chunks.next().unwrap(), &hyper));
            black_box(stats.expect("train"));
        });
        report(
            &format!(
                "engine, {STEPS} steps of {}, {threads} thread(s)",
                hyper.batch_size
            ),
            flops,
            secs,
            Some(peak_one_thread * threads as f64),
        );
        let mut count = |steps: usize| {
            allocations(|| {
                let stats = wait(engine.train_epoch(&order[..steps * hyper.batch_size], &hyper));
                black_box(stats.expect("train"));
            })
        };
        let (short, long) = (count(STEPS), count(2 * STEPS));
        allocated.push((
            format!(
                "engine step of {}, {threads} thread(s) (per step)",
                hyper.batch_size
            ),
            long.saturating_sub(short) as f64 / STEPS as f64,
        ));
    }
    allocated
}
