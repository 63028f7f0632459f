//! The page's bindings: the wgtrain library, callable from `web/page.js`. Nothing is decided
//! here that the library decides natively; this file turns JavaScript values into library
//! calls and results into JSON the page shows (the keys of `summary.json`).

use std::sync::Arc;

use wasm_bindgen::prelude::*;
use wgtrain::config::Hyper;
use wgtrain::config::TrainConfig;
use wgtrain::data::Dataset;
use wgtrain::data::SplitName;
use wgtrain::device::EngineKind;
use wgtrain::engine::{Awaited, Engine, EngineError, EpochStats, EvalStats, TrainingState};
use wgtrain::gpu::{AdapterChoice, AdapterSummary, GpuContext, GpuEngine};
use wgtrain::metrics::METRICS_COLUMNS;
use wgtrain::model::Params;
use wgtrain::page::{InMemoryRun, initial_params, train_in_memory};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(then: &js_sys::Function, milliseconds: i32);
}

/// Resolves on the event loop's next turn, after the page has drawn what changed.
async fn next_turn() {
    let turn = js_sys::Promise::new(&mut |resolve, _| set_timeout(&resolve, 0));
    let _ = wasm_bindgen_futures::JsFuture::from(turn).await;
}

/// The CPU engine in a page. Its futures are ready at once, so without a turn of the event
/// loop between epochs the tab would freeze, curves undrawn, for the whole run.
struct YieldingEachEpoch(Box<dyn Engine>);

impl Engine for YieldingEachEpoch {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn upload(&mut self, data: Arc<Dataset>) -> Result<(), EngineError> {
        self.0.upload(data)
    }

    fn train_epoch<'a>(
        &'a mut self,
        order: &'a [u32],
        hyper: &'a Hyper,
    ) -> Awaited<'a, EpochStats> {
        Box::pin(async move {
            next_turn().await;
            self.0.train_epoch(order, hyper).await
        })
    }

    fn evaluate(&mut self, split: SplitName) -> Awaited<'_, EvalStats> {
        self.0.evaluate(split)
    }

    fn params(&self) -> Awaited<'_, Params> {
        self.0.params()
    }

    fn set_params(&mut self, params: &Params) -> Result<(), EngineError> {
        self.0.set_params(params)
    }

    fn keep_best(&mut self) -> Result<(), EngineError> {
        self.0.keep_best()
    }

    fn restore_best(&mut self) -> Result<(), EngineError> {
        self.0.restore_best()
    }

    fn training_state(&self) -> Awaited<'_, TrainingState> {
        self.0.training_state()
    }

    fn set_training_state(&mut self, state: &TrainingState) -> Result<(), EngineError> {
        self.0.set_training_state(state)
    }
}

/// A panic says what it was on the console (the default is an opaque "unreachable").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("wgtrain panicked: {info}"))
    }));
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The browser's WebGPU adapter, opened. Browsers may withhold its name; the page then says
/// so rather than showing nothing.
async fn open_adapter() -> Result<GpuContext, JsValue> {
    let choice = AdapterChoice {
        allow_software: true,
        ..Default::default()
    };
    let mut ctx = GpuContext::open(&choice).await.map_err(js_error)?;
    if ctx.info.name.trim().is_empty() {
        ctx.info = Arc::new(AdapterSummary {
            name: "WebGPU adapter (the browser gives no name)".into(),
            ..(*ctx.info).clone()
        });
    }
    Ok(ctx)
}

/// The adapter the page trains on, in one line, as `wgtrain devices` would name it.
#[wasm_bindgen]
pub async fn adapter() -> Result<String, JsValue> {
    Ok(open_adapter().await?.describe())
}

/// A finished run: its summary (JSON with `summary.json`'s keys), metrics.csv, the best
/// model's safetensors bytes, and the test confusion matrix (JSON: `counts`, `names`).
#[wasm_bindgen]
pub struct Trained {
    run: InMemoryRun,
}

#[wasm_bindgen]
impl Trained {
    #[wasm_bindgen(getter)]
    pub fn summary(&self) -> String {
        serde_json::to_string(&self.run.summary).unwrap_or_default()
    }

