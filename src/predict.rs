//! Classifying images with a saved model: PNG/JPEG files converted the way Fashion-MNIST's
//! images were made (grey, light background inverted to dark, trimmed to the object, longest
//! edge scaled to the frame, centred), or every image of an IDX file.

use std::path::{Path, PathBuf};

use crate::cpu::dense::{self, Shape, Workspace};
use crate::cpu::layers::{LayersWorkspace, forward};
use crate::data::{idx, prep::zscore_images};
use crate::error::{Error, Result};
use crate::model::{Network, Params};

/// Images per forward pass of a network of layers.
const PASS_ROWS: usize = 256;

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

/// Names for a model's `classes` classes: `custom` (comma-separated) when given, which must
/// name every class; else Fashion-MNIST's for ten classes, else the label numbers.
pub fn class_names(classes: usize, custom: Option<&str>) -> Result<Vec<String>> {
    Ok(match custom {
        Some(list) => {
            let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if names.len() != classes {
                return Err(Error::Usage(format!(
                    "--class-names gives {} names, the model has {classes} classes",
                    names.len()
                )));
            }
            // An empty or repeated name would print a prediction no one can read back.
            if let Some(i) = names.iter().position(|n| n.is_empty()) {
                return Err(Error::Usage(format!(
                    "--class-names: the name of class {i} is empty"
                )));
            }
            if let Some((i, n)) = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
            {
                return Err(Error::Usage(format!(
                    "--class-names: {n:?} names class {i} and an earlier one"
                )));
            }
            names
        }
        None if classes == FASHION_CLASSES.len() => {
            FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
        }
        None => (0..classes).map(|c| c.to_string()).collect(),
    })
}

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
    /// Set when the prediction says nothing about the image (a blank one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Prediction {
    /// The file, and the item's index in it for an IDX file: `t10k.idx[17]`.
    pub fn name(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}]", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    /// `name: Coat 91.2%, Pullover 5.0%`, the classes named by `names`.
    pub fn text(&self, names: &[String]) -> String {
        let shown: Vec<String> = (self.top.iter())
            .map(|&(label, p)| format!("{} {:.1}%", names[label], 100.0 * p))
            .collect();
        format!("{}: {}", self.name(), shown.join(", "))
    }

    /// The prediction as one JSON line: the file, the index, the top classes, any warning.
    pub fn json(&self, names: &[String]) -> serde_json::Value {
        let top: Vec<_> = (self.top.iter())
            .map(|&(label, probability)| {
                serde_json::json!({"class": names[label], "label": label, "probability": probability})
            })
            .collect();
        let mut line = serde_json::json!({"file": self.file, "index": self.index, "top": top});
        if let Some(warning) = &self.warning {
            line["warning"] = serde_json::json!(warning);
        }
        line
    }
}

/// The largest width or height a picture may declare: a phone photo (48 MP is 8000 × 6000)
/// fits; a 1.5 KB file that claims 16000 × 10000 pixels is refused before it is decoded,
/// rather than inflated into gigabytes.
pub const MAX_PICTURE_SIDE: u32 = 10_000;
/// What the decoder may allocate for one picture.
const MAX_PICTURE_BYTES: u64 = 400 << 20;

/// The warning for an input whose pixels are all the same after conversion: z-scored it is
/// all zeros, so the network answers with its biases whatever the picture was (blank white,
/// black, fully transparent, a single pixel).
const BLANK_WARNING: &str = "the image is blank (every pixel the same after conversion): this prediction says nothing about it";

fn blank_warning(frame: &[u8]) -> Option<String> {
    frame
        .iter()
        .all(|&p| p == frame[0])
        .then(|| BLANK_WARNING.to_string())
}

