//! `cargo bench --bench load`: how long loading Fashion-MNIST takes before a run can train —
//! reading the four files (checksums, gunzip, IDX checks) and preparing the splits (the seeded
//! split, per-image z-scores) — as the median of nine loads after one warm-up. Every `train`
//! pays it once; a sweep once per distinct split.

use std::time::Instant;

use wgtrain::bench::median;
use wgtrain::data::{self, Dataset};

fn main() {
    let dir = data::default_dir();
    let mut read = Vec::new();
    let mut prepare = Vec::new();
    for round in 0..10 {
        let start = Instant::now();
        let train = data::read_pair(&dir, data::TRAIN_IMAGES, data::TRAIN_LABELS)
            .expect("the vendored training files load");
        let test = data::read_pair(&dir, data::TEST_IMAGES, data::TEST_LABELS)
            .expect("the vendored test files load");
        let read_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let dataset = Dataset::from_raw(&train, &test, 0.2, 1).expect("the paper's split");
        let prepare_s = start.elapsed().as_secs_f64();
        std::hint::black_box(&dataset);
        if round > 0 {
            read.push(read_s);
            prepare.push(prepare_s);
        }
    }
    let mut total: Vec<f64> = read.iter().zip(&prepare).map(|(r, p)| r + p).collect();
    println!("| what | median s (min–max) |");
    println!("|---|---|");
    for (what, times) in [
        ("read: checksums, gunzip, IDX checks (4 files)", &mut read),
        ("prepare: split, z-scores (train, val, test)", &mut prepare),
        ("load (both)", &mut total),
    ] {
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        println!("| {what} | {:.3} ({min:.3}–{max:.3}) |", median(times));
    }
}
