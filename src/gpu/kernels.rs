//! Pipelines and bind-group layouts, built once per device, and one `encode_*` function per WGSL
//! entry point. The uniforms they take are `gpu::uniforms`'.

use super::buffers::bind_at;
use super::context::{GpuContext, GpuError};
use super::shaders;
use super::uniforms::{STEP_STRIDE, StepUniform, matmul_grid};

/// Kernel families, as `bench --profile` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Gather,
    MatmulForwardGather,
    MatmulForward,
    SoftmaxXent,
    MatmulForwardXent,
    MatmulWeightGrad,
    MatmulInputGrad,
    BatchStats,
    ActivationForward,
    ActivationBackward,
    Dropout,
    Conv(Kernel),
    MatmulParamGrad,
    Update,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Gather => "gather_batch",
            Family::MatmulForwardGather => "matmul forward, gathered (+bias, activation)",
            Family::MatmulForward => "matmul forward (+bias, activation)",
            Family::SoftmaxXent => "softmax_xent",
            Family::MatmulForwardXent => {
                "matmul forward (+bias) + softmax_xent (+ input gradient below)"
            }
            Family::MatmulWeightGrad => {
                "matmul weight + bias gradients + update, every layer (+ batch sums)"
            }
            Family::MatmulInputGrad => "matmul input gradient (× slope)",
            Family::BatchStats => "batch_stats",
            Family::ActivationForward => "activation_forward",
            Family::ActivationBackward => "activation_backward",
            Family::Dropout => "dropout_forward",
            Family::Conv(entry) => entry.name(),
            Family::MatmulParamGrad => "matmul weight + bias gradients",
            Family::Update => "update",
        }
    }
}

/// A WGSL entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    GatherBatch,
    ActivationForward,
    ActivationBackward,
    DropoutForward,
    Conv2dForward,
    Conv2dBackwardInput,
    Conv2dBackwardParams,
    MaxPool2dForward,
    MaxPool2dBackward,
    Update,
    Matmul,
    SoftmaxXent,
    BatchStats,
    MatmulGather,
    MatmulSoftmaxXent,
    MatmulUpdate,
}

/// The bind-group layout an entry point takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binds {
    /// pixels, image_stats, indices, work, p.
    Gather,
    /// work, p: every operand in the workspace.
    Work,
    /// work, models, first, second, p.
    Update,
    /// work, labels, indices, stats, p.
    Xent,
    /// matmul.wgsl's numbered layouts ([`MATMUL_BINDINGS`] and the others).
    Matmul,
    MatmulUpdate,
    MatmulXent,
    MatmulGather,
}

/// One row per WGSL entry point, in [`Kernel`] order: the entry point, its name (which its
/// check, its CPU twin and its test share), its family (`shaders/<family>.wgsl`) and its
/// layout. [`Kernels::new`] builds a pipeline per row; `wgtrain check` checks the rows in this
/// order. Adding a kernel is a row here, its WGSL, its twin and its check.
pub const KERNEL_TABLE: [(Kernel, &str, &str, Binds); 16] = {
    use Binds as B;
    use Kernel as K;
    [
        (K::GatherBatch, "gather_batch", "batch", B::Gather),
        (
            K::ActivationForward,
            "activation_forward",
            "activation",
            B::Work,
        ),
        (
            K::ActivationBackward,
            "activation_backward",
            "activation",
            B::Work,
        ),
        (K::DropoutForward, "dropout_forward", "dropout", B::Work),
        (K::Conv2dForward, "conv2d_forward", "conv", B::Work),
        (
            K::Conv2dBackwardInput,
            "conv2d_backward_input",
            "conv",
            B::Work,
        ),
        (
            K::Conv2dBackwardParams,
            "conv2d_backward_params",
            "conv",
            B::Work,
        ),
        (K::MaxPool2dForward, "max_pool2d_forward", "pool", B::Work),
        (K::MaxPool2dBackward, "max_pool2d_backward", "pool", B::Work),
        (K::Update, "update", "update", B::Update),
        (K::Matmul, "matmul", "matmul", B::Matmul),
        (K::SoftmaxXent, "softmax_xent", "softmax_xent", B::Xent),
        (K::BatchStats, "batch_stats", "softmax_xent", B::Xent),
        (K::MatmulGather, "matmul_gather", "matmul", B::MatmulGather),
        (
            K::MatmulSoftmaxXent,
            "matmul_softmax_xent",
            "matmul",
            B::MatmulXent,
        ),
        (K::MatmulUpdate, "matmul_update", "matmul", B::MatmulUpdate),
    ]
};

