//! Every WGSL file, loaded with `include_str!` here and nowhere else. Each kernel file is
//! compiled with `common.wgsl` (step uniform, activations) in front of it.

use super::tuning::Tuning;

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// (family name, source) of every kernel file.
pub const FAMILIES: &[(&str, &str)] = &[
    ("activation", include_str!("../../shaders/activation.wgsl")),
    ("batch", include_str!("../../shaders/batch.wgsl")),
    ("conv", include_str!("../../shaders/conv.wgsl")),
    ("dropout", include_str!("../../shaders/dropout.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("pool", include_str!("../../shaders/pool.wgsl")),
    (
        "softmax_xent",
        include_str!("../../shaders/softmax_xent.wgsl"),
    ),
    ("update", include_str!("../../shaders/update.wgsl")),
];

/// matmul.wgsl's declaration of its k step, which [`assembled`] sets to the adapter's
/// `Tuning::tile_k`.
pub const TILE_K_DECLARATION: &str = "const TILE_K: u32 = 16u;";
/// matmul.wgsl's declaration of its tile loop's form, which [`assembled`] sets to the
/// adapter's `Tuning::prefetch`.
pub const PREFETCH_DECLARATION: &str = "const PREFETCH: bool = false;";

/// The full source wgpu compiles for one family, in `tuning`'s arrangement: matmul's k step set
/// to `tuning.tile_k` (one of `Tuning::TILE_K_CHOICES`) and its tile loop pipelined when
/// `tuning.prefetch`.
pub fn assembled(family: &str, tuning: &Tuning) -> Option<String> {
    let Tuning {
        tile_k, prefetch, ..
    } = *tuning;
    let (name, src) = FAMILIES.iter().find(|(name, _)| *name == family)?;
    let src = if *name == "matmul" {
        // A missing declaration would make every choice silently the same: refuse instead.
        if !src.contains(TILE_K_DECLARATION) || !src.contains(PREFETCH_DECLARATION) {
            return None;
        }
        src.replace(
            TILE_K_DECLARATION,
            &format!("const TILE_K: u32 = {tile_k}u;"),
        )
        .replace(
            PREFETCH_DECLARATION,
            &format!("const PREFETCH: bool = {prefetch};"),
        )
    } else {
        src.to_string()
    };
    Some(format!("{COMMON}\n{src}"))
}
