//! The paper's numerical gradient check (its Table 3): central differences in f64 against the
//! backprop gradient of the same f64 code the CPU path trains with in f32.

use rand::RngExt;

use crate::config::GradientReduction;
use crate::cpu::dense::{self, Shape, Workspace};
use crate::cpu::layers_reference::{StepCounters, kink_pattern, loss_and_gradient_reference};
use crate::cpu::ops;
use crate::model::Network;
use crate::model::rng::{STREAM_GRADCHECK, rng_for};

/// One checked parameter: a row of the paper's Table 3.
#[derive(Debug, Clone, PartialEq)]
pub struct GradRow {
    /// e.g. `fc1.weight[17, 402]` or `conv2.bias[3]`, as PyTorch's state_dict names it.
    pub parameter: String,
    pub numerical: f64,
    pub backprop: f64,
    pub difference: f64,
    /// The stencil w ± ε moves a ReLU or max pooling across its kink (no entry of the tensor
    /// drawn avoided one): the difference measures no derivative, so the row is shown but not
    /// judged.
    pub kink: bool,
}

/// What the objective is: which samples, which penalty, which reduction.
#[derive(Debug, Clone, Copy)]
pub struct Objective<'a> {
    /// (rows, I) inputs.
    pub input: &'a [f64],
    pub labels: &'a [u8],
    pub l1: f64,
    pub l2: f64,
    pub reduction: GradientReduction,
}

/// Which entries are checked and how: `per_tensor` entries of every weight tensor and one of
/// every bias, drawn from `seed`'s gradcheck stream, each differenced with step `epsilon`.
#[derive(Debug, Clone, Copy)]
pub struct Stencil {
    pub per_tensor: usize,
    pub epsilon: f64,
    pub seed: u64,
}

impl Objective<'_> {
    fn rows(&self) -> usize {
        self.labels.len()
    }

    fn scale(&self) -> f64 {
        match self.reduction {
            GradientReduction::Mean => 1.0 / self.rows() as f64,
            GradientReduction::Sum => 1.0,
        }
    }

    /// Loss (mean or summed cross-entropy) plus penalty of `net` at `params`, with the
    /// dropout masks of `counters`; with `grad`, writes its backprop gradient there. The
    /// backprop is the one the CPU engine trains with: the fused dense passes for a network
    /// of dense layers with one hidden activation, the reference layers for any other.
    pub fn loss_and_gradient(
        &self,
        net: &Network,
        params: &[f64],
        counters: Option<StepCounters>,
        mut grad: Option<&mut [f64]>,
    ) -> f64 {
        let (input, labels, rows, scale) = (self.input, self.labels, self.rows(), self.scale());
        let (loss_sum, _) = match net.dense_stack() {
            Some((_, activation)) => {
                let layers = net.layer_views();
                let shape = Shape {
                    layers: &layers,
                    activation,
                    threads: 1,
                };
                let mut ws = Workspace::new(&layers, rows.max(1));
                match grad.as_deref_mut() {
                    Some(grad) => dense::loss_and_gradient_scaled(
                        shape, params, input, labels, rows, scale, grad, &mut ws,
                    ),
                    None => dense::evaluate(shape, params, input, labels, &mut ws),
                }
            }
            None => loss_and_gradient_reference(
                net,
                params,
                input,
                labels,
                rows,
                scale,
                counters,
                grad.as_deref_mut(),
            ),
        };
        let views = net.layer_views();
        if let Some(grad) = grad {
            for view in &views {
                for i in view.weight..view.bias {
                    grad[i] += ops::penalty_grad(params[i], self.l1, self.l2);
                }
            }
        }
        loss_sum * scale + ops::penalty(params, &views, self.l1, self.l2)
    }
}

/// The paper's Table 3 for `net` at `params`: the entries `stencil` draws, each a central
/// difference of `objective` (cross-entropy plus penalty) against its backprop gradient,
/// with the dropout masks of `counters` held fixed (so dropout layers are checked too).
///
/// Two kinks would make a finite difference measure no derivative, so they are kept out of
/// the stencil: an entry whose w ± ε moves any ReLU or max pooling across its kink
/// ([`kink_pattern`]) is drawn again (up to [`KINK_REDRAWS`] times; then the last one drawn
/// is checked and marked), and a drawn weight within the stencil of L1's kink at 0 (all of
/// them under the paper's 0.01·U[0,1) init) is moved to ±2ε before the differences, its
/// backprop taken at the moved point, so the check stays fair; the ReLU and pooling kinks are
/// then marked again at the moved point.
pub fn gradient_check(
    net: &Network,
    params: &[f64],
    objective: &Objective<'_>,
    counters: Option<StepCounters>,
    stencil: Stencil,
) -> Vec<GradRow> {
    let epsilon = stencil.epsilon;
    let mut picks = pick_smooth_entries(net, params, objective, counters, stencil);
    let mut values = params.to_vec();
    if objective.l1 > 0.0 {
        let views = net.layer_views();
        let is_weight = |i: usize| views.iter().any(|v| (v.weight..v.bias).contains(&i));
        let mut moved = false;
        for &(index, _, _) in &picks {
            if is_weight(index) && values[index].abs() <= 1.5 * epsilon {
                values[index] = 2.0 * epsilon * values[index].signum();
                moved = true;
            }
        }
        // The entries were drawn clear of ReLU and pooling kinks at the unmoved point; the
        // check is taken at the moved one, so that is where a stencil's kinks are marked.
        if moved {
            let probe = KinkProbe::new(net, &values, objective, counters);
            for (index, _, kink) in &mut picks {
                *kink = !probe.smooth(*index, epsilon);
            }
        }
    }
    let mut backprop = vec![0.0; params.len()];
    objective.loss_and_gradient(net, &values, counters, Some(&mut backprop));
    picks
        .into_iter()
        .map(|(index, parameter, kink)| {
            let at = values[index];
            values[index] = at + epsilon;
            let plus = objective.loss_and_gradient(net, &values, counters, None);
            values[index] = at - epsilon;
            let minus = objective.loss_and_gradient(net, &values, counters, None);
            values[index] = at;
            let numerical = (plus - minus) / (2.0 * epsilon);
            GradRow {
                parameter,
                numerical,
                backprop: backprop[index],
                difference: (numerical - backprop[index]).abs(),
                kink,
            }
        })
        .collect()
}

