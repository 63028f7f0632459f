//! Making a [`GpuModels`]' data resident: the image pools, each model's split index lists, the
//! buffers sized by the dataset (step uniforms, stats, staging), and the plan's ops bound to
//! them as dispatches.

use super::GpuModels;
use super::dispatch::Dispatch;
use crate::data::{Dataset, Split, prep::image_stats};
use crate::engine::EngineError;
use crate::gpu::buffers::{bind, staging, storage_init, storage_zeroed, uniform_init};
use crate::gpu::context::GpuError;
use crate::gpu::kernels::{
    MATMUL_BINDINGS, MATMUL_GATHER_BINDINGS, MATMUL_UPDATE_BINDINGS, MATMUL_XENT_BINDINGS, StepRef,
    matmul_bind_group,
};
use crate::gpu::plan::{Op, Step};
use crate::gpu::uniforms::{
    DropoutParams, GatherParams, MatmulParams, STEP_STRIDE, XentParams, update_tables,
};

/// Images, their z-score statistics and labels of one source file.
pub(super) struct Pool {
    pixels: wgpu::Buffer,
    stats: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// A host copy, to check that every model's dataset holds the same images.
    host_pixels: Vec<u8>,
    host_labels: Vec<u8>,
}

/// One split resident on the device: per-model index lists into an image pool, and its
/// forward pass.
pub(super) struct SplitOnDevice {
    pub len: usize,
    pub indices: wgpu::Buffer,
    /// Elements between two models' index lists (0 when every model reads the same one).
    pub index_ms: usize,
    /// The loss's bind group: softmax_xent's, and batch_stats'.
    pub xent: wgpu::BindGroup,
    /// The plan's forward ops as this split records them (its own gather and loss).
    pub forward: Vec<Dispatch>,
    /// First step-uniform (and stats) slot of this split's steps or evaluation chunks.
    pub first_slot: usize,
}

/// A dropout's training uniform, rewritten with each epoch's seed.
pub(super) struct DropoutUniform {
    pub buffer: wgpu::Buffer,
    /// The uniform with every field but the seed filled in.
    pub params: DropoutParams,
}

/// Everything sized by the dataset, made by the first upload.
pub(super) struct Resident {
    pub uniforms: wgpu::Buffer,
    pub step_group: wgpu::BindGroup,
    /// (loss sum, correct) per model per slot: (models, slots) vec2<f32>.
    pub stats: wgpu::Buffer,
    pub staging: wgpu::Buffer,
    pub slots: usize,
    /// train, val, test.
    pub splits: [SplitOnDevice; 3],
    /// A training step's dispatches after the forward ones.
    pub backward: Vec<Dispatch>,
    pub dropouts: Vec<DropoutUniform>,
    /// The seed the dropout uniforms hold.
    pub seed: Option<u64>,
    pools: [Pool; 2],
    /// Per model: pool row of each training-split row (maps an epoch order to pool rows).
    pub train_rows: Vec<Option<Vec<u32>>>,
    /// Uniform buffers only bind groups refer to, held so their lifetime is visibly this
    /// struct's.
    _owned: Vec<wgpu::Buffer>,
}

impl Resident {
    /// Step slot `slot`, dispatched over `models` models.
    pub fn step(&self, slot: usize, models: usize) -> StepRef<'_> {
        StepRef {
            group: &self.step_group,
            slot: slot as u32,
            models: models as u32,
        }
    }
}

/// The buffers a bind group may take besides the workspace and the hyperparameters.
struct Binder<'a> {
    models: &'a GpuModels,
    stats: &'a wgpu::Buffer,
    slots: usize,
    dropouts: Vec<DropoutUniform>,
    owned: Vec<wgpu::Buffer>,
}

