//! Whole training epochs: the GPU engine against the CPU engine, and packed models against
//! each trained alone.

use super::rig::*;
use crate::engine::AwaitedEngine;

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
    let c = cpu.train_epoch(&order, &hyper).map_err(err)?;
    let g = AwaitedEngine::train_epoch(&mut gpu, &order, &hyper)
        .await
        .map_err(err)?;
    let (pc, pg) = (
        cpu.params().map_err(err)?,
        AwaitedEngine::params(&gpu).await.map_err(err)?,
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
            let c = cpu.train_epoch(&order, &hyper).map_err(e)?;
            let g = AwaitedEngine::train_epoch(&mut gpu, &order, &hyper)
                .await
                .map_err(e)?;
            let (pc, pg) = (
                cpu.params().map_err(e)?,
                AwaitedEngine::params(&gpu).await.map_err(e)?,
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

/// Two epochs of three networks that differ in learning rate, momentum, penalty and init,
/// trained packed (in the same dispatches), against each trained alone:
/// bit for bit, a model that sits out the second epoch untouched.
pub(super) async fn check_packed_network_epoch(ctx: &GpuContext) -> Result<CheckRow, String> {
    use crate::gpu::{EpochJob, GpuModels};
    let e = |e: crate::engine::EngineError| e.to_string();
    let g = |e: GpuError| e.to_string();
    let (net, data) = check_network()?;
    let model = Arc::clone(&net);
    let settings = [
        (0.05, true, 0.0, Init::Xavier),
        (0.1, false, 1e-3, Init::Pytorch),
        (0.02, true, 1e-2, Init::He),
    ];
    let mut pack = GpuModels::new(ctx.clone(), &net, 16, settings.len()).map_err(g)?;
    let (mut alone, mut hypers) = (Vec::new(), Vec::new());
    for (m, &(learning_rate, momentum, l2, init)) in settings.iter().enumerate() {
        let config = TrainConfig {
            learning_rate,
            momentum,
            l2,
            batch_size: 16,
            seed: 4,
            ..TrainConfig::default()
        };
        let params = Params::init_model(model.clone(), init, 3);
        pack.init_model(m, &params).map_err(e)?;
        pack.upload(m, &data).map_err(e)?;
        let mut engine = GpuEngine::new(ctx.clone(), &params, 16).map_err(g)?;
        engine.upload(Arc::clone(&data)).map_err(e)?;
        alone.push(engine);
        hypers.push(config.hyper());
    }
    let mut row = CheckRow {
        check: "packed network epochs (3 models) vs each alone".into(),
        cases: settings.len(),
        worst: 0.0,
        max_rel_error: 0.0,
        detail: String::new(),
        error: None,
    };
    for epoch in 1..=2 {
        let order = epoch_order(4, epoch, data.train.len);
        // Model 1 sits the second epoch out, as a run that stopped early does.
        let jobs: Vec<Option<EpochJob<'_>>> = hypers
            .iter()
            .enumerate()
            .map(|(m, hyper)| {
                (epoch == 1 || m != 1).then_some(EpochJob {
                    order: &order,
                    hyper,
                })
            })
            .collect();
        pack.train_epoch(&jobs).await.map_err(e)?;
        for (m, job) in jobs.iter().enumerate() {
            if job.is_some() {
                AwaitedEngine::train_epoch(&mut alone[m], &order, &hypers[m])
                    .await
                    .map_err(e)?;
            }
            let pa = AwaitedEngine::params(&alone[m]).await.map_err(e)?;
            let pp = pack.params(m).await.map_err(e)?;
            if let Some(i) = pa
                .values
                .iter()
                .zip(&pp.values)
                .position(|(a, b)| a.to_bits() != b.to_bits())
            {
                row.worst = f64::INFINITY;
                row.max_rel_error = row
                    .max_rel_error
                    .max(((pa.values[i] - pp.values[i]) / pa.values[i]).abs() as f64);
                row.detail = format!(
                    "model {m} epoch {epoch}: parameter {i} is {} packed, {} alone",
                    pp.values[i], pa.values[i]
                );
            }
        }
    }
    Ok(row)
}

/// Two epochs of three models that differ in activation, init, learning rate, momentum and
/// penalty, trained packed (in the same dispatches), against each trained alone.
pub async fn check_packed_epoch(ctx: &GpuContext) -> Result<CheckRow, GpuError> {
    use crate::gpu::{EpochJob, GpuModels};
    let (features, classes) = (37, 5);
    let widths = [features, 17, classes];
    let data = Arc::new(random_dataset(features, classes, 129, 8));
    let err = |e: crate::engine::EngineError| GpuError::Device {
        what: "packed check".into(),
        message: e.to_string(),
    };
    let models: Vec<(TrainConfig, Params)> = [
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
        let params = Params::init(&widths, activation, config.init, 10 + m as u64);
        params.map(|params| (config, params))
    })
    .collect::<Result<_, String>>()
    .map_err(|message| GpuError::Device {
        what: "packed check".into(),
        message,
    })?;
    let mut pack = GpuModels::new(ctx.clone(), &models[0].1.model, 16, models.len())?;
    let mut alone = Vec::new();
    for (m, (_, params)) in models.iter().enumerate() {
        pack.init_model(m, params).map_err(err)?;
        pack.upload(m, &data).map_err(err)?;
        let mut engine = GpuEngine::new(ctx.clone(), params, 16)?;
        engine.upload(Arc::clone(&data)).map_err(err)?;
        alone.push(engine);
    }
    let hypers: Vec<Hyper> = models.iter().map(|(c, _)| c.hyper()).collect();
    let mut row = CheckRow {
        check: "packed epochs (3 models) vs each alone".into(),
        cases: models.len(),
        worst: 0.0,
        max_rel_error: 0.0,
        detail: String::new(),
        error: None,
    };
    for epoch in 1..=2 {
        let orders: Vec<Vec<u32>> = (0..models.len())
            .map(|m| epoch_order(m as u64 + 1, epoch, data.train.len))
            .collect();
        let jobs: Vec<Option<EpochJob<'_>>> = orders
            .iter()
            .zip(&hypers)
            .map(|(order, hyper)| Some(EpochJob { order, hyper }))
            .collect();
        let packed = pack.train_epoch(&jobs).await.map_err(err)?;
        for (m, result) in packed.into_iter().enumerate() {
            let got = result
                .ok_or(err(crate::engine::EngineError::NoData))?
                .map_err(err)?;
            let want = AwaitedEngine::train_epoch(&mut alone[m], &orders[m], &hypers[m])
                .await
                .map_err(err)?;
            let pa = AwaitedEngine::params(&alone[m]).await.map_err(err)?;
            let pp = pack.params(m).await.map_err(err)?;
            let diff = pa
                .values
                .iter()
                .zip(&pp.values)
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            let loss_rel = (got.loss_sum - want.loss_sum).abs() / want.loss_sum.abs().max(1e-12);
            // The same kernels on the same numbers: packing moves data and changes no
            // arithmetic, so anything beyond a rounding is a model reading another's slice.
            let ratio = (diff / 1e-6).max(loss_rel / 1e-6);
            let norm = pa.values.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
            let rel = (diff / norm.max(1e-12)).max(loss_rel);
            row.note(ratio, rel, || {
                format!(
                    "model {m} ({}) epoch {epoch}: max |Δparam| {diff:.2e}, train loss rel {loss_rel:.2e}",
                    models[m].0.activation.name()
                )
            });
        }
    }
    Ok(row)
}
