//! The `wgtrain` binary: parse, run, print `error: …` and exit non-zero on failure.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    restore_default_sigpipe();
    skip_mesa_device_select_layer();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`wgtrain … | head`) is not a failure (on Unix SIGPIPE ends the
            // process before a write can fail; elsewhere a `writeln!` returns this error).
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", one_line(&e));
            // 130 = 128 + SIGINT, what shells report for a run stopped with Ctrl-C.
            if e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<wgtrain::Error>(),
                    Some(
                        wgtrain::Error::Interrupted { .. }
                            | wgtrain::Error::SweepInterrupted { .. }
                    )
                )
            }) {
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, like anyhow's `{:#}`, but skipping a cause whose text
/// the line already ends with (our error types print their cause in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Lets a closed pipe end the process quietly, as it ends `cat` or `grep`: `wgtrain predict
/// IMAGES | head` stops when `head` has its lines. Rust ignores SIGPIPE by default, which turns
/// the closed pipe into a panic inside `println!`. Checkpoints and run files are written
/// atomically, so a process ended this way leaves every file whole.
#[cfg(unix)]
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE and no handler of ours depends on it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}

/// Turns off Mesa's device-select Vulkan layer (`NODEVICE_SELECT=1`) unless the user set it or
/// asked the layer for a GPU (`DRI_PRIME`). The layer sorts GPUs by the display server it finds,
/// so `wgtrain devices`' order would depend on the session, and without `XDG_RUNTIME_DIR` its
/// probe prints "error: XDG_RUNTIME_DIR is invalid or not set" on every command, which reads
/// like an error of ours. wgtrain ranks adapters itself (`GpuContext::open`).
fn skip_mesa_device_select_layer() {
    if std::env::var_os("NODEVICE_SELECT").is_none() && std::env::var_os("DRI_PRIME").is_none() {
        // SAFETY: called first thing in main, before any thread exists that could read the
        // environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