impl Binder<'_> {
    fn uniform(&mut self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        uniform_init(&self.models.ctx, label, bytes)
    }

    /// A (work, p) bind group with `bytes` as p: activation, conv, pool, dropout.
    fn work_group(&mut self, label: &str, bytes: &[u8]) -> Result<wgpu::BindGroup, GpuError> {
        let m = self.models;
        let p = self.uniform(label, bytes)?;
        let group = bind(&m.ctx, &m.kernels.work_layout, label, &[&m.work, &p]);
        self.owned.push(p);
        Ok(group)
    }

    /// One of matmul.wgsl's bind groups: `p` as its uniform, `own` its own buffers.
    fn matmul_group(
        &mut self,
        label: &str,
        (layout, bindings): (&wgpu::BindGroupLayout, &[u32]),
        p: &[u8],
        own: &[&wgpu::Buffer],
    ) -> Result<wgpu::BindGroup, GpuError> {
        let m = self.models;
        let p = self.uniform(label, p)?;
        let shared = [&m.work, &m.hyper, &p];
        let group = matmul_bind_group(&m.ctx, layout, label, bindings, shared, own);
        self.owned.push(p);
        Ok(group)
    }

    /// The dispatches of an op that reads no split (none for one that does: [`Binder::of_split`]
    /// binds it per split).
    fn shared(&mut self, step: &Step) -> Result<Vec<Dispatch>, GpuError> {
        let m = self.models;
        let k = &m.kernels;
        let label = step.label.as_str();
        Ok(match &step.op {
            Op::Gather(_)
            | Op::MatmulGather { .. }
            | Op::SoftmaxXent
            | Op::MatmulSoftmaxXent(_) => Vec::new(),
            Op::Matmul { p, rows, n, family } => {
                let bytes = bytemuck::bytes_of(p);
                let group =
                    self.matmul_group(label, (&k.matmul_layout, &MATMUL_BINDINGS), bytes, &[])?;
                vec![Dispatch::Matmul {
                    group,
                    rows: *rows,
                    n: *n,
                    family: *family,
                }]
            }
            Op::Activation { backward, p, len } => vec![Dispatch::Activation {
                backward: *backward,
                group: self.work_group(label, bytemuck::bytes_of(p))?,
                len: *len,
            }],
            Op::Conv {
                entry,
                uniform,
                len,
            } => vec![Dispatch::Conv {
                entry: *entry,
                group: self.work_group(label, uniform)?,
                len: *len,
            }],
            Op::Dropout { p, eval, len } => {
                let buffer = self.uniform(label, bytemuck::bytes_of(p))?;
                let train = bind(&m.ctx, &k.work_layout, label, &[&m.work, &buffer]);
                self.dropouts.push(DropoutUniform { buffer, params: *p });
                let eval = match eval {
                    Some(eval) => Some(self.work_group(label, bytemuck::bytes_of(eval))?),
                    None => None,
                };
                vec![Dispatch::Dropout {
                    train,
                    eval,
                    len: *len,
                }]
            }
            Op::Update { p, len } => {
                let buffer = self.uniform(label, bytemuck::bytes_of(p))?;
                let buffers = [&m.work, &m.hyper, &m.first, &m.second, &buffer];
                let group = bind(&m.ctx, &k.update_layout, label, &buffers);
                self.owned.push(buffer);
                vec![Dispatch::Update { group, len: *len }]
            }
            Op::MatmulUpdate(layers) => {
                let slots = self.slots as u32;
                let layers: Vec<MatmulParams> = layers
                    .iter()
                    .map(|p| MatmulParams { slots, ..*p })
                    .collect();
                let own = [&m.first, &m.second, self.stats];
                let layout = (&k.matmul_update_layout, &MATMUL_UPDATE_BINDINGS[..]);
                let mut dispatches = Vec::new();
                for (t, table) in update_tables(&layers).into_iter().enumerate() {
                    let label = format!("{label}{}", t + 1);
                    let bytes = bytemuck::cast_slice(&table.layers);
                    let group = self.matmul_group(&label, layout, bytes, &own)?;
                    dispatches.push(Dispatch::MatmulUpdate {
                        group,
                        tiles: table.tiles,
                    });
                }
                dispatches
            }
        })
    }

    /// The dispatch of an op that reads `split`'s index list, pool and labels.
    fn of_split(
        &mut self,
        step: &Step,
        (name, pool, indices, index_ms): (&str, &Pool, &wgpu::Buffer, usize),
        xent: &wgpu::BindGroup,
    ) -> Result<Option<Dispatch>, GpuError> {
        let m = self.models;
        let k = &m.kernels;
        let label = format!("{name}_{}", step.label);
        let index_ms = index_ms as u32;
        Ok(Some(match &step.op {
            Op::Gather(p) => {
                let p = GatherParams { index_ms, ..*p };
                let uniform = self.uniform(&label, bytemuck::bytes_of(&p))?;
                let buffers = [&pool.pixels, &pool.stats, indices, &m.work, &uniform];
                let group = bind(&m.ctx, &k.gather_layout, &label, &buffers);
                self.owned.push(uniform);
                Dispatch::Gather {
                    group,
                    features: p.features,
                }
            }
            Op::MatmulGather { p, n } => {
                let p = MatmulParams { index_ms, ..*p };
                let own = [indices, &pool.pixels, &pool.stats];
                let layout = (&k.matmul_gather_layout, &MATMUL_GATHER_BINDINGS[..]);
                let group = self.matmul_group(&label, layout, bytemuck::bytes_of(&p), &own)?;
                Dispatch::MatmulGather { group, n: *n }
            }
            Op::MatmulSoftmaxXent(p) => {
                let p = MatmulParams { index_ms, ..*p };
                let own = [&pool.labels, indices];
                let layout = (&k.matmul_xent_layout, &MATMUL_XENT_BINDINGS[..]);
                let group = self.matmul_group(&label, layout, bytemuck::bytes_of(&p), &own)?;
                Dispatch::MatmulSoftmaxXent { group }
            }
            Op::SoftmaxXent => Dispatch::SoftmaxXent {
                group: xent.clone(),
            },
            _ => return Ok(None),
        }))
    }

    /// `name`'s split of `len` rows from `pool`: its index lists (one per model, or one shared
    /// when `index_ms` is 0), its loss's bind group, and its forward pass (`shared` holds the
    /// dispatches of the ops that read no split).
    fn split(
        &mut self,
        (name, pool): (&str, &Pool),
        (len, index_ms, first_slot): (usize, usize, usize),
        shared: &[Vec<Dispatch>],
    ) -> Result<SplitOnDevice, GpuError> {
        let m = self.models;
        let lists = if index_ms == 0 { 1 } else { m.models };
        let indices = storage_zeroed(&m.ctx, &format!("{name}_indices"), (lists * len * 4) as u64)?;
        let xent_params = XentParams {
            index_ms: index_ms as u32,
            slots: self.slots as u32,
            ..m.plan.xent
        };
        let p = self.uniform(&format!("{name}_xent"), bytemuck::bytes_of(&xent_params))?;
        let buffers = [&m.work, &pool.labels, &indices, self.stats, &p];
        let xent = bind(&m.ctx, &m.kernels.xent_layout, name, &buffers);
        self.owned.push(p);
        let mut forward = Vec::new();
        for (step, bound) in m.plan.forward.iter().zip(shared) {
            let source = (name, pool, &indices, index_ms);
            match self.of_split(step, source, &xent)? {
                Some(d) => forward.push(d),
                None => forward.extend(bound.iter().cloned()),
            }
        }
        Ok(SplitOnDevice {
            len,
            indices,
            index_ms,
            xent,
            forward,
            first_slot,
        })
    }
}

