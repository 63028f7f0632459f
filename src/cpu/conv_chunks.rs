//! How the fast convolutions (`cpu::im2col`, `cpu::conv_narrow`) go through a batch: in
//! chunks of a few images, each thread with its own scratch ([`ConvScratch`]), and for the
//! weight gradient in parts of [`IMAGES_PER_PART`] images summed on one thread each and added
//! in order, so the gradient is the same bits on any number of threads
//! ([`forward_by_chunks`], [`backward_by_parts`]); what they do with each chunk of output
//! ([`Epilogue`]) and where their backward pass's ∂L/∂z comes from ([`Gradient`]).
//!
//! A convolution followed by a max pooling pools each chunk while it is still in cache, so
//! its whole output (the largest activation of a small CNN: 12.8 MB for configs/cnn.toml's
//! first convolution at batch 128) is never written; the backward pass rebuilds each chunk's ∂L/∂z from the
//! pooling's gradient, output and argmax, since the pooled value is the activation's output
//! at the pixel the gradient goes to.

use super::channels_last as cl;
use super::ops;
use super::scalar::Scalar;
use crate::model::{Activation, Conv2d, MaxPool2d};
use rayon::prelude::*;

/// Where a convolution's activated output goes, for a run of images.
pub enum Epilogue<'a, T> {
    /// Kept whole, (B, H′, W′, O), for the next layer.
    Store { out: &'a mut [T] },
    /// Max pooled a chunk at a time: the pooling's output and argmax.
    Pool {
        shape: MaxPool2d,
        out: &'a mut [T],
        argmax: &'a mut [u32],
    },
}

impl<'a, T: Scalar> Epilogue<'a, T> {
    /// The pooling fused onto the convolution, if any.
    pub fn pool(&self) -> Option<MaxPool2d> {
        match self {
            Epilogue::Store { .. } => None,
            Epilogue::Pool { shape, .. } => Some(*shape),
        }
    }

    /// This epilogue for the first `images` images, and for the rest.
    pub fn split_at(self, images: usize, conv: &Conv2d) -> (Self, Self) {
        match self {
            Epilogue::Store { out } => {
                let (a, b) = out.split_at_mut(images * conv.out_len());
                (Epilogue::Store { out: a }, Epilogue::Store { out: b })
            }
            Epilogue::Pool { shape, out, argmax } => {
                let at = images * shape.out_len();
                let ((o1, o2), (a1, a2)) = (out.split_at_mut(at), argmax.split_at_mut(at));
                let first = Epilogue::Pool {
                    shape,
                    out: o1,
                    argmax: a1,
                };
                (
                    first,
                    Epilogue::Pool {
                        shape,
                        out: o2,
                        argmax: a2,
                    },
                )
            }
        }
    }

    /// Cuts this epilogue into runs of `images` images, as many as `parts`.
    pub fn into_runs(self, images: usize, conv: &Conv2d, parts: usize) -> Vec<Self> {
        into_runs(self, parts, |rest| rest.split_at(images, conv))
    }

    /// Images `first..first + images` of this run: `compute` writes their convolution (before
    /// the activation) into the slice it is given, a part of the output or of `z` (scratch
    /// of at least `images` outputs), then the activation and any pooling follow.
    pub fn chunk(
        &mut self,
        conv: &Conv2d,
        activation: Activation,
        (first, images): (usize, usize),
        z: &mut [T],
        compute: impl FnOnce(&mut [T]),
    ) {
        let len = conv.out_len();
        match self {
            Epilogue::Store { out } => {
                let z = &mut out[first * len..(first + images) * len];
                compute(z);
                ops::activation_forward(activation, z);
            }
            Epilogue::Pool { shape, out, argmax } => {
                let z = &mut z[..images * len];
                compute(z);
                ops::activation_forward(activation, z);
                let pooled = shape.out_len();
                let range = first * pooled..(first + images) * pooled;
                cl::max_pool2d_forward(
                    shape,
                    z,
                    images,
                    &mut out[range.clone()],
                    &mut argmax[range],
                );
            }
        }
    }
}

