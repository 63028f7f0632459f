//! Dataset loading: the four IDX files of an MNIST-style directory → checked raw arrays →
//! preprocessed [`Dataset`] splits. Knows nothing of engines or the CLI.

pub mod batches;
pub mod checksum;
mod error;
pub mod identity;
pub mod idx;
pub mod prep;

use std::path::{Path, PathBuf};

pub use batches::epoch_order;
pub use error::DataError;
pub use identity::DataIdentity;
pub use prep::{one_hot, split_indices, split_sizes, zscore_images};

/// The four file names every MNIST-style directory uses (each may also carry `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// The four files of an MNIST-style directory, in the order [`Dataset::from_bytes`] takes them.
pub const FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Images and labels of one IDX pair, as read from disk.
#[derive(Debug, Clone)]
pub struct RawImages {
    /// `count × rows × cols` bytes, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub images_path: PathBuf,
    pub labels_path: PathBuf,
    /// SHA-256 of each file's bytes as read (hex), for [`DataIdentity`].
    pub images_sha256: String,
    pub labels_sha256: String,
}

impl RawImages {
    pub fn features(&self) -> usize {
        self.rows * self.cols
    }

    /// Number of classes these labels imply: the largest label plus one.
    pub fn classes(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
    }

    /// The number of classes, [`RawImages::classes`], once every label below the largest has
    /// been seen: classes are numbered 0..K−1, and a gap (labels 0–9 and one 255) is a
    /// corrupt label, which would otherwise ask for a 256-wide output layer and train.
    pub fn checked_classes(&self) -> Result<usize, DataError> {
        let classes = self.classes();
        let mut seen = vec![false; classes];
        for &l in &self.labels {
            seen[l as usize] = true;
        }
        let Some(first_missing) = seen.iter().position(|s| !s) else {
            return Ok(classes);
        };
        let largest = (classes - 1) as u8;
        let next_seen = seen[first_missing..]
            .iter()
            .position(|&s| s)
            .map_or(classes, |p| first_missing + p);
        Err(DataError::LabelGap {
            path: self.labels_path.clone(),
            label: largest,
            index: self.labels.iter().position(|&l| l == largest).unwrap_or(0),
            missing: if next_seen - first_missing == 1 {
                format!("{first_missing}")
            } else {
                format!("{first_missing} to {}", next_seen - 1)
            },
        })
    }

    /// Fails on the first label that is not below `classes` (which are `whose`: "the model").
    pub fn check_labels(&self, classes: usize, whose: &'static str) -> Result<(), DataError> {
        match self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            Some((index, &label)) => Err(DataError::LabelOutOfRange {
                path: self.labels_path.clone(),
                index,
                label,
                classes,
                whose,
            }),
            None => Ok(()),
        }
    }
}

/// Finds `name.gz` or `name` in `dir`, preferring the gzipped original.
pub fn locate(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() { gz } else { dir.join(name) }
}

/// Reads one images/labels pair and checks ranks and counts.
pub fn read_pair(dir: &Path, images: &str, labels: &str) -> Result<RawImages, DataError> {
    let images_path = locate(dir, images);
    let labels_path = locate(dir, labels);
    let (img, images_sha256) = read_checked(&images_path)?;
    let (lab, labels_sha256) = read_checked(&labels_path)?;
    pair_of(
        (img, images_path, images_sha256),
        (lab, labels_path, labels_sha256),
    )
}

/// One images/labels pair from the bytes of its two IDX files (gzipped or not), as a browser
/// page fetched them, checked as [`read_pair`] checks files; `images` and `labels` name them
/// in errors. No checksum list is consulted: the server that sent them checked them.
pub fn pair_from_bytes(
    images: &str,
    image_bytes: &[u8],
    labels: &str,
    label_bytes: &[u8],
) -> Result<RawImages, DataError> {
    let parsed = |name: &str, bytes: &[u8]| {
        let path = PathBuf::from(name);
        Ok::<_, DataError>((
            idx::parse_idx(bytes, &path)?,
            path,
            checksum::sha256_hex(bytes),
        ))
    };
    pair_of(parsed(images, image_bytes)?, parsed(labels, label_bytes)?)
}