/// The entries `stencil` draws from every tensor of `net`, each drawn again (up to
/// [`KINK_REDRAWS`] times) while its stencil w ± ε moves a ReLU or max pooling across its
/// kink: (index, name, whether it still does).
fn pick_smooth_entries(
    net: &Network,
    params: &[f64],
    objective: &Objective<'_>,
    counters: Option<StepCounters>,
    stencil: Stencil,
) -> Vec<(usize, String, bool)> {
    let epsilon = stencil.epsilon;
    let mut rng = rng_for(stencil.seed, STREAM_GRADCHECK);
    let probe = KinkProbe::new(net, params, objective, counters);
    let smooth_at = |index: usize| probe.smooth(index, epsilon);
    let mut picks = Vec::new();
    for tensor in net.tensors() {
        let count = if tensor.dims.len() == 1 {
            1
        } else {
            stencil.per_tensor
        };
        for _ in 0..count {
            let mut i = rng.random_range(0..tensor.len());
            let mut kink = !smooth_at(tensor.offset + i);
            for _ in 0..KINK_REDRAWS {
                if !kink {
                    break;
                }
                i = rng.random_range(0..tensor.len());
                kink = !smooth_at(tensor.offset + i);
            }
            picks.push((tensor.offset + i, tensor.element_name(i), kink));
        }
    }
    picks
}

/// Which side of its kink every ReLU and max pooling of `net` takes at `params`
/// ([`kink_pattern`], taken once), to test stencils around it.
struct KinkProbe<'a> {
    net: &'a Network,
    params: &'a [f64],
    objective: &'a Objective<'a>,
    counters: Option<StepCounters>,
    at: u64,
}

impl<'a> KinkProbe<'a> {
    fn new(
        net: &'a Network,
        params: &'a [f64],
        objective: &'a Objective<'a>,
        counters: Option<StepCounters>,
    ) -> Self {
        let mut probe = KinkProbe {
            net,
            params,
            objective,
            counters,
            at: 0,
        };
        probe.at = probe.pattern(params);
        probe
    }

    fn pattern(&self, p: &[f64]) -> u64 {
        let (input, rows) = (self.objective.input, self.objective.rows());
        kink_pattern(self.net, p, input, rows, self.counters)
    }

    /// Whether the stencil `params[index]` ± `epsilon` leaves every ReLU and max pooling on
    /// the side of its kink it takes at `params`.
    fn smooth(&self, index: usize, epsilon: f64) -> bool {
        let mut p = self.params.to_vec();
        p[index] = self.params[index] + epsilon;
        let plus = self.pattern(&p);
        p[index] = self.params[index] - epsilon;
        self.at == plus && self.at == self.pattern(&p)
    }
}

/// Entries drawn again, at most, when a stencil straddles a ReLU or pooling kink.
pub const KINK_REDRAWS: usize = 8;

/// The finite-difference step `gradcheck` takes unless told: the paper's 1e-2 for its MLPs;
/// 1e-4 for a network of layers, where one convolution weight moves hundreds of
/// pre-activations and a 1e-2 stencil crosses ReLU's and max pooling's kinks (measured: a
/// third of a small CNN's convolution entries then differ by ~1e-3, none at 1e-4).
pub fn default_epsilon(config: &crate::config::TrainConfig) -> f64 {
    match config.network {
        Some(_) => 1e-4,
        None => 1e-2,
    }
}

/// The widest finite-difference step [`check_config`] takes: its pass mark is ε², so a step of
/// 1 or more passes any gradient at all (ε = 1e10 "passed" with differences ≤ 1e20), and past
/// 0.1 the mark (1e-2) no longer tells a right gradient from a wrong one.
pub const MAX_EPSILON: f64 = 0.1;

/// What [`check_config`] found: the table and the verdict's terms.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    pub rows: Vec<GradRow>,
    /// Training images the objective averaged over.
    pub samples: usize,
    pub epsilon: f64,
}