impl GpuModels {
    fn upload_pool(&self, name: &str, pixels: Vec<u8>, labels: Vec<u8>) -> Result<Pool, GpuError> {
        let features = self.net.input.len();
        let stats: Vec<f32> = pixels
            .chunks_exact(features)
            .flat_map(|img| {
                let (mean, scale) = image_stats(img);
                [mean as f32, scale as f32]
            })
            .collect();
        let wide_labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        Ok(Pool {
            pixels: storage_init(&self.ctx, &format!("{name}_pixels"), &pixels)?,
            stats: storage_init(
                &self.ctx,
                &format!("{name}_image_stats"),
                bytemuck::cast_slice(&stats),
            )?,
            labels: storage_init(
                &self.ctx,
                &format!("{name}_labels"),
                bytemuck::cast_slice(&wide_labels),
            )?,
            host_pixels: pixels,
            host_labels: labels,
        })
    }

    /// The source file behind `splits` (pool row → image), rebuilt from the splits' rows.
    fn pool_of(features: usize, splits: &[&Split]) -> (Vec<u8>, Vec<u8>) {
        let n = splits
            .iter()
            .flat_map(|s| s.rows.iter())
            .map(|&r| r as usize + 1)
            .max()
            .unwrap_or(0);
        let mut pixels = vec![0u8; n * features];
        let mut labels = vec![0u8; n];
        for s in splits {
            for (j, &r) in s.rows.iter().enumerate() {
                let r = r as usize;
                pixels[r * features..(r + 1) * features]
                    .copy_from_slice(&s.pixels[j * features..(j + 1) * features]);
                labels[r] = s.labels[j];
            }
        }
        (pixels, labels)
    }

    /// Whether `split`'s images and labels are the pool's rows it names.
    fn agrees(pool: &Pool, split: &Split, features: usize) -> bool {
        split.rows.iter().enumerate().all(|(j, &r)| {
            let r = r as usize;
            pool.host_labels.get(r) == Some(&split.labels[j])
                && pool.host_pixels.get(r * features..(r + 1) * features)
                    == Some(&split.pixels[j * features..(j + 1) * features])
        })
    }

