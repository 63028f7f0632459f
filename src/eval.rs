//! `eval`: a saved model's test loss and accuracy, its confusion matrix (true × predicted
//! classes), and the confusion picture beside the model file. Prints nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::load_model;
use crate::data::{self, Dataset, SplitName};
use crate::device::EngineKind;
use crate::engine::EvalStats;
use crate::error::{Error, Result};

/// Rows per pass when the CPU engine's layers path evaluates (the fused dense path sizes its
/// own).
const EVAL_ROWS: usize = 256;

/// What [`evaluate_model`] found.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub stats: EvalStats,
    /// `counts[true class][predicted class]`.
    pub counts: Vec<Vec<usize>>,
    /// Class names, in label order.
    pub names: Vec<String>,
    /// Where the confusion picture was drawn (`confusion.png`, beside the model), or why it
    /// was not.
    pub confusion_png: std::result::Result<PathBuf, String>,
}

impl EvalReport {
    /// The test figures of the model at `model` as one JSON line.
    pub fn json(&self, model: &std::path::Path) -> serde_json::Value {
        let stats = &self.stats;
        serde_json::json!({"model": model, "test_accuracy": stats.accuracy, "test_loss": stats.loss, "samples": stats.samples})
    }

    /// What `wgtrain eval` prints for the model at `model`: the test figures, each class's
    /// accuracy, and where the confusion picture went.
    pub fn text(&self, model: &std::path::Path) -> String {
        let stats = &self.stats;
        let mut text = format!(
            "{}: test accuracy {:.2}%, test loss {:.4} over {} images\n",
            model.display(),
            100.0 * stats.accuracy,
            stats.loss,
            stats.samples
        );
        for (c, name) in self.names.iter().enumerate() {
            let (accuracy, total) = self.class_accuracy(c);
            text.push_str(&format!(
                "  {name:<12} {:6.2}% of {}\n",
                100.0 * accuracy,
                total.max(1)
            ));
        }
        match &self.confusion_png {
            Ok(path) => text.push_str(&format!("confusion matrix: {}\n", path.display())),
            Err(why) => text.push_str(&format!("confusion matrix: {why}\n")),
        }
        text
    }

    /// Fraction of class `c`'s test images predicted as `c`, and how many there are.
    pub fn class_accuracy(&self, c: usize) -> (f64, usize) {
        let total = self.counts[c].iter().sum::<usize>();
        (self.counts[c][c] as f64 / total.max(1) as f64, total)
    }
}

/// The confusion matrix of `params` on the images `pixels` (raw bytes, as in the IDX file)
/// labelled `labels`, on the CPU: `counts[true class][predicted class]`.
pub fn confusion_counts(
    params: &crate::model::Params,
    pixels: &[u8],
    labels: &[u8],
) -> Vec<Vec<usize>> {
    let classes = params.model.classes();
    let probabilities = crate::predict::probabilities(params, pixels);
    let mut counts = vec![vec![0usize; classes]; classes];
    for (p, &label) in probabilities.iter().zip(labels) {
        let predicted = p
            .iter()
            .enumerate()
            .fold(0, |best, (c, &v)| if v > p[best] { c } else { best });
        counts[label as usize][predicted] += 1;
    }
    counts
}

/// Evaluates the model file `model` on the test split of `data_dir` on the CPU (`threads`, 0
/// for one per core), and draws the confusion matrix beside the model.
pub fn evaluate_model(model: &Path, data_dir: &Path, threads: usize) -> Result<EvalReport> {
    let params = load_model(model)?;
    let (test, raw) = data::load_test_split(data_dir)?;
    let classes = params.model.classes();
    crate::predict::check_images(&params.model, &[raw.rows, raw.cols]).map_err(|why| {
        Error::Usage(format!(
            "model {} takes {why}, not the images in {}",
            model.display(),
            raw.images_path.display(),
        ))
    })?;
    raw.check_labels(classes, "the model")?;
    let mut engine = EngineKind::Cpu { threads }.build(&params, EVAL_ROWS)?;
    let dataset = Dataset {
        features: raw.features(),
        image_size: (raw.rows, raw.cols),
        classes,
        train: Default::default(),
        val: Default::default(),
        test,
        identity: Default::default(),
    };
    engine.upload(Arc::new(dataset))?;
    let stats = crate::engine::wait(engine.evaluate(SplitName::Test))?;
    let counts = confusion_counts(&params, &raw.pixels, &raw.labels);
    let names = crate::predict::class_names(classes, None)?;
    let plot_dir = model
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Beside a model that is not in a run directory (one whose epochs are recorded: a model
    // copied elsewhere keeps its name), a confusion picture already there may be the user's
    // own: it is left as it is.
    let confusion_png = plot_dir.join("confusion.png");
    let pictures = [confusion_png.clone(), plot_dir.join("confusion.svg")];
    let confusion_png = if crate::rundir::RunDir::new(plot_dir).has_metrics()
        || !pictures.iter().any(|p| p.exists())
    {
        #[cfg(not(target_arch = "wasm32"))]
        crate::plot::plot_confusion(
            plot_dir,
            &counts,
            &names,
            &format!(
                "Confusion matrix, test set ({:.2}% correct)",
                100.0 * stats.accuracy
            ),
        )?;
        Ok(confusion_png)
    } else {
        Err(format!(
            "not drawn: {} is not a run directory, and its confusion picture may be yours",
            plot_dir.display()
        ))
    };
    Ok(EvalReport {
        stats,
        counts,
        names,
        confusion_png,
    })
}