impl GradcheckReport {
    /// The pass mark: every |difference| ≤ ε² (the paper's).
    pub fn tolerance(&self) -> f64 {
        self.epsilon * self.epsilon
    }

    /// Judged rows (those away from a kink) whose difference exceeds the tolerance (or is
    /// NaN).
    pub fn failures(&self) -> usize {
        let tolerance = self.tolerance();
        self.rows
            .iter()
            .filter(|r| !r.kink && (r.difference.is_nan() || r.difference > tolerance))
            .count()
    }

    /// The rows as a Markdown table.
    pub fn table(&self) -> String {
        let mut table = String::from(
            "| parameter | numerical | backprop | abs difference |\n|---|---|---|---|\n",
        );
        for row in &self.rows {
            let kink = if row.kink { " (kink within ±ε)" } else { "" };
            table.push_str(&format!(
                "| {}{kink} | {:.8e} | {:.8e} | {:.3e} |\n",
                row.parameter, row.numerical, row.backprop, row.difference
            ));
        }
        table
    }

    /// The verdict: `Ok` with the passing line, or `Err` with why the check failed or could
    /// judge nothing.
    pub fn verdict(&self) -> Result<String, String> {
        let (failed, kinks, tolerance) = (self.failures(), self.kinks(), self.tolerance());
        let judged = self.rows.len() - kinks;
        let unjudged = match kinks {
            0 => String::new(),
            k => format!(" ({k} beside a ReLU or pooling kink, not judged)"),
        };
        if judged == 0 {
            return Err("gradient check inconclusive: every entry drawn lies within ±ε of a ReLU or pooling kink (hint: fewer --samples, or a smaller --epsilon)".into());
        }
        if failed > 0 {
            return Err(format!(
                "gradient check failed: {failed} of {judged} differences exceed ε² = {tolerance:e}{unjudged}"
            ));
        }
        Ok(format!(
            "passed: all {judged} differences ≤ {tolerance:e}{unjudged}"
        ))
    }

    /// Rows whose stencil straddles a kink, shown but not judged.
    pub fn kinks(&self) -> usize {
        self.rows.iter().filter(|r| r.kink).count()
    }
}

/// The gradient check of `config`'s network at its initial parameters, on the first
/// `samples` training images of `data_dir`, `per_layer` weights (and a bias) per layer, with
/// finite-difference step `epsilon`. Refuses, before reading any data, no samples, a step
/// outside (0, [`MAX_EPSILON`]], and a network whose f32 and f64 parameters and f64 gradient
/// do not fit in memory.
pub fn check_config(
    config: &crate::config::TrainConfig,
    data_dir: &std::path::Path,
    samples: usize,
    per_layer: usize,
    epsilon: f64,
) -> crate::Result<GradcheckReport> {
    use crate::data;
    use crate::model::Params;
    if samples == 0 {
        return Err(crate::Error::Usage(
            "--samples must be at least 1".to_string(),
        ));
    }
    if !(epsilon > 0.0 && epsilon <= MAX_EPSILON) {
        return Err(crate::Error::Usage(format!(
            "--epsilon {epsilon:e}: the step must be above 0 and at most {MAX_EPSILON} (the check passes when every difference is ≤ ε², which a wider step makes pass anything)"
        )));
    }
    let parameters = crate::model::param_count_u128(&config.layers);
    let needed = parameters.saturating_mul(4 + 8 + 8);
    if let Some(free) = crate::host::available_memory_bytes()
        && needed > u128::from(free)
        && config.network.is_none()
    {
        return Err(crate::Error::Usage(format!(
            "layers {:?} ({parameters} parameters) need at least {:.1} GB of memory for the gradient check, and {:.1} GB is available (hint: narrower layers)",
            config.layers,
            needed as f64 / 1e9,
            free as f64 / 1e9
        )));
    }
    let raw = data::read_pair(data_dir, data::TRAIN_IMAGES, data::TRAIN_LABELS)?;
    let classes = raw.checked_classes()?;
    // Only the model's shapes matter here; the batch size plays no part in the check.
    config.check_against_data(raw.features(), classes, usize::MAX)?;
    let model = config.model_for((raw.rows, raw.cols), classes)?;
    let rows = samples.min(raw.count);
    let input: Vec<f64> = data::zscore_images(&raw.pixels[..rows * raw.features()], raw.features())
        .iter()
        .map(|&v| v as f64)
        .collect();
    let hyper = config.hyper(); // the penalty strengths training actually applies
    let objective = Objective {
        input: &input,
        labels: &raw.labels[..rows],
        l1: hyper.l1,
        l2: hyper.l2,
        reduction: config.gradient,
    };
    let params = Params::init_model(model, config.init, config.seed);
    let values: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    // The dropout masks of the run's first step.
    let counters = StepCounters {
        seed: config.seed,
        epoch: 0,
        step: 1,
    };
    let stencil = Stencil {
        per_tensor: per_layer,
        epsilon,
        seed: config.seed,
    };
    Ok(GradcheckReport {
        rows: gradient_check(&params.model, &values, &objective, Some(counters), stencil),
        samples: rows,
        epsilon,
    })
}
