//! The paper's numerical gradient check (its Table 3): central differences in f64 against the
//! backprop gradient of the same f64 code the CPU path trains with in f32.

use rand::RngExt;

use crate::config::GradientReduction;
use crate::cpu::dense::{self, Shape, Workspace};
use crate::cpu::ops;
use crate::model::rng::{STREAM_GRADCHECK, rng_for};
use crate::model::{LayerView, Params};

/// One checked parameter: a row of the paper's Table 3.
#[derive(Debug, Clone, PartialEq)]
pub struct GradRow {
    /// e.g. `fc1.weight[17, 402]` or `fc2.bias[3]`.
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

    /// Loss (mean or summed cross-entropy) plus penalty.
    pub fn value(&self, shape: Shape<'_>, params: &[f64], ws: &mut Workspace<f64>) -> f64 {
        let (loss_sum, _) = dense::evaluate(shape, params, self.input, self.labels, ws);
        loss_sum * self.scale() + ops::penalty(params, shape.layers, self.l1, self.l2)
    }

    /// Backprop gradient of [`Objective::value`].
    pub fn gradient(&self, shape: Shape<'_>, params: &[f64], ws: &mut Workspace<f64>) -> Vec<f64> {
        let mut grad = vec![0.0; params.len()];
        dense::loss_and_gradient(
            shape,
            params,
            self.input,
            self.labels,
            self.rows(),
            self.reduction,
            &mut grad,
            ws,
        );
        for view in shape.layers {
            for i in view.weight..view.bias {
                grad[i] += ops::penalty_grad(params[i], self.l1, self.l2);
            }
        }
        grad
    }
}

/// Picks `per_layer` weights and one bias in every layer, seeded.
fn pick_parameters(layers: &[LayerView], per_layer: usize, seed: u64) -> Vec<(usize, String)> {
    let mut rng = rng_for(seed, STREAM_GRADCHECK);
    let mut picks = Vec::new();
    for (l, view) in layers.iter().enumerate().rev() {
        let b = rng.random_range(0..view.fan_out);
        picks.push((view.bias + b, format!("fc{}.bias[{b}]", l + 1)));
        for _ in 0..per_layer {
            let (o, i) = (
                rng.random_range(0..view.fan_out),
                rng.random_range(0..view.fan_in),
            );
            picks.push((
                view.weight + o * view.fan_in + i,
                format!("fc{}.weight[{o}, {i}]", l + 1),
            ));
        }
    }
    picks
}

/// Checks `per_layer` weights and a bias of every layer of `params` with central differences of
/// step `epsilon` on the fused dense passes; a network of other layers goes to
/// [`gradient_check_network`], with the dropout masks of the run's first step.
pub fn gradient_check(
    params: &Params,
    objective: &Objective<'_>,
    per_layer: usize,
    epsilon: f64,
    seed: u64,
) -> Vec<GradRow> {
    let activation = match params.model.dense_stack() {
        Some((_, activation)) => activation,
        None => {
            let net = &params.model;
            let values: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
            let counters = crate::cpu::layers::StepCounters {
                seed,
                epoch: 0,
                step: 1,
            };
            let stencil = (per_layer, epsilon, seed);
            return gradient_check_network(net, &values, objective, Some(counters), stencil);
        }
    };
    let layers = params.model.layer_views();
    let shape = Shape {
        layers: &layers,
        activation,
        threads: 1,
    };
    let mut values: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let picks = pick_parameters(&layers, per_layer, seed);
    if objective.l1 > 0.0 {
        // |w| has a kink at 0: a stencil w ± ε that straddles it measures λ1·w/ε, not λ1·sign(w).
        // Checked weights that close to 0 (all of them under the paper's 0.01·U[0,1) init) are
        // moved to ±2ε first; backprop below is taken at the moved point, so the check is fair.
        let is_weight = |i: usize| layers.iter().any(|v| (v.weight..v.bias).contains(&i));
        for &(index, _) in &picks {
            if is_weight(index) && values[index].abs() <= 1.5 * epsilon {
                values[index] = if values[index] < 0.0 {
                    -2.0 * epsilon
                } else {
                    2.0 * epsilon
                };
            }
        }
    }
    let mut ws = Workspace::new(&layers, objective.rows().max(1));
    let backprop = objective.gradient(shape, &values, &mut ws);
    picks
        .into_iter()
        .map(|(index, parameter)| {
            let original = values[index];
            values[index] = original + epsilon;
            let plus = objective.value(shape, &values, &mut ws);
            values[index] = original - epsilon;
            let minus = objective.value(shape, &values, &mut ws);
            values[index] = original;
            let numerical = (plus - minus) / (2.0 * epsilon);
            GradRow {
                parameter,
                numerical,
                backprop: backprop[index],
                difference: (numerical - backprop[index]).abs(),
                kink: false,
            }
        })
        .collect()
}

