//! Whole training epochs: the GPU engine against the CPU engine, and packed models against
//! each trained alone.

use super::rig::*;

/// A small random dataset for the engine check.
fn random_dataset(features: usize, classes: usize, rows: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Training and validation images are rows of one source, as when split from a file.
    let split = |n: usize, first: usize, rng: &mut ChaCha8Rng| {
        let pixels: Vec<u8> = (0..n * features).map(|_| rng.random::<u8>()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
        Split::contiguous(pixels, labels, first)
    };
    let (train, val, test) = (
        split(rows, 0, &mut rng),
        split(rows / 3 + 1, rows, &mut rng),
        split(rows / 4 + 1, 0, &mut rng),
    );
    Dataset {
        features,
        image_size: (1, features),
        classes,
        train,
        val,
        test,
        identity: Default::default(),
    }
}

/// One epoch of a network of `widths` (37 inputs) on the GPU engine against the CPU engine,
/// same data, init and order. With more than 16 classes the GPU runs softmax_xent as a
/// dispatch of its own; with one layer, gather_batch.
/// Awaited: a native caller waits on it, a page awaits it.
pub async fn check_epoch(
    ctx: &GpuContext,
    activation: Activation,
    momentum: bool,
    l1: f64,
    l2: f64,
    optimizer: Optimizer,
    widths: &[usize],
) -> Result<EpochCheck, GpuError> {
    let (features, classes) = (37, widths.last().copied().unwrap_or(0));
    if widths.first() != Some(&features) {
        return Err(GpuError::Device {
            what: "engine check".into(),
            message: format!("widths {widths:?} must start at {features} inputs"),
        });
    }
    let data = Arc::new(random_dataset(features, classes, 129, 7));
    let config = TrainConfig {
        layers: widths.to_vec(),
        activation,
        learning_rate: 0.05,
        batch_size: 16,
        momentum,
        l1,
        l2,
        optimizer,
        gradient: GradientReduction::Mean,
        init: Init::Xavier,
        ..TrainConfig::default()
    };
    let device_error = |message: String| GpuError::Device {
        what: "engine check".into(),
        message,
    };
    let params = Params::init(widths, activation, config.init, 3).map_err(device_error)?;
    let err = |e: crate::engine::EngineError| device_error(e.to_string());
    let hyper = config.hyper();
    let order = epoch_order(1, 1, data.train.len);
    let mut cpu = CpuEngine::new(&params, 1, config.batch_size).map_err(err)?;
    let mut gpu = GpuEngine::new(ctx.clone(), &params, config.batch_size)?;
    cpu.upload(Arc::clone(&data)).map_err(err)?;
    gpu.upload(Arc::clone(&data)).map_err(err)?;
    let c = cpu.train_epoch(&order, &hyper).await.map_err(err)?;
    let g = Engine::train_epoch(&mut gpu, &order, &hyper)
        .await
        .map_err(err)?;
    let (pc, pg) = (
        cpu.params().await.map_err(err)?,
        Engine::params(&gpu).await.map_err(err)?,
    );
    Ok(EpochCheck::between((&c, &pc.values), (&g, &pg.values)))
}

impl EpochCheck {
    /// How far the GPU's epoch `g` and parameters after it are from the CPU's `c`.
    fn between(
        (c, pc): (&crate::engine::EpochStats, &[f32]),
        (g, pg): (&crate::engine::EpochStats, &[f32]),
    ) -> Self {
        let max_param = pc
            .iter()
            .zip(pg)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let loss_rel = (c.loss_sum - g.loss_sum).abs() / c.loss_sum.abs().max(1e-12);
        let (cv, gv) = (c.val.unwrap_or_default(), g.val.unwrap_or_default());
        let val_rel = (cv.loss - gv.loss).abs() / cv.loss.abs().max(1e-12);
        // 9 steps of f32 training from identical starts: differences are rounding, amplified
        // a little by each step; an indexing error is O(1).
        let ratio = (max_param / 1e-4).max(loss_rel / 1e-4).max(val_rel / 1e-4);
        let norm = pc.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
        EpochCheck {
            ratio,
            max_rel_error: (max_param / norm.max(1e-12)).max(loss_rel).max(val_rel),
            detail: format!(
                "max |Δparam| {max_param:.2e}, train loss rel {loss_rel:.2e}, val loss rel {val_rel:.2e}"
            ),
        }
    }
}

/// One engine-versus-engine epoch's outcome.
#[derive(Debug, Clone)]
pub struct EpochCheck {
    /// Worst error as a fraction of its tolerance (≤ 1 passes).
    pub ratio: f64,
    /// Largest of the parameters' ‖Δ‖∞/‖p‖∞ and the losses' relative differences.
    pub max_rel_error: f64,
    pub detail: String,
}

pub(super) async fn check_epochs(ctx: &GpuContext) -> CheckRow {
    let mut row = CheckRow {
        check: "training epoch vs CPU engine".into(),
        cases: 0,
        worst: 0.0,
        max_rel_error: 0.0,
        detail: String::new(),
        error: None,
    };
    for activation in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        // 20 classes: wider than one matmul tile, so the softmax is a dispatch of its own; one
        // layer: the gather is too; ten layers: two matmul_update dispatches. Two cases also
        // run with the adapter's tuning rearranged (gather fusion flipped, another matmul k
        // step, the other form of its tile loop), so both arrangements are checked on every
        // adapter.
        let mut flipped = ctx.clone();
        flipped.tuning.fuse_gather = !ctx.tuning.fuse_gather;
        flipped.tuning.tile_k = if ctx.tuning.tile_k == 64 { 16 } else { 64 };
        flipped.tuning.prefetch = !ctx.tuning.prefetch;
        for (momentum, l1, l2, opt, widths, ctx) in [
            (false, 0.0, 0.0, Optimizer::Sgd, &[37, 17, 5][..], ctx),
            (false, 0.0, 0.0, Optimizer::Sgd, &[37, 17, 5], &flipped),
            (true, 1e-3, 1e-3, Optimizer::Sgd, &[37, 17, 20], ctx),
            (false, 0.0, 1e-3, Optimizer::Adam, &[37, 17, 5], ctx),
            (false, 0.0, 1e-3, Optimizer::Adam, &[37, 17, 5], &flipped),
            (true, 0.0, 1e-3, Optimizer::Sgd, &[37, 5], ctx),
            // Ten layers: more than one matmul_update dispatch covers.
            (
                true,
                0.0,
                1e-3,
                Optimizer::Sgd,
                &[37, 9, 8, 7, 6, 5, 6, 7, 8, 9, 5],
                ctx,
            ),
        ] {
            row.cases += 1;
            match check_epoch(ctx, activation, momentum, l1, l2, opt, widths).await {
                Ok(c) => row.note(c.ratio, c.max_rel_error, || {
                    format!(
                        "{} momentum={momentum} l1={l1} l2={l2} {opt:?} {widths:?} {:?}: {}",
                        activation.name(),
                        ctx.tuning,
                        c.detail
                    )
                }),
                Err(e) => row.error = Some(e.to_string()),
            }
        }
    }
    row
}

