//! Ctrl-C: the flag a run checks after every epoch, to stop where it can resume.

/// A flag the first Ctrl-C, SIGTERM or SIGHUP sets (training then stops after the epoch in
/// progress, with its checkpoint written); a second one exits at once, the last checkpoint
/// still intact. SIGTERM is how Slurm (preemption, requeue, time limit) and Kubernetes stop a
/// task, so a requeued task goes on from the epoch it was in, not the one before. While the
/// process is reading a user's file (a slow disk, a network mount), the first one exits at
/// once: there is nothing to save yet, and the read may never end.
pub(super) fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&flag);
    let installed = ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) || wgtrain::files::reading_input() {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing this epoch and saving (Ctrl-C or SIGTERM again to quit now)"
        );
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will stop training without a final save ({e})");
    }
    flag
}