/// `whole` cut by `split` (a run off the front, and the rest) into `parts` runs.
fn into_runs<R>(whole: R, parts: usize, split: impl Fn(R) -> (R, R)) -> Vec<R> {
    let mut runs = Vec::with_capacity(parts);
    let mut rest = whole;
    for _ in 1..parts {
        let (run, more) = split(rest);
        runs.push(run);
        rest = more;
    }
    runs.push(rest);
    runs
}

/// Where a convolution's backward pass finds ∂L/∂z, for a run of images.
pub enum Gradient<'a, T> {
    /// ∂L/∂(the activation's output) (B, H′, W′, O), made ∂L/∂z in place, and that output.
    Stored { dz: &'a mut [T], a_out: &'a [T] },
    /// Through the max pooling fused onto the convolution ([`Epilogue::Pool`]):
    /// ∂L/∂(the pooling's output), and that output and argmax.
    Pooled {
        shape: MaxPool2d,
        dpool: &'a [T],
        pooled: &'a [T],
        argmax: &'a [u32],
    },
}

impl<'a, T: Scalar> Gradient<'a, T> {
    /// The pooling fused onto the convolution, if any.
    pub fn pool(&self) -> Option<MaxPool2d> {
        match self {
            Gradient::Stored { .. } => None,
            Gradient::Pooled { shape, .. } => Some(*shape),
        }
    }

    /// This gradient for the first `images` images, and for the rest.
    pub fn split_at(self, images: usize, conv: &Conv2d) -> (Self, Self) {
        match self {
            Gradient::Stored { dz, a_out } => {
                let at = images * conv.out_len();
                let ((d1, d2), (a1, a2)) = (dz.split_at_mut(at), a_out.split_at(at));
                let first = Gradient::Stored { dz: d1, a_out: a1 };
                (first, Gradient::Stored { dz: d2, a_out: a2 })
            }
            Gradient::Pooled {
                shape,
                dpool,
                pooled,
                argmax,
            } => {
                let at = images * shape.out_len();
                let (d1, d2) = dpool.split_at(at);
                let ((p1, p2), (a1, a2)) = (pooled.split_at(at), argmax.split_at(at));
                let part = |dpool, pooled, argmax| Gradient::Pooled {
                    shape,
                    dpool,
                    pooled,
                    argmax,
                };
                (part(d1, p1, a1), part(d2, p2, a2))
            }
        }
    }

    /// Cuts this gradient into runs of `images` images, as many as `parts`.
    pub fn into_runs(self, images: usize, conv: &Conv2d, parts: usize) -> Vec<Self> {
        into_runs(self, parts, |rest| rest.split_at(images, conv))
    }

    /// ∂L/∂z (images, H′, W′, O) of images `first..first + images` of this run: in place, or
    /// made in `scratch` from the pooling's gradient, with `g` scratch of the pooled chunk's
    /// size. Where pooling windows overlap, a pixel's gradient is the sum of each window's
    /// times the activation's derivative there, rather than the derivative times the sum: the
    /// same for ReLU, equal to rounding otherwise.
    pub fn chunk<'s>(
        &'s mut self,
        conv: &Conv2d,
        activation: Activation,
        (first, images): (usize, usize),
        scratch: &'s mut [T],
        g: &mut [T],
    ) -> &'s [T] {
        let len = conv.out_len();
        match self {
            Gradient::Stored { dz, a_out } => {
                let range = first * len..(first + images) * len;
                let dz = &mut dz[range.clone()];
                ops::activation_backward(activation, &a_out[range], dz);
                dz
            }
            Gradient::Pooled {
                shape,
                dpool,
                pooled,
                argmax,
            } => {
                let n = shape.out_len();
                let range = first * n..(first + images) * n;
                // ∂L/∂z at the pixel each output took: the activation's derivative there is
                // its derivative at the pooled value, which is that pixel's output.
                let g = &mut g[..images * n];
                g.copy_from_slice(&dpool[range.clone()]);
                ops::activation_backward(activation, &pooled[range.clone()], g);
                let dz = &mut scratch[..images * len];
                cl::max_pool2d_backward(shape, g, &argmax[range], images, dz);
                dz
            }
        }
    }
}

