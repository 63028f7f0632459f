//! Per-epoch progress: a live bar on a terminal, plain lines otherwise.

use wgtrain::train::{EpochRecord, Verdict};
/// Per-epoch progress: a live bar on a terminal (epoch, losses, accuracies, samples/s, ETA),
/// one plain line per epoch when stderr is a file or pipe, nothing when quiet.
pub(super) struct EpochProgress {
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    quiet: bool,
}

/// A bar over `epochs` epochs headed `name`, when stderr is a terminal.
pub(super) fn epoch_bar(name: &str, epochs: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(epochs as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] epoch {pos}/{len} ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar
    })
}

impl EpochProgress {
    pub(super) fn new(name: &str, epochs: usize, quiet: bool) -> Self {
        let bar = if quiet { None } else { epoch_bar(name, epochs) };
        EpochProgress { bar, epochs, quiet }
    }

    pub(super) fn epoch(&self, r: &EpochRecord, v: Verdict) {
        let line = format!(
            "train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%  {:.0} samples/s{}",
            r.train_loss,
            100.0 * r.train_accuracy,
            r.val_loss,
            100.0 * r.val_accuracy,
            r.train_samples as f64 / r.seconds.max(1e-9),
            if v.improved { "  *best" } else { "" }
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.epoch as u64);
                bar.set_message(line);
            }
            None if !self.quiet => eprintln!("epoch {:>3}/{}  {line}", r.epoch, self.epochs),
            None => {}
        }
    }

    /// Clears the bar (the caller prints the run's outcome).
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