/// One epoch of a network of every layer kind (a padded convolution, pooling, a strided
/// convolution, dropout, dense layers; tanh, ReLU, sigmoid) on the GPU's layer-by-layer
/// schedule against the CPU's, same data, init, order and dropout masks: SGD with momentum
/// and both penalties, and Adam.
pub(super) async fn check_network_epoch(ctx: &GpuContext) -> CheckRow {
    let mut row = CheckRow {
        check: "network epoch vs CPU engine".into(),
        cases: 0,
        worst: 0.0,
        max_rel_error: 0.0,
        detail: String::new(),
        error: None,
    };
    let (net, data) = match check_network() {
        Ok(v) => v,
        Err(e) => {
            row.error = Some(e);
            return row;
        }
    };
    for (momentum, l1, l2, optimizer) in [
        (true, 1e-3, 1e-3, Optimizer::Sgd),
        (false, 0.0, 1e-3, Optimizer::Adam),
    ] {
        row.cases += 1;
        let config = TrainConfig {
            learning_rate: 0.05,
            batch_size: 16,
            momentum,
            l1,
            l2,
            optimizer,
            seed: 5,
            ..TrainConfig::default()
        };
        let params = Params::init_model(Arc::clone(&net), Init::Xavier, 3);
        let hyper = config.hyper();
        let order = epoch_order(1, 1, data.train.len);
        let run = async {
            let e = |e: crate::engine::EngineError| e.to_string();
            let mut cpu = CpuEngine::new(&params, 1, 16).map_err(e)?;
            let mut gpu = GpuEngine::new(ctx.clone(), &params, 16).map_err(|e| e.to_string())?;
            cpu.upload(Arc::clone(&data)).map_err(e)?;
            gpu.upload(Arc::clone(&data)).map_err(e)?;
            let c = cpu.train_epoch(&order, &hyper).await.map_err(e)?;
            let g = Engine::train_epoch(&mut gpu, &order, &hyper)
                .await
                .map_err(e)?;
            let (pc, pg) = (
                cpu.params().await.map_err(e)?,
                Engine::params(&gpu).await.map_err(e)?,
            );
            Ok::<_, String>(EpochCheck::between((&c, &pc.values), (&g, &pg.values)))
        };
        match run.await {
            Ok(c) => row.note(c.ratio, c.max_rel_error, || {
                format!(
                    "{optimizer:?} momentum={momentum} l1={l1} l2={l2}: {}",
                    c.detail
                )
            }),
            Err(e) => row.error = Some(e),
        }
    }
    row
}