impl Kernel {
    /// The WGSL entry point's name (and its check's, its CPU twin's and its test's).
    pub fn name(self) -> &'static str {
        KERNEL_TABLE[self as usize].1
    }
}

/// Every pipeline and layout, built and validated once.
#[derive(Debug)]
pub struct Kernels {
    pub step_layout: wgpu::BindGroupLayout,
    pub gather_layout: wgpu::BindGroupLayout,
    pub matmul_layout: wgpu::BindGroupLayout,
    pub xent_layout: wgpu::BindGroupLayout,
    pub matmul_update_layout: wgpu::BindGroupLayout,
    pub matmul_xent_layout: wgpu::BindGroupLayout,
    pub matmul_gather_layout: wgpu::BindGroupLayout,
    /// work, p: activation.wgsl, dropout.wgsl, conv.wgsl and pool.wgsl (every operand in the
    /// workspace).
    pub work_layout: wgpu::BindGroupLayout,
    /// work, models, first, second, p: update.wgsl.
    pub update_layout: wgpu::BindGroupLayout,
    /// One per [`KERNEL_TABLE`] row, in its order.
    pipelines: Vec<wgpu::ComputePipeline>,
}

/// How a binding of a numbered layout is used.
#[derive(Clone, Copy)]
enum Use {
    Read,
    ReadWrite,
    Uniform,
}

/// matmul's bindings (matmul.wgsl): work, models, p.
pub const MATMUL_BINDINGS: [u32; 3] = [0, 1, 2];
const MATMUL_USES: [Use; 3] = [Use::ReadWrite, Use::Read, Use::Uniform];

/// matmul_update's bindings (matmul.wgsl): work, models, layers, first, second, stats.
pub const MATMUL_UPDATE_BINDINGS: [u32; 6] = [0, 1, 3, 4, 5, 6];
const MATMUL_UPDATE_USES: [Use; 6] = {
    use Use::*;
    [ReadWrite, Read, Uniform, ReadWrite, ReadWrite, ReadWrite]
};

/// The most output classes one tile of matmul.wgsl holds: wider output layers keep a separate
/// softmax_xent dispatch.
pub const MAX_FUSED_CLASSES: usize = 16;

/// matmul_softmax_xent's bindings (matmul.wgsl): work, models, p, labels, indices.
pub const MATMUL_XENT_BINDINGS: [u32; 5] = [0, 1, 2, 7, 8];
const MATMUL_XENT_USES: [Use; 5] = {
    use Use::*;
    [ReadWrite, Read, Uniform, Read, Read]
};

/// matmul_gather's bindings (matmul.wgsl): work, models, p, indices, pixels, image_stats.
pub const MATMUL_GATHER_BINDINGS: [u32; 6] = [0, 1, 2, 8, 9, 10];
const MATMUL_GATHER_USES: [Use; 6] = {
    use Use::*;
    [ReadWrite, Read, Uniform, Read, Read, Read]
};

/// A bind group for one of matmul.wgsl's entry points: `work`, `models` and its uniform (`p`,
/// or matmul_update's layer table) first, as every matmul layout begins, then the entry
/// point's own buffers, at the binding numbers `bindings` (a `MATMUL_*_BINDINGS`) lists.
pub fn matmul_bind_group(
    ctx: &GpuContext,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    bindings: &[u32],
    [work, models, p]: [&wgpu::Buffer; 3],
    own: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let buffers = [work, models, p].into_iter().chain(own.iter().copied());
    let numbered: Vec<_> = bindings.iter().copied().zip(buffers).collect();
    bind_at(ctx, layout, label, &numbered)
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32, dynamic: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

/// `n` storage bindings (`read_only` per entry) followed by one uniform.
fn layout(ctx: &GpuContext, label: &str, read_only: &[bool]) -> wgpu::BindGroupLayout {
    let mut entries: Vec<_> = read_only
        .iter()
        .enumerate()
        .map(|(i, &ro)| storage(i as u32, ro))
        .collect();
    entries.push(uniform(read_only.len() as u32, false));
    ctx.device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        })
}

