//! Shapes: an image's (C, H, W), a convolution's and a pooling's, and a parameter tensor's.
//! Every backend plans its buffers and its kernels' uniforms from these.
//!
//! Layouts (row-major, batch first, as PyTorch's NCHW): a convolution's input (B, C, H, W),
//! output (B, O, H′, W′) with H′ = (H + 2p − K) / s + 1 (likewise W′), weights (O, C, K, K),
//! bias (O): `nn.Conv2d`'s layout, so a model file names them `conv{i}.weight` and
//! `conv{i}.bias` as PyTorch does.

/// The shape of one image: channels × height × width (a flat vector is N × 1 × 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a flat vector (N × 1 × 1), not an image.
    pub fn is_flat(&self) -> bool {
        self.height == 1 && self.width == 1
    }

    pub fn flat(len: usize) -> Self {
        ImageShape {
            channels: len,
            height: 1,
            width: 1,
        }
    }
}

/// One parameter tensor of a planned network: its name, where it starts in the flat vector,
/// and its dimensions (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub offset: usize,
    pub dims: Vec<usize>,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `fc1.weight[17, 402]`: the name of element `i` (row-major) of this tensor.
    pub fn element_name(&self, i: usize) -> String {
        let mut index = Vec::with_capacity(self.dims.len());
        let mut rest = i;
        for &d in self.dims.iter().rev() {
            index.push((rest % d).to_string());
            rest /= d;
        }
        index.reverse();
        format!("{}[{}]", self.name, index.join(", "))
    }
}

/// Largest kernel side wgtrain's convolutions take.
pub const MAX_KERNEL: usize = 7;

/// One convolution's shape: `channels` × `height` × `width` in, `filters` kernels of
/// `kernel` × `kernel`, `stride` 1 or 2, `padding` zeros on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub filters: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// Checks the shape; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_KERNEL).contains(&self.kernel) {
            return Err(format!(
                "kernel {} is not between 1 and {MAX_KERNEL}",
                self.kernel
            ));
        }
        if !matches!(self.stride, 1 | 2) {
            return Err(format!("stride {} is not 1 or 2", self.stride));
        }
        if self.padding >= self.kernel {
            return Err(format!(
                "padding {} is not below the kernel's {}",
                self.padding, self.kernel
            ));
        }
        if self.channels == 0 || self.filters == 0 {
            return Err("a convolution needs at least one input and one output channel".into());
        }
        let (h, w) = (
            self.height + 2 * self.padding,
            self.width + 2 * self.padding,
        );
        if h < self.kernel || w < self.kernel {
            return Err(format!(
                "a {k}×{k} kernel does not fit a {}×{} input padded by {}",
                self.height,
                self.width,
                self.padding,
                k = self.kernel
            ));
        }
        Ok(())
    }

    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Values of one image in: C·H·W.
    pub fn in_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Values of one image out: O·H′·W′.
    pub fn out_len(&self) -> usize {
        self.filters * self.out_height() * self.out_width()
    }

    /// Weights: O·C·K·K.
    pub fn weights_len(&self) -> usize {
        self.filters * self.window_len()
    }

    /// Values one window reads, and one filter's weights: C·K·K.
    pub fn window_len(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Output positions of `rows` images: B·H′·W′.
    pub fn positions(&self, rows: usize) -> usize {
        rows * self.out_height() * self.out_width()
    }
}

/// One max pooling's shape: `channels` planes of `height` × `width`, `window` × `window`
/// windows every `stride` pixels, no padding (a window that would run off the edge is not
/// taken, as PyTorch's `MaxPool2d` without `ceil_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub window: usize,
    pub stride: usize,
}

impl MaxPool2d {
    /// Checks the shape; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 || self.stride == 0 {
            return Err("a pooling window and stride are at least 1".into());
        }
        if self.height < self.window || self.width < self.window {
            return Err(format!(
                "a {w}×{w} window does not fit a {}×{} input",
                self.height,
                self.width,
                w = self.window
            ));
        }
        Ok(())
    }

    pub fn out_height(&self) -> usize {
        (self.height - self.window) / self.stride + 1
    }

    pub fn out_width(&self) -> usize {
        (self.width - self.window) / self.stride + 1
    }

    pub fn in_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn out_len(&self) -> usize {
        self.channels * self.out_height() * self.out_width()
    }
}