/// The checked pair of parsed images and labels, each with its path and SHA-256.
fn pair_of(
    (img, images_path, images_sha256): (idx::IdxArray, PathBuf, String),
    (lab, labels_path, labels_sha256): (idx::IdxArray, PathBuf, String),
) -> Result<RawImages, DataError> {
    if img.dims.len() != 3 {
        return Err(DataError::BadRank {
            path: images_path,
            what: "images are count × rows × cols",
            expected: 3,
            found: img.dims.len(),
        });
    }
    if lab.dims.len() != 1 {
        return Err(DataError::BadRank {
            path: labels_path,
            what: "labels are a flat list",
            expected: 1,
            found: lab.dims.len(),
        });
    }
    let (count, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
    if count == 0 || rows * cols == 0 {
        return Err(DataError::Empty { path: images_path });
    }
    if lab.dims[0] != count {
        return Err(DataError::CountMismatch {
            images: images_path,
            image_count: count,
            labels: labels_path,
            label_count: lab.dims[0],
        });
    }
    Ok(RawImages {
        pixels: img.data,
        labels: lab.data,
        count,
        rows,
        cols,
        images_path,
        labels_path,
        images_sha256,
        labels_sha256,
    })
}

/// Reads one IDX file once: its SHA-256 (checked against any checksum list) and its array.
fn read_checked(path: &Path) -> Result<(idx::IdxArray, String), DataError> {
    let bytes = idx::read_file(path)?;
    let digest = checksum::sha256_hex(&bytes);
    checksum::verify_digest(path, &digest)?;
    Ok((idx::parse_idx(&bytes, path)?, digest))
}

/// One preprocessed split: its images (as bytes, and z-scored on first use) and labels.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// The images as raw bytes, `len × features`, row-major (what a GPU engine keeps
    /// resident, z-scoring on the device).
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub len: usize,
    /// Each image's row in the file it came from. Training and validation rows index the same
    /// file (the training images), so datasets split with different seeds name the same images
    /// alike: a GPU keeps that file once and serves every packed model's split from it.
    pub rows: Vec<u32>,
    /// [`Split::images`], made on first use: only the CPU path reads f32 images, and for the
    /// training file they are 150 MB that a GPU run would build for nothing.
    images: std::sync::OnceLock<Vec<f32>>,
}

impl Split {
    /// A split of the images `pixels` (`labels.len()` of them) that are rows `first..first +
    /// len` of their source.
    pub fn contiguous(pixels: Vec<u8>, labels: Vec<u8>, first: usize) -> Split {
        let len = labels.len();
        Split {
            pixels,
            labels,
            len,
            rows: (first as u32..(first + len) as u32).collect(),
            images: Default::default(),
        }
    }

    /// The images at `rows` of their source file.
    fn gather(pixels: &[u8], labels: &[u8], features: usize, rows: &[usize]) -> Split {
        let mut raw = Vec::with_capacity(rows.len() * features);
        for &r in rows {
            raw.extend_from_slice(&pixels[r * features..(r + 1) * features]);
        }
        Split {
            pixels: raw,
            labels: rows.iter().map(|&r| labels[r]).collect(),
            len: rows.len(),
            rows: rows.iter().map(|&r| r as u32).collect(),
            images: Default::default(),
        }
    }

    /// Bytes per image.
    fn features(&self) -> usize {
        self.pixels.len() / self.len.max(1)
    }

    /// The first `n` images of the split.
    pub fn first(&self, n: usize) -> Split {
        let n = n.min(self.len);
        let features = self.features();
        Split {
            pixels: self.pixels[..n * features].to_vec(),
            labels: self.labels[..n].to_vec(),
            len: n,
            rows: self.rows[..n].to_vec(),
            images: Default::default(),
        }
    }

    /// `len × features` f32, row-major, each image z-scored on its own
    /// ([`prep::zscore_images`]); computed on the first call (in parallel), then kept.
    pub fn images(&self) -> &[f32] {
        self.images
            .get_or_init(|| zscore_images(&self.pixels, self.features()))
    }

    /// [`Split::images`], failing with [`DataError::Allocation`] where the memory for them
    /// cannot be had (`images` would abort the process).
    pub fn try_images(&self) -> Result<&[f32], DataError> {
        if let Some(images) = self.images.get() {
            return Ok(images);
        }
        let mut images = prep::try_zeroed(self.pixels.len(), "the z-scored f32 images")?;
        prep::zscore_images_to(&self.pixels, self.features(), &mut images);
        Ok(self.images.get_or_init(|| images))
    }

    /// Whether [`Split::images`] has been computed (a GPU run never needs it).
    pub fn images_made(&self) -> bool {
        self.images.get().is_some()
    }
}

/// Which split an evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    Train,
    Val,
    Test,
}