/// A layout of the given binding numbers (which may have gaps) and uses.
fn numbered_layout(
    ctx: &GpuContext,
    label: &str,
    bindings: &[u32],
    uses: &[Use],
) -> wgpu::BindGroupLayout {
    let entries: Vec<_> = bindings
        .iter()
        .zip(uses)
        .map(|(&b, u)| match u {
            Use::Read => storage(b, true),
            Use::ReadWrite => storage(b, false),
            Use::Uniform => uniform(b, false),
        })
        .collect();
    ctx.device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        })
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Result<Self, GpuError> {
        let step_layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("step"),
                entries: &[uniform(0, true)],
            });
        let numbered =
            |label, bindings: &[u32], uses: &[Use]| numbered_layout(ctx, label, bindings, uses);
        let mut kernels = Kernels {
            gather_layout: layout(ctx, "gather_batch", &[true, true, true, false]),
            work_layout: layout(ctx, "work", &[false]),
            update_layout: layout(ctx, "update", &[false, true, false, false]),
            xent_layout: layout(ctx, "softmax_xent", &[false, true, true, false]),
            matmul_layout: numbered("matmul", &MATMUL_BINDINGS, &MATMUL_USES),
            matmul_update_layout: numbered(
                "matmul_update",
                &MATMUL_UPDATE_BINDINGS,
                &MATMUL_UPDATE_USES,
            ),
            matmul_gather_layout: numbered(
                "matmul_gather",
                &MATMUL_GATHER_BINDINGS,
                &MATMUL_GATHER_USES,
            ),
            matmul_xent_layout: numbered(
                "matmul_softmax_xent",
                &MATMUL_XENT_BINDINGS,
                &MATMUL_XENT_USES,
            ),
            step_layout,
            pipelines: Vec::with_capacity(KERNEL_TABLE.len()),
        };
        for (kernel, name, family, binds) in KERNEL_TABLE {
            debug_assert_eq!(kernel as usize, kernels.pipelines.len());
            let pipeline = kernels.pipeline_of(ctx, (name, family), kernels.layout(binds))?;
            kernels.pipelines.push(pipeline);
        }
        Ok(kernels)
    }

    /// The layout of `binds`.
    pub fn layout(&self, binds: Binds) -> &wgpu::BindGroupLayout {
        match binds {
            Binds::Gather => &self.gather_layout,
            Binds::Work => &self.work_layout,
            Binds::Update => &self.update_layout,
            Binds::Xent => &self.xent_layout,
            Binds::Matmul => &self.matmul_layout,
            Binds::MatmulUpdate => &self.matmul_update_layout,
            Binds::MatmulXent => &self.matmul_xent_layout,
            Binds::MatmulGather => &self.matmul_gather_layout,
        }
    }

    /// Entry point `entry` of `shaders/<family>.wgsl` (assembled with the context's tuning)
    /// as a pipeline over `layout` and the step uniforms.
    fn pipeline_of(
        &self,
        ctx: &GpuContext,
        (entry, family): (&str, &str),
        layout: &wgpu::BindGroupLayout,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let d = &ctx.device;
        let source = shaders::assembled(family, &ctx.tuning).ok_or_else(|| GpuError::Shader {
            kernel: entry.into(),
            message: "no such shader family, or matmul.wgsl lost its TILE_K or PREFETCH".into(),
        })?;
        ctx.scoped(entry, || {
            let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let pipeline_layout = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(layout), Some(&self.step_layout)],
                immediate_size: 0,
            });
            d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .map_err(|e| GpuError::Shader {
            kernel: entry.into(),
            message: e.to_string(),
        })
    }

    fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        &self.pipelines[kernel as usize]
    }
}

