//! Making a [`PackedModels`]' data resident: the image pools, each model's split index lists,
//! and the buffers sized by the dataset (step uniforms, stats, staging).

use super::*;

impl PackedModels {
    fn upload_pool(&self, name: &str, pixels: Vec<u8>, labels: Vec<u8>) -> Result<Pool, GpuError> {
        let features = self.widths[0];
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
            stats: storage_init(&self.ctx, &format!("{name}_image_stats"), f32_bytes(&stats))?,
            labels: storage_init(
                &self.ctx,
                &format!("{name}_labels"),
                bytemuck::cast_slice(&wide_labels),
            )?,
            host_pixels: pixels,
            host_labels: labels,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn split_on_device(
        &self,
        name: &str,
        pool: &Pool,
        len: usize,
        index_ms: usize,
        first_slot: usize,
        stats: &wgpu::Buffer,
        slots: usize,
    ) -> Result<SplitOnDevice, GpuError> {
        let lists = if index_ms == 0 { 1 } else { self.models };
        let indices = storage_zeroed(
            &self.ctx,
            &format!("{name}_indices"),
            (lists * len * 4) as u64,
        )?;
        let work_ms = self.layout.per_model as u32;
        let gather_params = uniform_init(
            &self.ctx,
            &format!("{name}_gather"),
            bytemuck::bytes_of(&GatherParams {
                features: self.widths[0] as u32,
                index_ms: index_ms as u32,
                work_ms,
                x_off: self.layout.x as u32,
            }),
        )?;
        let last = self.layers.len() - 1;
        let xent_params = uniform_init(
            &self.ctx,
            &format!("{name}_xent"),
            bytemuck::bytes_of(&XentParams {
                classes: self.classes() as u32,
                capacity: self.layout.capacity as u32,
                index_ms: index_ms as u32,
                slots: slots as u32,
                work_ms,
                logits_off: self.layout.activations[last] as u32,
                dz_off: self.layout.deltas[last] as u32,
                row_loss_off: self.layout.row_loss as u32,
            }),
        )?;
        let matmul_group = |entry: &str,
                            layout: &wgpu::BindGroupLayout,
                            bindings: &[u32],
                            own: &[&wgpu::Buffer],
                            p: &wgpu::Buffer| {
            let label = format!("{name}_{entry}");
            let shared = [&self.work, &self.hyper, p];
            matmul_bind_group(&self.ctx, layout, &label, bindings, shared, own)
        };
        let forward_xent_group = if self.classes() <= MAX_FUSED_CLASSES {
            let params = MatmulParams {
                index_ms: index_ms as u32,
                ..self.output_forward
            };
            let uniform = uniform_init(
                &self.ctx,
                &format!("{name}_forward_xent"),
                bytemuck::bytes_of(&params),
            )?;
            Some(matmul_group(
                "forward_xent",
                &self.kernels.matmul_xent_layout,
                &MATMUL_XENT_BINDINGS,
                &[&pool.labels, &indices],
                &uniform,
            ))
        } else {
            None
        };
        // One matmul cannot take both the gather and the softmax.
        let gather_fused =
            self.ctx.tuning.fuse_gather && (last > 0 || forward_xent_group.is_none());
        let forward_gather_group = if gather_fused {
            let params = MatmulParams {
                index_ms: index_ms as u32,
                ..self.first_forward
            };
            let uniform = uniform_init(
                &self.ctx,
                &format!("{name}_forward_gather"),
                bytemuck::bytes_of(&params),
            )?;
            Some(matmul_group(
                "forward_gather",
                &self.kernels.matmul_gather_layout,
                &MATMUL_GATHER_BINDINGS,
                &[&indices, &pool.pixels, &pool.stats],
                &uniform,
            ))
        } else {
            None
        };
        Ok(SplitOnDevice {
            len,
            gather_group: bind(
                &self.ctx,
                &self.kernels.gather_layout,
                name,
                &[
                    &pool.pixels,
                    &pool.stats,
                    &indices,
                    &self.work,
                    &gather_params,
                ],
            ),
            xent_group: bind(
                &self.ctx,
                &self.kernels.xent_layout,
                name,
                &[&self.work, &pool.labels, &indices, stats, &xent_params],
            ),
            forward_xent_group,
            forward_gather_group,
            indices,
            index_ms,
            first_slot,
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
        let features = self.widths[0];
        if data.features != features || data.classes != self.classes() {
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
        let features = self.widths[0];
        let (train_pixels, train_labels) = Self::pool_of(features, &[&data.train, &data.val]);
        let train_pool = self.upload_pool("train", train_pixels, train_labels)?;
        let (test_pixels, test_labels) = Self::pool_of(features, &[&data.test]);
        let test_pool = self.upload_pool("test", test_pixels, test_labels)?;
        let train_steps = data.train.len.div_ceil(self.batch_size);
        let val_chunks = data.val.len.div_ceil(self.layout.capacity);
        let test_chunks = data.test.len.div_ceil(self.layout.capacity);
        let val_first = train_steps.max(data.train.len.div_ceil(self.layout.capacity));
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
        let layer_updates: Vec<MatmulParams> = self
            .layer_updates
            .iter()
            .map(|u| MatmulParams {
                slots: slots as u32,
                ..*u
            })
            .collect();
        let updates = update_tables(&layer_updates)
            .into_iter()
            .enumerate()
            .map(|(t, table)| {
                let label = format!("weight_grad_update{}", t + 1);
                let uniform = uniform_init(&self.ctx, &label, bytemuck::cast_slice(&table.layers))?;
                let group = matmul_bind_group(
                    &self.ctx,
                    &self.kernels.matmul_update_layout,
                    &label,
                    &MATMUL_UPDATE_BINDINGS,
                    [&self.work, &self.hyper, &uniform],
                    &[&self.first, &self.second, &stats],
                );
                Ok(UpdateDispatch {
                    group,
                    tiles: table.tiles,
                    _table: uniform,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        let train = self.split_on_device(
            "train",
            &train_pool,
            data.train.len,
            data.train.len,
            0,
            &stats,
            slots,
        )?;
        let val = self.split_on_device(
            "val",
            &train_pool,
            data.val.len,
            data.val.len,
            val_first,
            &stats,
            slots,
        )?;
        // Every model evaluates the same test images in file order: one shared index list.
        let test = self.split_on_device(
            "test",
            &test_pool,
            data.test.len,
            0,
            test_first,
            &stats,
            slots,
        )?;
        self.ctx
            .queue
            .write_buffer(&test.indices, 0, bytemuck::cast_slice(&data.test.rows));
        Ok(Resident {
            uniforms,
            step_group,
            stats,
            staging,
            slots,
            updates,
            splits: [train, val, test],
            pools: [train_pool, test_pool],
            train_rows: vec![None; self.models],
        })
    }
}