/// The paper's Table 3 for a network of layers: `per_tensor` entries of every weight
/// tensor and one of every bias, seeded, each a central difference of step `epsilon` of
/// `objective` (cross-entropy plus penalty) against the reference backprop of
/// `cpu::layers`, with the dropout masks of `counters` held fixed (so dropout layers are
/// checked too). An entry whose stencil w ± ε moves any ReLU or max pooling across its kink
/// ([`crate::cpu::layers::kink_pattern`]) is not differentiable there in the sense a finite
/// difference measures, so another entry of the tensor is drawn instead (up to
/// [`KINK_REDRAWS`] times; then the last one drawn is checked anyway).
pub fn gradient_check_network(
    net: &crate::model::Network,
    params: &[f64],
    objective: &Objective<'_>,
    counters: Option<crate::cpu::layers::StepCounters>,
    (per_tensor, epsilon, seed): (usize, f64, u64),
) -> Vec<GradRow> {
    use crate::cpu::layers::loss_and_gradient_reference;
    let (input, labels) = (objective.input, objective.labels);
    let (rows, scale) = (objective.rows(), objective.scale());
    let views = net.layer_views();
    let penalty = |p: &[f64]| ops::penalty(p, &views, objective.l1, objective.l2);
    let loss = |p: &[f64]| {
        let (sum, _) =
            loss_and_gradient_reference(net, p, input, labels, rows, scale, counters, None);
        sum * scale + penalty(p)
    };
    let picks = pick_smooth_entries(
        net,
        params,
        objective,
        counters,
        (per_tensor, epsilon, seed),
    );
    let mut values = params.to_vec();
    if objective.l1 > 0.0 {
        // As in `gradient_check`: weights within the stencil of L1's kink move to ±2ε first.
        let is_weight = |i: usize| views.iter().any(|v| (v.weight..v.bias).contains(&i));
        for &(index, _, _) in &picks {
            if is_weight(index) && values[index].abs() <= 1.5 * epsilon {
                values[index] = 2.0 * epsilon * values[index].signum();
            }
        }
    }
    let mut backprop = vec![0.0; params.len()];
    loss_and_gradient_reference(
        net,
        &values,
        input,
        labels,
        rows,
        scale,
        counters,
        Some(&mut backprop),
    );
    for view in &views {
        for i in view.weight..view.bias {
            backprop[i] += ops::penalty_grad(values[i], objective.l1, objective.l2);
        }
    }
    let mut rows_out = Vec::new();
    for (index, parameter, kink) in picks {
        {
            let original = values[index];
            values[index] = original + epsilon;
            let plus = loss(&values);
            values[index] = original - epsilon;
            let minus = loss(&values);
            values[index] = original;
            let numerical = (plus - minus) / (2.0 * epsilon);
            rows_out.push(GradRow {
                parameter,
                numerical,
                backprop: backprop[index],
                difference: (numerical - backprop[index]).abs(),
                kink,
            });
        }
    }
    rows_out
}

/// `per_tensor` entries of every weight tensor of `net` and one of every bias, seeded, each
/// drawn again (up to [`KINK_REDRAWS`] times) while its stencil w ± ε moves a ReLU or max
/// pooling across its kink: (index, name, whether it still does).
fn pick_smooth_entries(
    net: &crate::model::Network,
    params: &[f64],
    objective: &Objective<'_>,
    counters: Option<crate::cpu::layers::StepCounters>,
    (per_tensor, epsilon, seed): (usize, f64, u64),
) -> Vec<(usize, String, bool)> {
    let (input, rows) = (objective.input, objective.rows());
    let mut rng = rng_for(seed, STREAM_GRADCHECK);
    let pattern = |p: &[f64]| crate::cpu::layers::kink_pattern(net, p, input, rows, counters);
    let smooth_at = |index: usize| {
        let mut p = params.to_vec();
        let at = pattern(&p);
        p[index] = params[index] + epsilon;
        let plus = pattern(&p);
        p[index] = params[index] - epsilon;
        at == plus && at == pattern(&p)
    };
    let mut picks = Vec::new();
    for tensor in net.tensors() {
        let count = if tensor.dims.len() == 1 {
            1
        } else {
            per_tensor
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
    Ok(GradcheckReport {
        rows: gradient_check(&params, &objective, per_layer, epsilon, config.seed),
        samples: rows,
        epsilon,
    })
}
