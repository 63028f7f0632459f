//! Labelled buffer creation (checked against the adapter's limits, inside error scopes) and
//! the one read-back helper.

use std::sync::{Arc, Mutex};

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

/// Submits `encoder` (which must end by copying `bytes` into `staging` at offset 0) and asks
/// for `staging` mapped: awaiting what it returns gives the bytes. Natively the await
/// waits for the device where it stands; in a browser, where nothing may block and WebGPU maps
/// a buffer only when the page's event loop turns, it yields until the mapping is there, and
/// then hears the error scopes left unheard until now ([`GpuContext::settle`]).
pub fn submit_for_read<'a>(
    ctx: &'a GpuContext,
    encoder: wgpu::CommandEncoder,
    staging: &'a wgpu::Buffer,
    bytes: u64,
) -> Result<impl Future<Output = Result<Vec<u8>, GpuError>> + 'a, GpuError> {
    ctx.check_lost()?;
    ctx.queue.submit([encoder.finish()]);
    let mapping = Arc::new(Mutex::new(Mapping::default()));
    let done = Arc::clone(&mapping);
    staging
        .slice(..bytes)
        .map_async(wgpu::MapMode::Read, move |result| {
            if let Ok(mut m) = done.lock() {
                m.result = Some(result);
                if let Some(waker) = m.waker.take() {
                    waker.wake();
                }
            }
        });
    let pending = PendingRead {
        ctx,
        staging,
        bytes,
        mapping,
    };
    Ok(async move {
        let out = pending.await?;
        ctx.settle().await?;
        Ok(out)
    })
}

/// A read-back submitted by [`submit_for_read`], its bytes not yet mapped.
struct PendingRead<'a> {
    ctx: &'a GpuContext,
    staging: &'a wgpu::Buffer,
    bytes: u64,
    mapping: Arc<Mutex<Mapping>>,
}

/// What the map callback leaves for the [`PendingRead`] that waits on it.
#[derive(Default)]
struct Mapping {
    result: Option<Result<(), wgpu::BufferAsyncError>>,
    waker: Option<std::task::Waker>,
}

impl PendingRead<'_> {
    /// A lost device explains any failure better than the failure itself.
    fn failed(&self, what: &str, message: String) -> GpuError {
        match self.ctx.check_lost() {
            Err(lost) => lost,
            Ok(()) => GpuError::Device {
                what: what.to_string(),
                message,
            },
        }
    }
}

impl std::future::Future for PendingRead<'_> {
    type Output = Result<Vec<u8>, GpuError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        // Natively nothing else turns the device's callbacks: wait for it here.
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = self.ctx.device.poll(wgpu::PollType::wait_indefinitely()) {
            return Poll::Ready(Err(self.failed("waiting for the GPU", e.to_string())));
        }
        let result = match self.mapping.lock() {
            Ok(mut m) => match m.result.take() {
                Some(result) => result,
                None => {
                    m.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            },
            Err(e) => return Poll::Ready(Err(self.failed("read-back", e.to_string()))),
        };
        if let Err(e) = result {
            return Poll::Ready(Err(self.failed("read-back", e.to_string())));
        }
        let slice = self.staging.slice(..self.bytes);
        let out = match slice.get_mapped_range() {
            Ok(range) => range.to_vec(),
            Err(e) => return Poll::Ready(Err(self.failed("read-back", e.to_string()))),
        };
        self.staging.unmap();
        Poll::Ready(self.ctx.check_lost().map(|()| out))
    }
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
