//! Classifying images with a saved model: PNG/JPEG files converted the way Fashion-MNIST's
//! images were made (grey, light background inverted to dark, trimmed to the object, longest
//! edge scaled to the frame, centred), or every image of an IDX file.

use std::path::{Path, PathBuf};

use crate::cpu::net::{self, Shape, Workspace};
use crate::data::{idx, prep::zscore_images};
use crate::error::{Error, Result};
use crate::model::Params;

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// A pixel this far above the background counts as part of the object when trimming.
const TRIM_THRESHOLD: u8 = 24;

/// One image's probabilities.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub file: PathBuf,
    /// Item index for IDX files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// (label, probability), most probable first.
    pub top: Vec<(usize, f64)>,
}

/// A picture as `side × side` bytes, dark background, object centred.
pub fn picture_to_frame(path: &Path, side: usize) -> Result<Vec<u8>> {
    let bad = |message: String| Error::Usage(format!("image {}: {message}", path.display()));
    let grey = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| bad(e.to_string()))?
        .to_luma8();
    let (w, h) = grey.dimensions();
    if w == 0 || h == 0 {
        return Err(bad("empty image".into()));
    }
    // The border's mean tells the background; Fashion-MNIST objects are light on dark.
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [grey.get_pixel(x, 0)[0], grey.get_pixel(x, h - 1)[0]])
        .chain((0..h).flat_map(|y| [grey.get_pixel(0, y)[0], grey.get_pixel(w - 1, y)[0]]))
        .collect();
    let light = border.iter().map(|&p| p as f64).sum::<f64>() / border.len() as f64 > 127.0;
    let mut img = grey;
    if light {
        image::imageops::invert(&mut img);
    }
    let background = {
        let mut b: Vec<u8> = border
            .iter()
            .map(|&p| if light { 255 - p } else { p })
            .collect();
        b.sort_unstable();
        b[b.len() / 2]
    };
    // Trim to the object's bounding box.
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] > background.saturating_add(TRIM_THRESHOLD) {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        (x0, y0, x1, y1) = (0, 0, w - 1, h - 1);
    }
    let cropped = image::imageops::crop_imm(&img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (cw, ch) = cropped.dimensions();
    let scale = side as f64 / cw.max(ch) as f64;
    let (nw, nh) = (
        ((cw as f64 * scale).round() as u32).clamp(1, side as u32),
        ((ch as f64 * scale).round() as u32).clamp(1, side as u32),
    );
    let resized = image::imageops::resize(&cropped, nw, nh, image::imageops::FilterType::Lanczos3);
    let mut frame = vec![0u8; side * side];
    let (ox, oy) = ((side as u32 - nw) / 2, (side as u32 - nh) / 2);
    for (x, y, p) in resized.enumerate_pixels() {
        frame[((oy + y) as usize) * side + (ox + x) as usize] = p[0];
    }
    Ok(frame)
}

/// Softmax probabilities of `params` for each image (raw bytes, `features` each).
pub fn probabilities(params: &Params, pixels: &[u8]) -> Vec<Vec<f64>> {
    let features = params.widths[0];
    let classes = *params.widths.last().unwrap_or(&0);
    let layers = params.layers();
    let shape = Shape {
        layers: &layers,
        activation: params.activation,
        threads: 1,
    };
    let images = zscore_images(pixels, features);
    let rows = pixels.len() / features.max(1);
    let mut ws = Workspace::new(&layers, rows.max(1));
    net::forward(shape, &params.values, &images, rows, &mut ws);
    ws.logits(rows, classes)
        .chunks_exact(classes)
        .map(|z| {
            let max = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let e: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect()
        })
        .collect()
}

fn top(p: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = p.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

/// Classifies each file: an IDX images file (every item) or a PNG/JPEG picture.
pub fn predict_files(params: &Params, files: &[PathBuf], k: usize) -> Result<Vec<Prediction>> {
    let features = params.widths[0];
    let side = (features as f64).sqrt().round() as usize;
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let is_idx = bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(&[0, 0, 0x08]);
        if is_idx {
            let array = idx::parse_idx(&bytes, file)?;
            let per_item: usize = array.dims.iter().skip(1).product();
            if array.dims.len() < 2 {
                return Err(Error::Usage(format!(
                    "{}: an IDX file of rank 1 holds labels, not images (pass the images file)",
                    file.display()
                )));
            }
            if per_item != features {
                return Err(Error::Usage(format!(
                    "{}: images of {} pixels ({:?}), the model takes {features}",
                    file.display(),
                    per_item,
                    &array.dims[1..]
                )));
            }
            for (index, p) in probabilities(params, &array.data).iter().enumerate() {
                out.push(Prediction {
                    file: file.clone(),
                    index: Some(index),
                    top: top(p, k),
                });
            }
        } else {
            if side * side != features {
                return Err(Error::Usage(format!(
                    "{}: the model takes {features} inputs, not a square image",
                    file.display()
                )));
            }
            let frame = picture_to_frame(file, side)?;
            let p = &probabilities(params, &frame)[0];
            out.push(Prediction {
                file: file.clone(),
                index: None,
                top: top(p, k),
            });
        }
    }
    Ok(out)
}
