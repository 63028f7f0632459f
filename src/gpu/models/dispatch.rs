//! A planned op made a dispatch: its kernel, bind group and grid, and how to record it.

use crate::gpu::kernels::{Family, Kernel, Kernels, StepRef};
use crate::gpu::plan::Rows;

/// One dispatch of a step, bound to its buffers.
#[derive(Clone)]
pub(super) enum Dispatch {
    Gather {
        group: wgpu::BindGroup,
        features: u32,
    },
    MatmulGather {
        group: wgpu::BindGroup,
        n: u32,
    },
    Matmul {
        group: wgpu::BindGroup,
        rows: Rows,
        n: u32,
        family: Family,
    },
    SoftmaxXent {
        group: wgpu::BindGroup,
    },
    MatmulSoftmaxXent {
        group: wgpu::BindGroup,
    },
    Activation {
        backward: bool,
        group: wgpu::BindGroup,
        len: u32,
    },
    Conv {
        entry: Kernel,
        group: wgpu::BindGroup,
        len: u32,
    },
    /// Masking while training; `eval`, a forward dropout's copy, when evaluating.
    Dropout {
        train: wgpu::BindGroup,
        eval: Option<wgpu::BindGroup>,
        len: u32,
    },
    Update {
        group: wgpu::BindGroup,
        len: u32,
    },
    MatmulUpdate {
        group: wgpu::BindGroup,
        tiles: u32,
    },
}

impl Dispatch {
    /// The kernel family `bench --profile` sums it under.
    pub fn family(&self) -> Family {
        match self {
            Dispatch::Gather { .. } => Family::Gather,
            Dispatch::MatmulGather { .. } => Family::MatmulForwardGather,
            Dispatch::Matmul { family, .. } => *family,
            Dispatch::SoftmaxXent { .. } => Family::SoftmaxXent,
            Dispatch::MatmulSoftmaxXent { .. } => Family::MatmulForwardXent,
            Dispatch::Activation {
                backward: false, ..
            } => Family::ActivationForward,
            Dispatch::Activation { backward: true, .. } => Family::ActivationBackward,
            Dispatch::Conv { entry, .. } => Family::Conv(*entry),
            Dispatch::Dropout { .. } => Family::Dropout,
            Dispatch::Update { .. } => Family::Update,
            Dispatch::MatmulUpdate { .. } => Family::MatmulWeightGrad,
        }
    }

    /// Records the dispatch for a step of `rows` rows; `training` picks a forward dropout's
    /// masking over its copy.
    pub fn encode(
        &self,
        k: &Kernels,
        pass: &mut wgpu::ComputePass<'_>,
        step: StepRef<'_>,
        rows: u32,
        training: bool,
    ) {
        match self {
            Dispatch::Gather { group, features } => {
                k.encode_gather_batch(pass, group, step, rows, *features)
            }
            Dispatch::MatmulGather { group, n } => {
                k.encode_matmul_gather(pass, group, step, rows, *n)
            }
            Dispatch::Matmul {
                group, rows: m, n, ..
            } => {
                let m = match m {
                    Rows::Step => rows,
                    Rows::Fixed(m) => *m,
                };
                k.encode_matmul(pass, group, step, m, *n)
            }
            Dispatch::SoftmaxXent { group } => k.encode_softmax_xent(pass, group, step, rows),
            Dispatch::MatmulSoftmaxXent { group } => {
                k.encode_matmul_softmax_xent(pass, group, step, rows)
            }
            Dispatch::Activation {
                backward,
                group,
                len,
            } => k.encode_activation(pass, *backward, group, step, *len),
            Dispatch::Conv { entry, group, len } => {
                k.encode_conv_family(pass, *entry, group, step, *len)
            }
            Dispatch::Dropout { train, eval, len } => {
                let group = match (training, eval) {
                    (false, Some(eval)) => eval,
                    _ => train,
                };
                k.encode_dropout_forward(pass, group, step, *len)
            }
            Dispatch::Update { group, len } => k.encode_update(pass, group, step, *len),
            Dispatch::MatmulUpdate { group, tiles } => {
                k.encode_matmul_update(pass, group, step, *tiles)
            }
        }
    }
}