/// Images per part of a convolution's weight gradient: each part's gradient is summed on one
/// thread, chunk by chunk, and the parts added in order, so the gradient is the same bits on
/// any number of threads. A batch of 128 is 8 parts.
pub const IMAGES_PER_PART: usize = 16;

/// Each thread's buffers for the chunked convolutions: a chunk's im2col matrix (or padded
/// image) and its gradient, the chunk's output before a fused pooling, its ∂L/∂z and pooled
/// gradient, and each part's weight and bias gradients. Grown by the first pass that needs
/// more, then reused.
#[derive(Default)]
pub struct ConvScratch<T> {
    cols: Vec<T>,
    dcols: Vec<T>,
    z: Vec<T>,
    dz: Vec<T>,
    g: Vec<T>,
    partials: Vec<T>,
}

/// The floats each buffer of a [`ConvScratch`] needs for a convolution ([`ConvScratch::floats`]):
/// a scratch the convolutions of a network share holds, in each buffer, the most any of them
/// needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScratchFloats([u128; 6]);

impl ScratchFloats {
    /// Each buffer's larger need.
    pub fn max(self, other: ScratchFloats) -> ScratchFloats {
        ScratchFloats(std::array::from_fn(|i| self.0[i].max(other.0[i])))
    }

    /// All the buffers together; saturates rather than overflowing.
    pub fn total(self) -> u128 {
        self.0.iter().fold(0u128, |a, &b| a.saturating_add(b))
    }
}

/// One thread's chunk buffers, each of its chunk's length (empty where unused).
struct ChunkBuffers<'a, T> {
    cols: &'a mut [T],
    dcols: &'a mut [T],
    z: &'a mut [T],
    dz: &'a mut [T],
    g: &'a mut [T],
}

impl<T: Scalar> ConvScratch<T> {
    /// The floats a pass of `rows` images of `shape` on `threads` threads needs in each of
    /// this scratch's buffers, in chunks of `images` images of `cols_per_image` floats of
    /// matrix, the convolution pooled by `pool` or not.
    pub fn floats(
        shape: &Conv2d,
        pool: Option<&MaxPool2d>,
        (images, cols_per_image): (usize, usize),
        rows: usize,
        threads: usize,
    ) -> ScratchFloats {
        // A pass has at most one set of buffers per run, and no more runs than chunks.
        let sets = threads.clamp(1, rows.div_ceil(images.max(1)).max(1));
        let per_thread = |floats: usize| sets as u128 * (images * floats) as u128;
        let (out, pooled) = pool.map_or((0, 0), |p| (shape.out_len(), p.out_len()));
        let parts = rows.div_ceil(IMAGES_PER_PART) as u128;
        let part = (shape.weights_len() + shape.filters) as u128;
        let cols = per_thread(cols_per_image);
        ScratchFloats([
            cols,
            cols,
            per_thread(out),
            per_thread(out),
            per_thread(pooled),
            parts.saturating_mul(part),
        ])
    }

    /// `threads` sets (one per run of a pass) of chunk buffers for chunks of `images` images
    /// of `shape`: matrices of `cols_per_image` floats an image, with `pool` the pooling's
    /// buffers for the forward or the `backward` pass, and with `input_gradient` the
    /// matrices' gradients.
    fn chunks(
        &mut self,
        shape: &Conv2d,
        (images, cols_per_image): (usize, usize),
        pool: Option<&MaxPool2d>,
        (backward, input_gradient): (bool, bool),
        threads: usize,
    ) -> Vec<ChunkBuffers<'_, T>> {
        let cols = images * cols_per_image;
        let (out, pooled) =
            pool.map_or((0, 0), |p| (images * shape.out_len(), images * p.out_len()));
        let (z, dz, g) = match backward {
            true => (0, out, pooled),
            false => (out, 0, 0),
        };
        let dcols = if input_gradient { cols } else { 0 };
        let split = |buffer, len| split_buffer(buffer, len, threads);
        let (mut c, mut dc) = (split(&mut self.cols, cols), split(&mut self.dcols, dcols));
        let (mut zs, mut dzs) = (split(&mut self.z, z), split(&mut self.dz, dz));
        let mut gs = split(&mut self.g, g);
        (0..threads)
            .map(|_| ChunkBuffers {
                cols: c.next().unwrap_or_default(),
                dcols: dc.next().unwrap_or_default(),
                z: zs.next().unwrap_or_default(),
                dz: dzs.next().unwrap_or_default(),
                g: gs.next().unwrap_or_default(),
            })
            .collect()
    }
}

