//! `bench --profile`: the first steps of a training epoch recorded with a GPU timestamp after
//! every dispatch, summed per kernel family. Needs the adapter's TIMESTAMP_QUERY_INSIDE_PASSES
//! feature (Vulkan, DX12, Metal on AMD/Intel, GL with ARB_timer_query).

use super::GpuModels;
use super::epoch::{EpochJob, EpochPlan, no_marks};
use crate::engine::EngineError;
use crate::gpu::buffers::{staging, submit_for_read};
use crate::gpu::kernels::Family;

/// GPU time of one kernel family, per training step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FamilyTime {
    pub family: &'static str,
    pub dispatches_per_step: usize,
    pub gpu_secs_per_step: f64,
}

/// What a profiled run of training steps measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepProfile {
    /// Steps recorded with timestamps.
    pub steps: usize,
    /// Dispatches recorded per step, and submissions per step (one per profiled run).
    pub dispatches_per_step: usize,
    pub submissions_per_step: f64,
    pub families: Vec<FamilyTime>,
    /// First timestamp to last, per step: the GPU's time including gaps between dispatches.
    pub gpu_secs_per_step: f64,
    /// Host time to record one step's dispatches (a whole epoch recorded and finished without
    /// timestamps, then dropped unsubmitted): the CPU's share of every step, which no GPU can
    /// hide when the epoch is recorded before it is submitted.
    pub record_secs_per_step: f64,
}

impl GpuModels {
    /// Whether this device can write timestamps between dispatches.
    pub fn can_profile(&self) -> bool {
        self.ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    }

    /// Trains the first steps of an epoch for `jobs` (as many as one query set holds) with a
    /// timestamp after every dispatch, and sums the intervals per kernel family.
    pub fn profile_steps(
        &mut self,
        jobs: &[Option<EpochJob<'_>>],
    ) -> Result<StepProfile, EngineError> {
        if !self.can_profile() {
            return Err(EngineError::Unsupported {
                adapter: self.ctx.info.name.clone(),
                what: "write timestamps inside compute passes (TIMESTAMP_QUERY_INSIDE_PASSES)",
            });
        }
        let plan: EpochPlan = self.prepare_epoch(jobs)?;
        let record_secs_per_step = self.record_secs_per_step(&plan)?;
        let per_step = self.dispatches_per_step();
        let max_queries = wgpu::QUERY_SET_MAX_QUERIES as usize;
        let steps = plan.uniforms.len().min((max_queries - 1) / per_step);
        if steps == 0 {
            return Err(EngineError::NoData);
        }
        let queries = 1 + steps * per_step;
        let query_set = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: queries as u32,
        });
        let bytes = (queries * 8) as u64;
        let resolved = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile_timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = staging(&self.ctx, "profile_staging", bytes)?;
        let mut families = Vec::with_capacity(queries - 1);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("profile"),
                timestamp_writes: None,
            });
            pass.write_timestamp(&query_set, 0);
            let mut mark = |pass: &mut wgpu::ComputePass<'_>, family: Family| {
                families.push(family);
                pass.write_timestamp(&query_set, families.len() as u32);
            };
            self.encode_steps(&mut pass, &plan, 0..steps, &mut mark)?;
        }
        encoder.resolve_query_set(&query_set, 0..queries as u32, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
        // The profile is native only: it waits for its read-back.
        let raw = pollster::block_on(submit_for_read(&self.ctx, encoder, &readback, bytes)?)?;
        for &m in &plan.active {
            self.steps_taken[m] += steps as u64;
        }
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let secs_per_tick = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let span = ticks[queries - 1].saturating_sub(ticks[0]) as f64 * secs_per_tick;
        Ok(StepProfile {
            steps,
            dispatches_per_step: families.len() / steps,
            submissions_per_step: 1.0 / steps as f64,
            families: family_times(&families, ticks, secs_per_tick, steps),
            gpu_secs_per_step: span / steps as f64,
            record_secs_per_step,
        })
    }

    /// Host seconds per step to record `plan`'s whole epoch into a command buffer (nothing is
    /// submitted: the buffer is dropped).
    fn record_secs_per_step(&self, plan: &EpochPlan) -> Result<f64, EngineError> {
        let steps = plan.uniforms.len().max(1);
        let started = web_time::Instant::now();
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("record_only"),
                timestamp_writes: None,
            });
            self.encode_steps(&mut pass, plan, 0..plan.uniforms.len(), &mut no_marks)?;
        }
        let commands = encoder.finish();
        let secs = started.elapsed().as_secs_f64();
        drop(commands);
        Ok(secs / steps as f64)
    }
}

/// GPU time per step of each kernel family of `families` (one per dispatch, in order) over
/// `steps` steps, from `ticks` (a timestamp before the first dispatch and after each).
fn family_times(
    families: &[Family],
    ticks: &[u64],
    secs_per_tick: f64,
    steps: usize,
) -> Vec<FamilyTime> {
    let mut totals: Vec<(Family, usize, f64)> = Vec::new();
    for (i, &family) in families.iter().enumerate() {
        let secs = ticks[i + 1].saturating_sub(ticks[i]) as f64 * secs_per_tick;
        match totals.iter_mut().find(|t| t.0 == family) {
            Some(t) => {
                t.1 += 1;
                t.2 += secs;
            }
            None => totals.push((family, 1, secs)),
        }
    }
    totals.sort_by_key(|t| t.0);
    (totals.into_iter())
        .map(|(family, n, secs)| FamilyTime {
            family: family.name(),
            dispatches_per_step: n / steps,
            gpu_secs_per_step: secs / steps as f64,
        })
        .collect()
}
