//! Errors from reading and checking dataset files.

use std::path::PathBuf;

/// Errors from reading and checking dataset files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "data file {path} not found (hint: --data DIR must hold train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz])"
    )]
    Missing { path: PathBuf },
    #[error("data file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data file {path} is empty")]
    Empty { path: PathBuf },
    #[error("data file {path}: corrupt or truncated gzip stream ({message})")]
    Gzip { path: PathBuf, message: String },
    #[error(
        "idx file {path}: bad magic 0x{magic:08x}, expected 0x00000801 (labels) or 0x00000803 (images)"
    )]
    BadMagic { path: PathBuf, magic: u32 },
    #[error("idx file {path}: item type 0x{code:02x} is not supported, only unsigned bytes (0x08)")]
    UnsupportedType { path: PathBuf, code: u8 },
    #[error("idx file {path}: rank {found}, expected {expected} ({what})")]
    BadRank {
        path: PathBuf,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "idx file {path}: {what} holds {found} bytes, the header says {expected} (truncated or corrupt file)"
    )]
    Length {
        path: PathBuf,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("idx file {path}: {message}")]
    Header { path: PathBuf, message: String },
    #[error(
        "{path}: every image of {}×{} pixels is one value throughout, which the per-image z-score makes all zeros: nothing to learn from (hint: images of at least 2 pixels that vary)",
        size.0, size.1
    )]
    NothingToLearn { path: PathBuf, size: (usize, usize) },
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        images: PathBuf,
        image_count: usize,
        labels: PathBuf,
        label_count: usize,
    },
    #[error("{path}: label {label} at item {index} is outside the {classes} classes of {whose}")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
        /// Where the classes come from: "the training labels", "the model".
        whose: &'static str,
    },
    #[error(
        "{path}: label {label} at item {index}, but no label {missing} occurs (classes are numbered 0 to K−1 without gaps) (hint: a corrupt label, or labels that need renumbering)"
    )]
    LabelGap {
        path: PathBuf,
        label: u8,
        index: usize,
        missing: String,
    },
    #[error("{test}: test images are {test_shape:?}, training images are {train_shape:?}")]
    ShapeMismatch {
        test: PathBuf,
        test_shape: (usize, usize),
        train_shape: (usize, usize),
    },
    #[error(
        "data file {path}: SHA-256 {found} does not match the expected {expected} \
         (hint: the file is corrupt or a different version; restore it from git or the Debian package)"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("data file {path}: {message}")]
    ChecksumList { path: PathBuf, message: String },
    #[error(
        "cannot allocate {:.2} GB for {what} (hint: free memory, raise `ulimit -v`, or train with --device gpu)",
        *bytes as f64 / 1e9
    )]
    Allocation { what: &'static str, bytes: u128 },
    #[error(
        "training set has {count} images; the validation fraction {val_fraction} leaves no room for both splits"
    )]
    SplitTooSmall { count: usize, val_fraction: f64 },
}