/// `threads` buffers of `len` from the front of `buffer`, grown to hold them (empty ones for
/// a `len` of 0).
fn split_buffer<T: Scalar>(
    buffer: &mut Vec<T>,
    len: usize,
    threads: usize,
) -> std::vec::IntoIter<&mut [T]> {
    if buffer.len() < threads * len {
        buffer.resize(threads * len, T::zero());
    }
    let mut parts: Vec<&mut [T]> = match len {
        0 => Vec::new(),
        _ => buffer[..threads * len].chunks_mut(len).collect(),
    };
    parts.resize_with(threads, Default::default);
    parts.into_iter()
}

/// A convolution's forward over `rows` images `x` (B, H, W, C) into `epilogue`, in chunks of
/// `images` images (`cols_per_image` floats of matrix each) on `threads` threads, whole chunks
/// to a thread: `compute(x, images, matrix, z)` writes a chunk's convolution before the
/// activation into `z`, given its own matrix buffer. Each output is its own sum, so the
/// chunks change no bit.
pub fn forward_by_chunks<T: Scalar>(
    shape: &Conv2d,
    (x, rows, epilogue): (&[T], usize, Epilogue<'_, T>),
    scratch: &mut ConvScratch<T>,
    (images, cols_per_image): (usize, usize),
    (activation, threads): (Activation, usize),
    compute: impl Fn(&[T], usize, &mut [T], &mut [T]) + Sync,
) {
    if rows == 0 {
        return;
    }
    let threads = threads.max(1);
    let pool = epilogue.pool();
    let per_thread = rows.div_ceil(images).div_ceil(threads) * images;
    let runs = rows.div_ceil(per_thread);
    let chunk = (images, cols_per_image);
    let buffers = scratch.chunks(shape, chunk, pool.as_ref(), (false, false), runs);
    let in_len = shape.in_len();
    let run = |((x, mut epilogue), b): ((&[T], Epilogue<T>), ChunkBuffers<T>)| {
        let count = x.len() / in_len;
        for first in (0..count).step_by(images) {
            let n = images.min(count - first);
            let x = &x[first * in_len..(first + n) * in_len];
            let cols = &mut *b.cols;
            epilogue.chunk(shape, activation, (first, n), &mut *b.z, |z| {
                compute(x, n, cols, z)
            });
        }
    };
    let runs = epilogue.into_runs(per_thread, shape, runs);
    let work = x[..rows * in_len]
        .chunks(per_thread * in_len)
        .zip(runs)
        .zip(buffers);
    if threads > 1 {
        work.collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        work.for_each(run);
    }
}

/// What [`backward_by_parts`] hands its `chunk` function for a chunk of images.
pub struct PartChunk<'a, T> {
    /// ∂L/∂z of the chunk, (images, H′, W′, O).
    pub dz: &'a [T],
    /// The chunk's input, (images, H, W, C).
    pub x: &'a [T],
    pub images: usize,
    /// Whether this is its part's first chunk: the part's gradients are to be set, not added
    /// onto.
    pub first_of_part: bool,
    /// The part's weight and bias gradients.
    pub dw: &'a mut [T],
    pub db: &'a mut [T],
    /// Scratch for the chunk's matrix and its gradient.
    pub cols: &'a mut [T],
    pub dcols: &'a mut [T],
    /// The chunk's input gradient, where one is asked for.
    pub dx: Option<&'a mut [T]>,
}

