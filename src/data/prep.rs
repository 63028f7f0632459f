//! The paper's preprocessing: a seeded train/validation split, per-image z-scoring, one-hot
//! targets. Pure functions over slices; no I/O.

use rand::seq::SliceRandom;

use super::batches::{STREAM_SPLIT, rng_for};

/// Below this standard deviation an image counts as constant: it is centred but not scaled,
/// so a blank image becomes all zeros instead of NaN.
const MIN_STD: f64 = 1e-8;

/// Splits `0..n` into (train, validation) row indices after a seeded shuffle; the validation
/// set gets `round(n × val_fraction)` rows. `None` when either side would be empty.
pub fn split_indices(n: usize, val_fraction: f64, seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return None;
    }
    let n_val = (n as f64 * val_fraction).round() as usize;
    if n_val == 0 || n_val >= n {
        return None;
    }
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut rng_for(seed, STREAM_SPLIT));
    let val = rows.split_off(n - n_val);
    Some((rows, val))
}

/// One image's mean and the scale that z-scores it: 1 / (population std), or 1 for a constant
/// image, accumulated in f64. The GPU engine uploads these and z-scores on the device.
pub fn image_stats(image: &[u8]) -> (f64, f64) {
    let n = image.len().max(1) as f64;
    let mean = image.iter().map(|&p| p as f64).sum::<f64>() / n;
    let var = image
        .iter()
        .map(|&p| (p as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    (mean, if std < MIN_STD { 1.0 } else { 1.0 / std })
}

/// Z-scores each image on its own: (x − mean) / std over that image's pixels (population std).
/// Returns `pixels.len()` f32 values.
pub fn zscore_images(pixels: &[u8], features: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(pixels.len());
    for image in pixels.chunks_exact(features) {
        let (mean, scale) = image_stats(image);
        out.extend(image.iter().map(|&p| ((p as f64 - mean) * scale) as f32));
    }
    out
}

/// One-hot rows: `labels.len() × classes`, 1 at each label's column.
pub fn one_hot(labels: &[u8], classes: usize) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        out[row * classes + label as usize] = 1.0;
    }
    out
}