/// Whether JPEG `bytes` end their last scan with an end-of-image marker (FF D9). Entropy-coded
/// data stuffs a 00 after every FF, so FF D9 after the first start-of-scan (FF DA) is the real
/// end: a file cut short has none, and a JPEG decoder would fill the missing part with grey
/// and answer as if the picture were whole.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Whether the scans of JPEG `bytes` (their start-of-scan headers, walked marker by marker)
/// bring every coefficient of every component to full precision: a sequential frame needs
/// each component in a scan; a progressive one (SOF2) each component's coefficients 0..=63
/// in a scan whose successive approximation ends at bit 0; and every scan some coded data. A
/// progressive file cut short and given an end-of-image marker by hand lacks its later
/// scans (or a baseline one its data), and a decoder would draw what is there, a blur or
/// grey, and answer for it.
fn jpeg_scans_are_complete(bytes: &[u8]) -> bool {
    // Per component id: the coefficients brought to bit 0 (bit k for coefficient k).
    let mut components: Vec<(u8, u64)> = Vec::new();
    let mut progressive = false;
    let mut at = 2; // past SOI
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        match marker {
            0xD9 => break,
            // Fill bytes, and markers without a length.
            0xFF | 0x01 | 0xD0..=0xD7 => {
                at += if marker == 0xFF { 1 } else { 2 };
                continue;
            }
            _ => {}
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(segment) = bytes.get(at + 4..at + 2 + length) else {
            return false;
        };
        match marker {
            // Start of frame: its components (id, sampling, table) after precision and size.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                let count = segment.get(5).copied().unwrap_or(0) as usize;
                components = (0..count)
                    .filter_map(|i| segment.get(6 + 3 * i).map(|&id| (id, 0)))
                    .collect();
            }
            0xDA => {
                let count = segment.first().copied().unwrap_or(0) as usize;
                let ids = segment.get(1..1 + 2 * count).unwrap_or_default();
                let tail = segment.get(1 + 2 * count..).unwrap_or_default();
                let [start, end, approximation] = [0, 1, 2].map(|i| tail.get(i).copied());
                let (Some(start), Some(end), Some(approximation)) = (start, end, approximation)
                else {
                    return false;
                };
                let (start, end) = match progressive {
                    true => (start.min(63), end.min(63)),
                    false => (0, 63),
                };
                if approximation & 0x0F == 0 && start <= end {
                    let band = (start..=end).fold(0u64, |m, k| m | 1 << k);
                    for id in ids.iter().step_by(2) {
                        if let Some(c) = components.iter_mut().find(|(c, _)| c == id) {
                            c.1 |= band;
                        }
                    }
                }
                // The entropy-coded data runs to the next marker that is not a stuffed 00 or
                // a restart marker.
                at += 2 + length;
                let ends_scan =
                    |at: usize| bytes[at] == 0xFF && !matches!(bytes[at + 1], 0x00 | 0xD0..=0xD7);
                let data = at;
                while at + 1 < bytes.len() && !ends_scan(at) {
                    at += 1;
                }
                // Every scan codes at least one block: one with no data was cut away.
                if at == data {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        at += 2 + length;
    }
    !components.is_empty() && components.iter().all(|&(_, done)| done == u64::MAX)
}

/// A picture (the file `path`'s `bytes`) as `side × side` bytes, dark background, object
/// centred. Transparent pixels count as white, as a viewer shows them.
pub fn picture_to_frame(path: &Path, bytes: &[u8], side: usize) -> Result<Vec<u8>> {
    let grey = decode_grey(path, bytes)?;
    let (w, h) = grey.dimensions();
    if w == 0 || h == 0 {
        let message = format!("image {}: empty image", path.display());
        return Err(Error::Usage(message));
    }
    Ok(frame_of(grey, side))
}

/// The picture in `bytes` (read from `path`) decoded to greyscale within wgtrain's limits,
/// transparency over white.
fn decode_grey(path: &Path, bytes: &[u8]) -> Result<image::GrayImage> {
    let bad = |message: String| Error::Usage(format!("image {}: {message}", path.display()));
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))
    };
    if reader()?.format() == Some(image::ImageFormat::Jpeg) {
        if !jpeg_is_complete(bytes) {
            return Err(bad(
                "the JPEG is truncated or corrupt (no end-of-image marker after its data)".into(),
            ));
        }
        if !jpeg_scans_are_complete(bytes) {
            return Err(bad(
                "the JPEG is truncated or corrupt (its scans leave part of the picture undecoded)"
                    .into(),
            ));
        }
    }
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    if w > MAX_PICTURE_SIDE || h > MAX_PICTURE_SIDE {
        return Err(bad(format!(
            "declares {w}×{h} pixels, more than the {MAX_PICTURE_SIDE} a side wgtrain decodes (hint: scale it down first)"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(MAX_PICTURE_BYTES);
    let mut decoding = reader()?;
    decoding.limits(limits);
    let decoded = decoding.decode().map_err(|e| bad(e.to_string()))?;
    Ok(if decoded.color().has_alpha() {
        // Over white: a cut-out product photo reads as an object on a light background.
        let rgba = decoded.to_luma_alpha8();
        image::GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let [l, a] = rgba.get_pixel(x, y).0;
            let (l, a) = (u32::from(l), u32::from(a));
            image::Luma([((l * a + 255 * (255 - a) + 127) / 255) as u8])
        })
    } else {
        decoded.to_luma8()
    })
}

/// `grey` (not empty) as Fashion-MNIST's images are: light on dark, trimmed to the object,
/// scaled to fit `side` × `side` and centred.
fn frame_of(grey: image::GrayImage, side: usize) -> Vec<u8> {
    let (w, h) = grey.dimensions();
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
    frame
}

/// Whether images of `dims` (an IDX file's dimensions after the count: `[rows, cols]`) are
/// what `model` takes: a model on flat inputs (`layers = [...]`) any image of its input width,
/// one planned on images images of its height and width. The error says what the model takes.
pub fn check_images(model: &Network, dims: &[usize]) -> std::result::Result<(), String> {
    let pixels: usize = dims.iter().product();
    let (height, width) = (model.input.height, model.input.width);
    if model.input.is_flat() {
        if pixels != model.inputs() {
            return Err(format!("images of {} pixels", model.inputs()));
        }
    } else if dims != [height, width] {
        return Err(format!("{height}×{width} images"));
    }
    Ok(())
}

/// Softmax probabilities of `params` for each image (raw bytes, `features` each).
pub fn probabilities(params: &Params, pixels: &[u8]) -> Vec<Vec<f64>> {
    let features = params.model.inputs();
    let classes = params.model.classes();
    let images = zscore_images(pixels, features);
    let rows = pixels.len() / features.max(1);
    let network = &params.model;
    let logits: Vec<f32> = match network.dense_stack() {
        Some((_, activation)) => {
            let layers = network.layer_views();
            let shape = Shape {
                layers: &layers,
                activation,
                threads: 1,
            };
            let mut ws = Workspace::new(&layers, rows.max(1));
            dense::forward(shape, &params.values, &images, rows, &mut ws);
            ws.logits(rows, classes).to_vec()
        }
        None => {
            // In passes of a few hundred rows: a network's workspace per image is large.
            let pass = rows.clamp(1, PASS_ROWS);
            let mut ws = LayersWorkspace::new(network, pass);
            let threads = crate::host::resolve_threads(0);
            let mut logits = Vec::with_capacity(rows * classes);
            for chunk in images.chunks(pass * features) {
                let n = chunk.len() / features;
                let out = forward(network, &params.values, chunk, n, None, threads, &mut ws);
                logits.extend_from_slice(out);
            }
            logits
        }
    };
    logits
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
    let features = params.model.inputs();
    let net = &params.model;
    let side = if net.input.is_flat() {
        (features as f64).sqrt().round() as usize
    } else if net.input.height == net.input.width {
        net.input.height
    } else {
        0
    };
    let mut out = Vec::new();
    for file in files {
        let bytes = crate::files::read(file).map_err(|e| Error::io(file, e))?;
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
            if array.dims[0] == 0 {
                return Err(Error::Usage(format!(
                    "{}: the IDX file holds no images (its header declares 0 items)",
                    file.display()
                )));
            }
            if let Err(takes) = check_images(&params.model, &array.dims[1..]) {
                return Err(Error::Usage(format!(
                    "{}: images of {} pixels ({:?}), the model takes {takes}",
                    file.display(),
                    per_item,
                    &array.dims[1..]
                )));
            }
            for (index, (p, image)) in probabilities(params, &array.data)
                .iter()
                .zip(array.data.chunks_exact(features))
                .enumerate()
            {
                out.push(Prediction {
                    file: file.clone(),
                    index: Some(index),
                    top: top(p, k),
                    warning: blank_warning(image),
                });
            }
        } else {
            if side * side != features {
                return Err(Error::Usage(format!(
                    "{}: the model takes {features} inputs, not a square image",
                    file.display()
                )));
            }
            let frame = picture_to_frame(file, &bytes, side)?;
            let p = &probabilities(params, &frame)[0];
            out.push(Prediction {
                file: file.clone(),
                index: None,
                top: top(p, k),
                warning: blank_warning(&frame),
            });
        }
    }
    Ok(out)
}