/// A convolution's backward over `rows` images, from `gradient` and the input `x` (B, H, W, C):
/// the batch cut into parts of [`IMAGES_PER_PART`] images, threads taking whole parts, each
/// part's chunks (of `images` images, `cols_per_image` floats of matrix each) handed to
/// `chunk` in order with the part's own gradients, and the parts then added in order into
/// `dw` and `db`: the same values on any number of threads. `dx` (B, H, W, C), when given, is
/// `chunk`'s to write.
#[allow(clippy::type_complexity)]
pub fn backward_by_parts<T: Scalar>(
    shape: &Conv2d,
    (gradient, x, rows, (dw, db), dx): (
        Gradient<'_, T>,
        &[T],
        usize,
        (&mut [T], &mut [T]),
        Option<&mut [T]>,
    ),
    scratch: &mut ConvScratch<T>,
    (images, cols_per_image): (usize, usize),
    (activation, threads): (Activation, usize),
    chunk: impl Fn(PartChunk<'_, T>) + Sync,
) {
    if rows == 0 {
        return;
    }
    let threads = threads.max(1);
    let in_len = shape.in_len();
    let (parts, len) = (rows.div_ceil(IMAGES_PER_PART), dw.len() + db.len());
    let mut partials = std::mem::take(&mut scratch.partials);
    if partials.len() < parts * len {
        partials.resize(parts * len, T::zero());
    }
    let per_thread = parts.div_ceil(threads) * IMAGES_PER_PART;
    let runs = rows.div_ceil(per_thread);
    let (pool, passes) = (gradient.pool(), (true, dx.is_some()));
    let sizes = (images, cols_per_image);
    let buffers = scratch.chunks(shape, sizes, pool.as_ref(), passes, runs);
    let mut dx = dx.map(|dx| dx[..rows * in_len].chunks_mut(per_thread * in_len));
    let runs = gradient.into_runs(per_thread, shape, runs);
    let work: Vec<_> = (runs.into_iter())
        .zip(x[..rows * in_len].chunks(per_thread * in_len))
        .zip(partials[..parts * len].chunks_mut(per_thread / IMAGES_PER_PART * len))
        .zip(buffers)
        .map(|(((gradient, x), partials), b)| {
            let dx = dx.as_mut().and_then(|dx| dx.next());
            (gradient, x, dx, partials, b)
        })
        .collect();
    let weights = dw.len();
    let run = |(mut gradient, x, mut dx, partials, b): BackwardShare<'_, T>| {
        let ChunkBuffers {
            cols, dcols, dz, g, ..
        } = b;
        let count = x.len() / in_len;
        for (part, partial) in partials.chunks_mut(len).enumerate() {
            let (pw, pb) = partial.split_at_mut(weights);
            let part_images = part * IMAGES_PER_PART..count.min((part + 1) * IMAGES_PER_PART);
            for first in part_images.clone().step_by(images) {
                let n = images.min(part_images.end - first);
                let range = first * in_len..(first + n) * in_len;
                chunk(PartChunk {
                    dz: gradient.chunk(shape, activation, (first, n), dz, g),
                    x: &x[range.clone()],
                    images: n,
                    first_of_part: first == part_images.start,
                    dw: pw,
                    db: pb,
                    cols,
                    dcols,
                    dx: dx.as_deref_mut().map(|dx| &mut dx[range]),
                });
            }
        }
    };
    if threads > 1 {
        work.into_par_iter().for_each(run);
    } else {
        work.into_iter().for_each(run);
    }
    add_parts_in_order(&partials[..parts * len], dw, db);
    scratch.partials = partials;
}

/// One thread's share of [`backward_by_parts`]: its gradient, input, input gradient, parts'
/// gradients and buffers.
type BackwardShare<'a, T> = (
    Gradient<'a, T>,
    &'a [T],
    Option<&'a mut [T]>,
    &'a mut [T],
    ChunkBuffers<'a, T>,
);

/// dw and db = the sum of `partials`' parts, each a weight gradient the length of `dw` then a
/// bias gradient the length of `db`, added in order.
fn add_parts_in_order<T: Scalar>(partials: &[T], dw: &mut [T], db: &mut [T]) {
    let len = dw.len() + db.len();
    for (i, partial) in partials.chunks_exact(len).enumerate() {
        let (pw, pb) = partial.split_at(dw.len());
        for (out, part) in [(&mut *dw, pw), (&mut *db, pb)] {
            if i == 0 {
                out.copy_from_slice(part);
            } else {
                out.iter_mut().zip(part).for_each(|(o, &p)| *o = *o + p);
            }
        }
    }
}