    /// Makes model `model`'s dataset resident. The first upload copies the images to the
    /// device; later ones (other models of the pack) must hold the same images, split any way.
    pub fn upload(&mut self, model: usize, data: &Dataset) -> Result<(), EngineError> {
        self.check_model(model)?;
        let features = self.net.input.len();
        if data.features != features || data.classes != self.net.classes() {
            return Err(EngineError::data_mismatch(&self.nets[model], data));
        }
        // The first upload builds the pools from this very dataset; later ones must match them.
        let first = self.resident.is_none();
        if first {
            self.resident = Some(self.make_resident(data)?);
        }
        let r = self.resident.as_mut().expect("made above");
        let [train, val, test] = &r.splits;
        if !first
            && ((data.train.len, data.val.len, data.test.len) != (train.len, val.len, test.len)
                || !Self::agrees(&r.pools[0], &data.train, features)
                || !Self::agrees(&r.pools[0], &data.val, features)
                || !Self::agrees(&r.pools[1], &data.test, features))
        {
            return Err(EngineError::Mismatch(format!(
                "model {model} of the pack was given a different dataset (splits of {}/{}/{} rows); \
                 packed models must share the data files and the validation fraction",
                data.train.len, data.val.len, data.test.len
            )));
        }
        self.ctx.queue.write_buffer(
            &val.indices,
            (model * val.index_ms * 4) as u64,
            bytemuck::cast_slice(&data.val.rows),
        );
        r.train_rows[model] = Some(data.train.rows.clone());
        Ok(())
    }

    fn make_resident(&self, data: &Dataset) -> Result<Resident, GpuError> {
        let features = self.net.input.len();
        let (train_pixels, train_labels) = Self::pool_of(features, &[&data.train, &data.val]);
        let train_pool = self.upload_pool("train", train_pixels, train_labels)?;
        let (test_pixels, test_labels) = Self::pool_of(features, &[&data.test]);
        let test_pool = self.upload_pool("test", test_pixels, test_labels)?;
        let capacity = self.plan.layout.capacity;
        let train_steps = data.train.len.div_ceil(self.batch_size);
        let val_chunks = data.val.len.div_ceil(capacity);
        let test_chunks = data.test.len.div_ceil(capacity);
        // Evaluating the training split takes its chunks over the steps' slots.
        let val_first = train_steps.max(data.train.len.div_ceil(capacity));
        let test_first = val_first + val_chunks;
        let slots = test_first + test_chunks;
        let uniforms = uniform_init(
            &self.ctx,
            "step_uniforms",
            &vec![0u8; slots * STEP_STRIDE as usize],
        )?;
        let step_group = self.kernels.step_group(&self.ctx, &uniforms);
        let stats = storage_zeroed(&self.ctx, "batch_stats", (self.models * slots * 8) as u64)?;
        // Big enough for the stats of every model and slot, or the four parameter-sized
        // vectors of one model's checkpoint (params, best, first and second moments).
        let staging_bytes = (self.models * slots * 8).max(4 * self.count * 4) as u64;
        let staging = staging(&self.ctx, "staging", staging_bytes)?;
        let mut b = Binder {
            models: self,
            stats: &stats,
            slots,
            dropouts: Vec::new(),
            owned: Vec::new(),
        };
        let shared = (self.plan.forward.iter())
            .map(|step| b.shared(step))
            .collect::<Result<Vec<_>, _>>()?;
        let mut backward = Vec::new();
        for step in &self.plan.backward {
            backward.extend(b.shared(step)?);
        }
        let (train_len, val_len) = (data.train.len, data.val.len);
        let train = b.split(("train", &train_pool), (train_len, train_len, 0), &shared)?;
        let val = b.split(("val", &train_pool), (val_len, val_len, val_first), &shared)?;
        // Every model evaluates the same test images in file order: one shared index list.
        let test = b.split(
            ("test", &test_pool),
            (data.test.len, 0, test_first),
            &shared,
        )?;
        self.ctx
            .queue
            .write_buffer(&test.indices, 0, bytemuck::cast_slice(&data.test.rows));
        let Binder {
            dropouts, owned, ..
        } = b;
        Ok(Resident {
            uniforms,
            step_group,
            stats,
            staging,
            slots,
            splits: [train, val, test],
            backward,
            dropouts,
            seed: None,
            pools: [train_pool, test_pool],
            train_rows: vec![None; self.models],
            _owned: owned,
        })
    }
}
