//! The files a user names: inputs are read only when they are regular files (a FIFO would
//! block forever, `/dev/zero` would fill memory), and an output the user names is written
//! through, the way a shell's `>` writes it (into the file a symlink names, into a device or
//! a pipe), never replaced by another file. Run files inside a directory wgtrain owns are
//! written atomically instead (`checkpoint::write_atomic`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many reads of a user's file are under way: a first Ctrl-C stops the process at once
/// while one is (there is nothing to save yet), rather than waiting for the read to end.
static READS_UNDER_WAY: AtomicUsize = AtomicUsize::new(0);

/// Whether the process is reading a user's file right now ([`read`], [`read_to_string`],
/// [`open`]).
pub fn reading_input() -> bool {
    READS_UNDER_WAY.load(Ordering::SeqCst) > 0
}

/// Counts a read as under way while it lives.
struct Reading;

impl Reading {
    fn start() -> Self {
        READS_UNDER_WAY.fetch_add(1, Ordering::SeqCst);
        Reading
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READS_UNDER_WAY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Fails, saying what is there, unless `path` is a regular file (after following symlinks).
/// A missing path is `NotFound`, as opening it would say.
fn require_regular(path: &Path) -> std::io::Result<()> {
    regular(std::fs::metadata(path)?.file_type())
}

/// Fails, saying what it is, unless `file_type` is a regular file's.
fn regular(file_type: std::fs::FileType) -> std::io::Result<()> {
    if file_type.is_file() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", kind_of(&file_type)),
    ))
}

/// What a file that is not a regular file is, in words.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// The bytes of the regular file at `path`.
pub fn read(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    let _reading = Reading::start();
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file at `path`.
pub fn read_to_string(path: impl AsRef<Path>) -> std::io::Result<String> {
    let _reading = Reading::start();
    let mut text = String::new();
    open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The regular file at `path`, opened for reading. Opened without waiting (a FIFO put there
/// between the look and the open would otherwise block the open), and what was opened is
/// checked again.
pub fn open(path: impl AsRef<Path>) -> std::io::Result<std::fs::File> {
    let path = path.as_ref();
    let _reading = Reading::start();
    require_regular(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    regular(file.metadata()?.file_type())?;
    Ok(file)
}

/// Why an output file the user names cannot be written, checked before any work (so a long
/// measurement is not lost at its end): a directory, or a path in a directory that does not
/// exist. `None` where it can be tried.
pub fn output_problem(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some("is a directory (hint: name a file in it)".into());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    match dir.exists() {
        true => (!dir.is_dir()).then(|| format!("{} is not a directory", dir.display())),
        false => Some(format!("its directory {} does not exist", dir.display())),
    }
}

/// Opens the output the user named at `path` as a shell's `>` does, before the work that
/// fills it (so a path that cannot be written fails first): created or truncated in place,
/// through a symlink to its target, a device or a pipe as it is. Nothing at `path` is ever
/// replaced by a new file, so a device stays a device and a symlink a symlink.
pub fn create_output(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Writes `bytes` to an output [`create_output`] opened; a write that fails (a full disk,
/// `/dev/full`) is an error.
pub fn write_output(mut file: std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.flush()
}