/// The network the network checks train (a padded convolution, pooling, a strided
/// convolution, dropout, dense layers; tanh, ReLU, sigmoid) and its data: 6×6 images, 3
/// classes.
fn check_network() -> Result<(Arc<crate::model::Network>, Arc<Dataset>), String> {
    use crate::model::{ImageShape, Layer, Network};
    let conv = |filters, stride, activation| Layer::Conv2d {
        filters,
        kernel: 3,
        stride,
        padding: 1,
        activation,
    };
    let layers = [
        conv(3, 1, Activation::Tanh),
        Layer::MaxPool2d {
            window: 2,
            stride: 2,
        },
        conv(4, 2, Activation::Relu),
        Layer::Dropout { p: 0.3 },
        Layer::Dense {
            units: 5,
            activation: Activation::Sigmoid,
        },
        Layer::Dense {
            units: 3,
            activation: Activation::None,
        },
    ];
    let input = ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let net = Arc::new(Network::plan(input, &layers, 3)?);
    let mut data = random_dataset(36, 3, 129, 9);
    data.image_size = (6, 6);
    Ok((net, Arc::new(data)))
}

/// Models trained packed (in the same dispatches) against each trained alone on its own
/// GPU engine, for two epochs: `order(m, epoch)` is model m's order that epoch, and a model
/// whose `sits_out(m, epoch)` is left untouched that epoch, as a run that stopped early is.
/// Packing moves data and changes no arithmetic, so the parameters and the training loss
/// must agree bit for bit; anything else is a model reading another's slice.
struct PackCheck<'a> {
    check: &'a str,
    data: Arc<Dataset>,
    models: Vec<(Params, Hyper)>,
    order: &'a dyn Fn(usize, usize) -> Vec<u32>,
    sits_out: &'a dyn Fn(usize, usize) -> bool,
}

