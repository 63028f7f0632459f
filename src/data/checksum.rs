//! SHA-256 verification of dataset files against a `SHA256SUMS` list (`sha256sum` format).
//! The vendored Fashion-MNIST list is also compiled in, so deleting the list beside the
//! vendored files does not switch verification off.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::DataError;

/// Name of the checksum list looked for beside the data files.
pub const CHECKSUM_LIST: &str = "SHA256SUMS";
/// The digests of the four vendored Fashion-MNIST files.
const VENDORED_SUMS: &str = include_str!("../../data/fashion-mnist/SHA256SUMS");

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses `sha256sum` output into (file name, lowercase hex digest) pairs.
fn parse_list(text: &str, list_path: &Path) -> Result<Vec<(String, String)>, DataError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (digest, name) =
            line.split_once(char::is_whitespace)
                .ok_or_else(|| DataError::ChecksumList {
                    path: list_path.to_path_buf(),
                    message: format!("line {} is not `<sha256>  <file name>`", n + 1),
                })?;
        let name = name.trim_start().trim_start_matches('*');
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DataError::ChecksumList {
                path: list_path.to_path_buf(),
                message: format!("line {}: `{digest}` is not a SHA-256 digest", n + 1),
            });
        }
        out.push((name.to_string(), digest.to_ascii_lowercase()));
    }
    Ok(out)
}

fn vendored_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("fashion-mnist")
}

/// Verifies that `path`, whose bytes have SHA-256 `found`, matches the checksum list of its
/// directory, if it has one, and the compiled-in list when the directory is the vendored one.
/// Files the lists do not name pass. A list that is there but cannot be read (a directory, no
/// permission) is an error: skipping it would switch verification off without a word.
pub fn verify_digest(path: &Path, found: &str) -> Result<(), DataError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let mut expected: Vec<(String, String)> = Vec::new();
    let list_path = dir.join(CHECKSUM_LIST);
    match crate::files::read_to_string(&list_path) {
        Ok(text) => expected.extend(parse_list(&text, &list_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DataError::ChecksumList {
                path: list_path,
                message: format!("cannot be read ({e}); the data files cannot be verified"),
            });
        }
    }
    let is_vendored = match (dir.canonicalize(), vendored_dir().canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if is_vendored {
        expected.extend(parse_list(VENDORED_SUMS, &list_path)?);
    }
    match expected.iter().find(|(n, d)| n == name && d != found) {
        Some((_, bad)) => Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: bad.clone(),
            found: found.to_string(),
        }),
        None => Ok(()),
    }
}