impl Kernels {
    /// The group(1) bind group over a buffer of per-step uniforms, one `STEP_STRIDE` slot each,
    /// selected per dispatch by a dynamic offset.
    pub fn step_group(&self, ctx: &GpuContext, uniforms: &wgpu::Buffer) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("step"),
            layout: &self.step_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniforms,
                    offset: 0,
                    size: std::num::NonZeroU64::new(std::mem::size_of::<StepUniform>() as u64),
                }),
            }],
        })
    }
}

/// Workgroups for `n` invocations of `width` each, folded into 2-D past 65,535 (WebGPU's
/// per-dimension limit); kernels rebuild the linear index with `linear_index`.
pub fn grid(n: u32, width: u32) -> (u32, u32) {
    let groups = n.div_ceil(width).max(1);
    if groups <= 65_535 {
        (groups, 1)
    } else {
        (65_535, groups.div_ceil(65_535))
    }
}

fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    step: StepRef<'_>,
    (x, y): (u32, u32),
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.set_bind_group(1, step.group, &[step.slot * STEP_STRIDE as u32]);
    pass.dispatch_workgroups(x, y, step.models.max(1));
}

/// Which step slot a dispatch reads (its uniform gives the batch's rows, offset and first
/// model) and over how many models it runs (the dispatch's z).
#[derive(Clone, Copy)]
pub struct StepRef<'a> {
    pub group: &'a wgpu::BindGroup,
    pub slot: u32,
    pub models: u32,
}

impl Kernels {
    pub fn encode_gather_batch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        rows: u32,
        features: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::GatherBatch),
            group,
            step,
            grid(rows * features, 256),
        );
    }

    /// `len` elements of an activation's pass (activation.wgsl); `backward` for its gradient.
    pub fn encode_activation(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        backward: bool,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        len: u32,
    ) {
        let pipeline = match backward {
            false => self.pipeline(Kernel::ActivationForward),
            true => self.pipeline(Kernel::ActivationBackward),
        };
        dispatch(pass, pipeline, group, step, grid(len, 256));
    }

    /// One optimiser step for `len` parameters (update.wgsl).
    pub fn encode_update(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        len: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::Update),
            group,
            step,
            grid(len, 256),
        );
    }

    /// Masks `len` elements (dropout.wgsl).
    pub fn encode_dropout_forward(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        len: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::DropoutForward),
            group,
            step,
            grid(len, 256),
        );
    }

    /// One invocation per element of the entry point's output (conv.wgsl, pool.wgsl): `len`
    /// outputs, or for conv2d_backward_params the weights and then the biases.
    pub fn encode_conv_family(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: Kernel,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        len: u32,
    ) {
        dispatch(pass, self.pipeline(entry), group, step, grid(len, 256));
    }

    /// `m`, `n`: the output's rows and columns for this dispatch.
    pub fn encode_matmul(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        m: u32,
        n: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::Matmul),
            group,
            step,
            matmul_grid(m, n),
        );
    }

    /// The first layer's forward pass with its input rows gathered and z-scored from the
    /// image pool (and stored for the weight gradient): `rows` × `n` outputs.
    pub fn encode_matmul_gather(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        rows: u32,
        n: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::MatmulGather),
            group,
            step,
            matmul_grid(rows, n),
        );
    }

    /// The output layer's forward pass with softmax + cross-entropy in its epilogue, over
    /// `rows` rows (its classes must fit one tile: [`MAX_FUSED_CLASSES`]).
    pub fn encode_matmul_softmax_xent(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        rows: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::MatmulSoftmaxXent),
            group,
            step,
            matmul_grid(rows, 1),
        );
    }

    pub fn encode_softmax_xent(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        rows: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::SoftmaxXent),
            group,
            step,
            (rows.div_ceil(64).max(1), 1),
        );
    }

    pub fn encode_batch_stats(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
    ) {
        dispatch(pass, self.pipeline(Kernel::BatchStats), group, step, (1, 1));
    }

    /// The weight (and bias) gradients of an [`UpdateTable`]'s layers applied by the
    /// optimiser, in one dispatch of the table's `tiles` workgroups (per model).
    pub fn encode_matmul_update(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        step: StepRef<'_>,
        tiles: u32,
    ) {
        dispatch(
            pass,
            self.pipeline(Kernel::MatmulUpdate),
            group,
            step,
            grid(tiles, 1),
        );
    }
}