impl PackCheck<'_> {
    async fn run(self, ctx: &GpuContext) -> Result<CheckRow, String> {
        use crate::gpu::{EpochJob, GpuModels};
        let e = |e: crate::engine::EngineError| e.to_string();
        let net = &self.models[0].0.model;
        let mut pack =
            GpuModels::new(ctx.clone(), net, 16, self.models.len()).map_err(|e| e.to_string())?;
        let mut alone = Vec::new();
        for (m, (params, _)) in self.models.iter().enumerate() {
            pack.init_model(m, params).map_err(e)?;
            pack.upload(m, &self.data).map_err(e)?;
            let mut engine = GpuEngine::new(ctx.clone(), params, 16).map_err(|e| e.to_string())?;
            engine.upload(Arc::clone(&self.data)).map_err(e)?;
            alone.push(engine);
        }
        let mut row = CheckRow {
            check: self.check.into(),
            cases: self.models.len(),
            worst: 0.0,
            max_rel_error: 0.0,
            detail: String::new(),
            error: None,
        };
        for epoch in 1..=2 {
            let orders: Vec<Vec<u32>> = (0..self.models.len())
                .map(|m| (self.order)(m, epoch))
                .collect();
            let jobs: Vec<Option<EpochJob<'_>>> = orders
                .iter()
                .zip(&self.models)
                .enumerate()
                .map(|(m, (order, (_, hyper)))| {
                    (!(self.sits_out)(m, epoch)).then_some(EpochJob { order, hyper })
                })
                .collect();
            let packed = pack.train_epoch(&jobs).await.map_err(e)?;
            for (m, result) in packed.into_iter().enumerate() {
                // Each model trains alone as its job says; the pack must have trained it
                // exactly then, and left a model that sat out untouched.
                let losses = match (&jobs[m], result) {
                    (Some(job), Some(got)) => {
                        let got = got.map_err(e)?;
                        let want = Engine::train_epoch(&mut alone[m], job.order, job.hyper)
                            .await
                            .map_err(e)?;
                        Some((got.loss_sum, want.loss_sum))
                    }
                    (None, None) => None,
                    (job, _) => {
                        let what = match job {
                            Some(_) => "had a job and the pack did not train it",
                            None => "sat out and the pack trained it",
                        };
                        row.note(f64::INFINITY, f64::INFINITY, || {
                            format!("model {m} epoch {epoch}: {what}")
                        });
                        continue;
                    }
                };
                let alone_values = Engine::params(&alone[m]).await.map_err(e)?.values;
                let packed_values = pack.params(m).await.map_err(e)?.values;
                let differs = alone_values
                    .iter()
                    .zip(&packed_values)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                let loss_differs = losses.filter(|(got, want)| got.to_bits() != want.to_bits());
                if let Some(i) = differs {
                    let (a, p) = (alone_values[i], packed_values[i]);
                    row.note(f64::INFINITY, ((a - p) / a).abs() as f64, || {
                        format!("model {m} epoch {epoch}: parameter {i} is {p} packed, {a} alone")
                    });
                } else if let Some((got, want)) = loss_differs {
                    row.note(f64::INFINITY, ((got - want) / want).abs(), || {
                        format!("model {m} epoch {epoch}: training loss {got} packed, {want} alone")
                    });
                }
            }
        }
        Ok(row)
    }
}

/// Two epochs of three networks of layers that differ in learning rate, momentum, penalty and
/// init, trained packed on one order, against each trained alone; model 1 sits out the second
/// epoch.
pub(super) async fn check_packed_network_epoch(ctx: &GpuContext) -> Result<CheckRow, String> {
    let (net, data) = check_network()?;
    let settings = [
        (0.05, true, 0.0, Init::Xavier),
        (0.1, false, 1e-3, Init::Pytorch),
        (0.02, true, 1e-2, Init::He),
    ];
    let models = settings
        .iter()
        .map(|&(learning_rate, momentum, l2, init)| {
            let config = TrainConfig {
                learning_rate,
                momentum,
                l2,
                batch_size: 16,
                seed: 4,
                ..TrainConfig::default()
            };
            (
                Params::init_model(Arc::clone(&net), init, 3),
                config.hyper(),
            )
        })
        .collect();
    let train_len = data.train.len;
    PackCheck {
        check: "packed network epochs (3 models) vs each alone",
        data,
        models,
        order: &|_, epoch| epoch_order(4, epoch, train_len),
        sits_out: &|m, epoch| epoch == 2 && m == 1,
    }
    .run(ctx)
    .await
}

/// Two epochs of three dense models that differ in activation, learning rate, momentum and
/// penalty, each on its own order, trained packed against each trained alone.
pub async fn check_packed_epoch(ctx: &GpuContext) -> Result<CheckRow, String> {
    let (features, classes) = (37, 5);
    let widths = [features, 17, classes];
    let data = Arc::new(random_dataset(features, classes, 129, 8));
    let models = [
        (Activation::Tanh, 0.05, true, 0.0),
        (Activation::Sigmoid, 0.2, false, 1e-3),
        (Activation::Relu, 0.1, true, 1e-2),
    ]
    .into_iter()
    .enumerate()
    .map(|(m, (activation, learning_rate, momentum, l2))| {
        let config = TrainConfig {
            layers: widths.to_vec(),
            activation,
            learning_rate,
            momentum,
            l2,
            batch_size: 16,
            init: Init::Xavier,
            ..TrainConfig::default()
        };
        let params = Params::init(&widths, activation, config.init, 10 + m as u64)?;
        Ok((params, config.hyper()))
    })
    .collect::<Result<_, String>>()?;
    let train_len = data.train.len;
    PackCheck {
        check: "packed epochs (3 models) vs each alone",
        data,
        models,
        order: &|m, epoch| epoch_order(m as u64 + 1, epoch, train_len),
        sits_out: &|_, _| false,
    }
    .run(ctx)
    .await
}