/// The preprocessed dataset every engine trains on.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Input width (rows × cols of the images).
    pub features: usize,
    /// (height, width) of an image: the IDX header's (rows, cols).
    pub image_size: (usize, usize),
    /// Number of classes: the largest training label plus one.
    pub classes: usize,
    pub train: Split,
    pub val: Split,
    pub test: Split,
    /// Where the data came from and what it was (empty for data made in memory).
    pub identity: DataIdentity,
}

impl Dataset {
    pub fn split(&self, name: SplitName) -> &Split {
        match name {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }

    /// Builds the paper's splits: a seeded `val_fraction` of the training images becomes the
    /// validation set; the test set is kept whole.
    pub fn from_raw(
        train: &RawImages,
        test: &RawImages,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self, DataError> {
        if (test.rows, test.cols) != (train.rows, train.cols) {
            return Err(DataError::ShapeMismatch {
                test: test.images_path.clone(),
                test_shape: (test.rows, test.cols),
                train_shape: (train.rows, train.cols),
            });
        }
        let classes = train.checked_classes()?;
        test.check_labels(classes, "the training labels")?;
        // Each image is z-scored on its own: one that is a single value (a 1×1 image, or a
        // blank one) becomes all zeros. Training on nothing but those "learns" only the class
        // frequencies, and would end with a warning that blames the learning rate.
        let features = train.features().max(1);
        if train
            .pixels
            .chunks(features)
            .all(|image| image.iter().all(|&p| p == image[0]))
        {
            return Err(DataError::NothingToLearn {
                path: train.images_path.clone(),
                size: (train.rows, train.cols),
            });
        }
        let (train_rows, val_rows) =
            split_indices(train.count, val_fraction, seed).ok_or(DataError::SplitTooSmall {
                count: train.count,
                val_fraction,
            })?;
        let features = train.features();
        let dir = train.images_path.parent().unwrap_or(Path::new("."));
        let mut identity = DataIdentity::in_dir(dir);
        for raw in [train, test] {
            identity.add(&raw.images_path, raw.images_sha256.clone());
            identity.add(&raw.labels_path, raw.labels_sha256.clone());
        }
        Ok(Dataset {
            features,
            image_size: (train.rows, train.cols),
            classes,
            train: Split::gather(&train.pixels, &train.labels, features, &train_rows),
            val: Split::gather(&train.pixels, &train.labels, features, &val_rows),
            test: Split::contiguous(test.pixels.clone(), test.labels.clone(), 0),
            identity,
        })
    }

    /// [`Dataset::load`] from the bytes of the four files, in the order of [`FILES`] (what a
    /// browser page fetched).
    pub fn from_bytes(files: [&[u8]; 4], val_fraction: f64, seed: u64) -> Result<Self, DataError> {
        let train = pair_from_bytes(TRAIN_IMAGES, files[0], TRAIN_LABELS, files[1])?;
        let test = pair_from_bytes(TEST_IMAGES, files[2], TEST_LABELS, files[3])?;
        Self::from_raw(&train, &test, val_fraction, seed)
    }

    /// Loads and preprocesses an MNIST-style directory.
    pub fn load(dir: &Path, val_fraction: f64, seed: u64) -> Result<Self, DataError> {
        let train = read_pair(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
        let test = read_pair(dir, TEST_IMAGES, TEST_LABELS)?;
        Self::from_raw(&train, &test, val_fraction, seed)
    }
}

/// Loads only the test split (for `eval` and `predict`), z-scored the same way.
pub fn load_test_split(dir: &Path) -> Result<(Split, RawImages), DataError> {
    let test = read_pair(dir, TEST_IMAGES, TEST_LABELS)?;
    Ok((
        Split::contiguous(test.pixels.clone(), test.labels.clone(), 0),
        test,
    ))
}

/// The identity of the four files of an MNIST-style directory, without parsing them (a sweep
/// checks it against what its runs trained on before it trains any).
pub fn identity_of_dir(dir: &Path) -> Result<DataIdentity, DataError> {
    let mut identity = DataIdentity::in_dir(dir);
    for name in FILES {
        let path = locate(dir, name);
        let digest = checksum::sha256_hex(&idx::read_file(&path)?);
        identity.add(&path, digest);
    }
    Ok(identity)
}

/// The vendored Fashion-MNIST directory: `data/fashion-mnist` under the working directory when
/// it is there, else the one in the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    in_working_or_source_tree(&Path::new("data").join("fashion-mnist"))
}

/// The directory `relative` under the working directory when it is there, else the one in the
/// source tree this binary was built from (the vendored data, configs, the page).
pub fn in_working_or_source_tree(relative: &Path) -> PathBuf {
    if relative.is_dir() {
        relative.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }
}
