//! The paper's preprocessing: a seeded train/validation split, per-image z-scoring, one-hot
//! targets. Pure functions over slices; no I/O.

use rand::seq::SliceRandom;

use crate::model::rng::{STREAM_SPLIT, rng_for};

/// Below this standard deviation an image counts as constant: it is centred but not scaled,
/// so a blank image becomes all zeros instead of NaN.
const MIN_STD: f64 = 1e-8;

/// The (train, validation) sizes [`split_indices`] makes of `n` rows; `None` when either
/// would be empty.
pub fn split_sizes(n: usize, val_fraction: f64) -> Option<(usize, usize)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return None;
    }
    let n_val = (n as f64 * val_fraction).round() as usize;
    (n_val > 0 && n_val < n).then_some((n - n_val, n_val))
}

/// Splits `0..n` into (train, validation) row indices after a seeded shuffle; the validation
/// set gets `round(n × val_fraction)` rows. `None` when either side would be empty.
pub fn split_indices(n: usize, val_fraction: f64, seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    let (_, n_val) = split_sizes(n, val_fraction)?;
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut rng_for(seed, STREAM_SPLIT));
    let val = rows.split_off(n - n_val);
    Some((rows, val))
}

/// One image's mean and the scale that z-scores it: 1 / (population std), or 1 for a constant
/// image, accumulated in f64. The GPU engine uploads these and z-scores on the device.
pub fn image_stats(image: &[u8]) -> (f64, f64) {
    let n = image.len().max(1) as f64;
    // Every partial sum of the pixels is a whole number far below 2^53, so an integer sum is
    // the f64 sum exactly, in any order, and vectorises (a chain of f64 additions cannot be
    // reordered). The squares' sum is not exact: it stays in pixel order.
    let sum: u64 = image.iter().map(|&p| u64::from(p)).sum();
    let mean = sum as f64 / n;
    let var = image
        .iter()
        .map(|&p| (p as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    (mean, if std < MIN_STD { 1.0 } else { 1.0 / std })
}

/// Writes `image` z-scored on its own — (x − mean) / std over its pixels, population std — to
/// `out` (as long as the image).
pub fn zscore_to(image: &[u8], out: &mut [f32]) {
    let (mean, scale) = image_stats(image);
    for (z, &p) in out.iter_mut().zip(image) {
        *z = ((p as f64 - mean) * scale) as f32;
    }
}

/// Z-scores each image on its own ([`zscore_to`]), images in parallel (each image's numbers
/// are the same on any number of threads). Returns `pixels.len()` f32 values.
pub fn zscore_images(pixels: &[u8], features: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; pixels.len()];
    zscore_images_to(pixels, features, &mut out);
    out
}

/// [`zscore_images`] into `out` (as long as `pixels`).
pub fn zscore_images_to(pixels: &[u8], features: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    if features > 0 {
        out.par_chunks_mut(features)
            .zip(pixels.par_chunks(features))
            .for_each(|(z, image)| zscore_to(image, z));
    }
}

/// A zeroed vector of `len` values, or [`super::error::DataError::Allocation`] naming `what` when
/// the memory cannot be had (Rust's `vec!` would abort the process instead). Zeroed by the
/// allocator, as `vec![0; n]` is: a large one comes as untouched zero pages, not a memset
/// (which cost a 60 MB dataset's images 30 ms of page faults before they were written).
pub fn try_zeroed<T: bytemuck::Zeroable>(
    len: usize,
    what: &'static str,
) -> Result<Vec<T>, super::error::DataError> {
    bytemuck::allocation::try_zeroed_vec(len).map_err(|()| super::error::DataError::Allocation {
        what,
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
    })
}

/// One-hot rows: `labels.len() × classes`, 1 at each label's column.
pub fn one_hot(labels: &[u8], classes: usize) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        out[row * classes + label as usize] = 1.0;
    }
    out
}
