//! Labelled buffer creation (checked against the adapter's limits, inside error scopes) and
//! the one read-back helper.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::context::{GpuContext, GpuError};

/// Usage of every storage buffer: bound in shaders, written by the queue, copied either way.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

fn check_size(
    ctx: &GpuContext,
    label: &str,
    bytes: u64,
    binding_limit: u64,
) -> Result<(), GpuError> {
    for (limit, available) in [
        ("max_buffer_size", ctx.limits.max_buffer_size),
        ("max_storage_buffer_binding_size", binding_limit),
    ] {
        if bytes > available {
            return Err(GpuError::Limit {
                adapter: format!("{} (buffer {label})", ctx.info.name),
                limit,
                needed: bytes,
                available,
            });
        }
    }
    Ok(())
}

fn scoped_buffer(
    ctx: &GpuContext,
    label: &str,
    bytes: u64,
    make: impl FnOnce() -> wgpu::Buffer,
) -> Result<wgpu::Buffer, GpuError> {
    ctx.scoped(label, make).map_err(|e| match e {
        GpuError::Device { message, .. } if message.starts_with("out of memory") => {
            GpuError::OutOfMemory {
                label: label.to_string(),
                bytes,
            }
        }
        other => other,
    })
}

/// A zero-filled storage buffer of at least `bytes` (rounded up to 4, at least 4).
pub fn storage_zeroed(ctx: &GpuContext, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
    let bytes = bytes.max(4).next_multiple_of(4);
    check_size(
        ctx,
        label,
        bytes,
        ctx.limits.max_storage_buffer_binding_size,
    )?;
    scoped_buffer(ctx, label, bytes, || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    })
}

/// A buffer holding `contents`, checked against the limit that applies to its binding.
fn buffer_init(
    ctx: &GpuContext,
    label: &str,
    contents: &[u8],
    usage: wgpu::BufferUsages,
    binding_limit: u64,
) -> Result<wgpu::Buffer, GpuError> {
    check_size(ctx, label, contents.len() as u64, binding_limit)?;
    scoped_buffer(ctx, label, contents.len() as u64, || {
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
    })
}

/// A storage buffer holding `contents` (padded with zeros to a multiple of 4 bytes).
pub fn storage_init(
    ctx: &GpuContext,
    label: &str,
    contents: &[u8],
) -> Result<wgpu::Buffer, GpuError> {
    let padded;
    let contents = if !contents.len().is_multiple_of(4) || contents.is_empty() {
        let mut p = contents.to_vec();
        p.resize(contents.len().max(4).next_multiple_of(4), 0);
        padded = p;
        &padded[..]
    } else {
        contents
    };
    buffer_init(
        ctx,
        label,
        contents,
        STORAGE,
        ctx.limits.max_storage_buffer_binding_size,
    )
}

/// A uniform buffer holding `contents`.
pub fn uniform_init(
    ctx: &GpuContext,
    label: &str,
    contents: &[u8],
) -> Result<wgpu::Buffer, GpuError> {
    let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
    buffer_init(ctx, label, contents, usage, ctx.limits.max_buffer_size)
}

/// A reusable map-readable staging buffer.
pub fn staging(ctx: &GpuContext, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
    let bytes = bytes.max(4).next_multiple_of(4);
    scoped_buffer(ctx, label, bytes, || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

/// Submits `encoder` (which must end by copying `bytes` into `staging` at offset 0), waits for
/// it, and returns the bytes. The one place the host waits on the device.
pub fn submit_and_read(
    ctx: &GpuContext,
    encoder: wgpu::CommandEncoder,
    staging: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u8>, GpuError> {
    // A lost device explains any failure below better than the failure itself.
    let device_err = |what: &str, message: String| match ctx.check_lost() {
        Err(lost) => lost,
        Ok(()) => GpuError::Device {
            what: what.to_string(),
            message,
        },
    };
    ctx.check_lost()?;
    ctx.queue.submit([encoder.finish()]);
    let slice = staging.slice(..bytes);
    let (tx, rx) = mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| device_err("waiting for the GPU", e.to_string()))?;
    rx.recv()
        .map_err(|e| device_err("read-back", e.to_string()))?
        .map_err(|e| device_err("read-back", e.to_string()))?;
    let out = slice
        .get_mapped_range()
        .map_err(|e| device_err("read-back", e.to_string()))?
        .to_vec();
    staging.unmap();
    ctx.check_lost()?;
    Ok(out)
}

/// A bind group of whole buffers at bindings 0, 1, 2, … in order.
pub fn bind(
    ctx: &GpuContext,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let numbered: Vec<_> = (0..).zip(buffers.iter().copied()).collect();
    bind_at(ctx, layout, label, &numbered)
}

/// A bind group of (binding number, buffer) pairs, for layouts whose numbers have gaps.
pub fn bind_at(
    ctx: &GpuContext,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<_> = buffers
        .iter()
        .map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}