    /// metrics.csv as `wgtrain train` writes it.
    #[wasm_bindgen(getter)]
    pub fn metrics(&self) -> String {
        wgtrain::metrics::metrics_csv(&self.run.records)
    }

    #[wasm_bindgen(getter)]
    pub fn model(&self) -> Vec<u8> {
        self.run.model_safetensors.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn confusion(&self) -> String {
        let names =
            wgtrain::predict::class_names(self.run.confusion.len(), None).unwrap_or_default();
        serde_json::json!({ "counts": self.run.confusion, "names": names }).to_string()
    }
}

/// Trains the config `config_toml` (named `name`, with `key=value` `overrides` as `--set`
/// takes them) on `device` (`gpu`: the browser's adapter; `cpu`: the CPU path, one thread)
/// with the four IDX files' bytes, calling `on_epoch` with each epoch's row as JSON.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)] // the four files are the page's four fetches
pub async fn train(
    config_toml: String,
    name: String,
    overrides: Vec<String>,
    device: String,
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
    on_epoch: js_sys::Function,
) -> Result<Trained, JsValue> {
    let path = std::path::PathBuf::from(format!("{name}.toml"));
    let config =
        TrainConfig::from_toml_str(&config_toml, &path, &name, &overrides).map_err(js_error)?;
    let files = [&train_images[..], &train_labels, &test_images, &test_labels];
    let data =
        Arc::new(Dataset::from_bytes(files, config.val_fraction, config.seed).map_err(js_error)?);
    let params = initial_params(&config, &data).map_err(js_error)?;
    let report = |record: &wgtrain::train::EpochRecord| {
        let row: serde_json::Map<String, serde_json::Value> = (METRICS_COLUMNS.iter())
            .map(|c| {
                let value = (c.get)(record);
                let value = match c.decimals {
                    Some(_) => serde_json::json!(value),
                    None => serde_json::json!(value as u64),
                };
                (c.name.to_string(), value)
            })
            .collect();
        let row = serde_json::Value::Object(row);
        let _ = on_epoch.call1(&JsValue::NULL, &JsValue::from_str(&row.to_string()));
    };
    let run = match device.as_str() {
        "gpu" => {
            let ctx = open_adapter().await?;
            let (adapter, device) = (Arc::clone(&ctx.info), ctx.describe());
            let mut engine = GpuEngine::new(ctx, &params, config.batch_size).map_err(js_error)?;
            engine.upload(Arc::clone(&data)).map_err(js_error)?;
            let described = (device, engine.describe());
            train_in_memory(
                &mut engine,
                &config,
                data,
                (described, Some(&adapter)),
                report,
            )
            .await
        }
        "cpu" => {
            let kind = EngineKind::Cpu { threads: 1 };
            let mut engine = kind.build(&params, config.batch_size).map_err(js_error)?;
            engine.upload(Arc::clone(&data)).map_err(js_error)?;
            let described = (kind.device_name().to_string(), engine.describe());
            let mut engine = YieldingEachEpoch(engine);
            train_in_memory(&mut engine, &config, data, (described, None), report).await
        }
        other => return Err(js_error(format!("device {other:?}: expected gpu or cpu"))),
    };
    Ok(Trained {
        run: run.map_err(js_error)?,
    })
}

/// Every kernel check and whole-epoch check of `wgtrain check`, on the browser's adapter
/// against the CPU reference in the page: JSON with the adapter, the verdict line
/// `wgtrain check` prints, whether every row passed, and the rows.
#[wasm_bindgen]
pub async fn check() -> Result<String, JsValue> {
    use wgtrain::check::{CheckTally, RowOutcome, run_all};
    let ctx = open_adapter().await?;
    let rows = run_all(&ctx).await;
    let mut tally = CheckTally::default();
    tally.opened();
    for row in &rows {
        tally.count(&ctx.info.name, row);
    }
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "check": row.check,
                "cases": row.cases,
                "worst": row.worst,
                "max_rel_error": row.max_rel_error,
                "passed": row.outcome() == RowOutcome::Pass,
                "detail": row.detail,
                "error": row.error,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "adapter": ctx.describe(),
        "verdict": tally.summary(),
        "passed": tally.failures == 0 && tally.unrunnable.is_empty(),
        "rows": rows,
    })
    .to_string())
}
