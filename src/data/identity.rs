//! What a run trained on: its data directory and the SHA-256 of each file read from it, so a
//! resumed run or a rerun sweep can prove it goes on with the same data. No file I/O here
//! beyond what the loader already read: the digests come from the bytes it parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A dataset's directory and its files' digests (file name → lowercase hex SHA-256).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataIdentity {
    /// The directory as an absolute path where it can be resolved (a resume may start in
    /// another working directory).
    pub dir: PathBuf,
    pub files: BTreeMap<String, String>,
}

impl DataIdentity {
    /// Records that `path` (a file of `dir`) had digest `sha256`.
    pub fn add(&mut self, path: &Path, sha256: String) {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        self.files.insert(name, sha256);
    }

    /// The identity of the files in `dir` (absolute when it can be resolved).
    pub fn in_dir(dir: &Path) -> Self {
        DataIdentity {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            files: BTreeMap::new(),
        }
    }

    /// The first file in which `other` differs from `self`, in words, or `None`.
    pub fn difference(&self, other: &DataIdentity) -> Option<String> {
        let short = |d: &str| d.get(..12).unwrap_or(d).to_string();
        for (name, digest) in &self.files {
            match other.files.get(name) {
                None => return Some(format!("{name} is not among its files")),
                Some(d) if d != digest => {
                    return Some(format!(
                        "{name} has SHA-256 {}…, not {}…",
                        short(d),
                        short(digest)
                    ));
                }
                Some(_) => {}
            }
        }
        other
            .files
            .keys()
            .find(|n| !self.files.contains_key(*n))
            .map(|n| format!("it has {n}, which the run did not read"))
    }
}
