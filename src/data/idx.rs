//! IDX files (the MNIST family's format), gzipped or not: header checks, then the raw u8 payload.
//! Pure parsing: no preprocessing here, and nothing assumes 28×28 images or 10 classes.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::DataError;

/// IDX item-type code for unsigned bytes, the only type the MNIST family uses.
const IDX_TYPE_U8: u8 = 0x08;
/// gzip's two magic bytes; a file that starts with them is decompressed first.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Refuse headers that promise more than this many items, so a corrupt header cannot make us
/// allocate absurd amounts of memory before the length check catches it.
const MAX_IDX_BYTES: u64 = 1 << 32;

/// A decoded IDX array of u8 items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// Row-major items, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

/// A data file's bytes; a missing file is [`DataError::Missing`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    crate::files::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// The number of items an IDX file's header declares (its first dimension), read from the
/// first bytes alone; `None` when the file cannot be read or is not IDX. For estimates made
/// before the data is loaded (which checks everything).
pub fn declared_items(path: &Path) -> Option<usize> {
    declared_dims(path)?.first().copied()
}

/// Every dimension an IDX file's header declares (`[60000, 28, 28]`), read from the first
/// bytes alone, as [`declared_items`] reads the first.
pub fn declared_dims(path: &Path) -> Option<Vec<usize>> {
    let mut file = crate::files::open(path).ok()?;
    let mut start = [0u8; 2];
    file.read_exact(&mut start).ok()?;
    let file = std::io::Cursor::new(start).chain(file);
    let mut reader: Box<dyn Read> = if start == GZIP_MAGIC {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).ok()?;
    if magic[..2] != [0, 0] || magic[2] != IDX_TYPE_U8 || magic[3] == 0 {
        return None;
    }
    let mut dims = vec![0u8; 4 * magic[3] as usize];
    reader.read_exact(&mut dims).ok()?;
    Some(
        dims.chunks_exact(4)
            .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
            .collect(),
    )
}

/// Parses IDX bytes (gzipped or plain). `path` only labels errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let path_buf = || PathBuf::from(path);
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path_buf() });
    }
    if !bytes.starts_with(&GZIP_MAGIC) {
        let (mut array, header_len) = parse_header(bytes, path)?;
        let payload = &bytes[header_len..];
        array.data = super::prep::try_zeroed(payload.len(), "an IDX file's contents")?;
        array.data.copy_from_slice(payload);
        return Ok(array);
    }
    // The header comes first and says how long the payload is: decompress it alone, then no
    // more than that payload and one byte (which tells a file too long from one just right).
    // A gzip bomb (a small file that inflates to gigabytes) thus costs no more memory than
    // the file honestly claims, and its length error comes as soon as that is exceeded.
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
    let gzip_error = |e: std::io::Error| DataError::Gzip {
        path: path_buf(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    (&mut decoder)
        .take(4)
        .read_to_end(&mut out)
        .map_err(gzip_error)?;
    if out.is_empty() {
        return Err(DataError::Empty { path: path_buf() });
    }
    if out.len() == 4 {
        let dims_len = 4 * out[3] as u64;
        (&mut decoder)
            .take(dims_len)
            .read_to_end(&mut out)
            .map_err(gzip_error)?;
    }
    let (_, header_len, items) = parse_dims(&out, path)?;
    out.try_reserve_exact(items + 1)
        .map_err(|_| DataError::Allocation {
            what: "an IDX file's contents",
            bytes: (header_len + items) as u128,
        })?;
    decoder
        .take(items as u64 + 1)
        .read_to_end(&mut out)
        .map_err(gzip_error)?;
    if out.len() > header_len + items {
        return Err(DataError::Header {
            path: path_buf(),
            message: format!(
                "decompresses to more than the {items} bytes of payload its header declares (a corrupt file, or a gzip bomb)"
            ),
        });
    }
    let (mut array, header_len) = parse_header(&out, path)?;
    // The payload moves to the front of the buffer it was decompressed into: no second copy.
    out.drain(..header_len);
    array.data = out;
    Ok(array)
}

/// Checks an uncompressed IDX file's header against its length: the array's dims (its data
/// left empty) and where the payload starts.
fn parse_header(raw: &[u8], path: &Path) -> Result<(IdxArray, usize), DataError> {
    let (dims, header_len, items) = parse_dims(raw, path)?;
    let payload = &raw[header_len..];
    if payload.len() != items {
        return Err(DataError::Length {
            path: PathBuf::from(path),
            what: "payload",
            expected: items,
            found: payload.len(),
        });
    }
    Ok((
        IdxArray {
            dims,
            data: Vec::new(),
        },
        header_len,
    ))
}

/// An IDX header (at the start of `raw`): its dims, its length and the payload's length in
/// items, checked for magic, type, rank and size but not against what follows.
fn parse_dims(raw: &[u8], path: &Path) -> Result<(Vec<usize>, usize, usize), DataError> {
    let path_buf = || PathBuf::from(path);
    if raw.len() < 4 {
        return Err(DataError::Length {
            path: path_buf(),
            what: "header",
            expected: 4,
            found: raw.len(),
        });
    }
    let magic = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if raw[0] != 0 || raw[1] != 0 {
        return Err(DataError::BadMagic {
            path: path_buf(),
            magic,
        });
    }
    if raw[2] != IDX_TYPE_U8 {
        return Err(DataError::UnsupportedType {
            path: path_buf(),
            code: raw[2],
        });
    }
    let rank = raw[3] as usize;
    if rank == 0 {
        return Err(DataError::BadMagic {
            path: path_buf(),
            magic,
        });
    }
    let header_len = 4 + 4 * rank;
    if raw.len() < header_len {
        return Err(DataError::Length {
            path: path_buf(),
            what: "header",
            expected: header_len,
            found: raw.len(),
        });
    }
    let dims: Vec<usize> = raw[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let items = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_IDX_BYTES)
        .ok_or_else(|| DataError::Header {
            path: path_buf(),
            message: format!("dimensions {dims:?} describe more than {MAX_IDX_BYTES} bytes"),
        })?;
    Ok((dims, header_len, items))
}

/// Encodes a u8 IDX array (used by tests and by tools that write small datasets).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, IDX_TYPE_U8, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
